"""Speech-to-speech services behind one contract (`contract.py`): the OpenAI Realtime API today."""
