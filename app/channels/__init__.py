"""How callers reach the agent, behind one contract (`contract.py`): Twilio Media Streams today."""
