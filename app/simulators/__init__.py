"""Protocol-faithful doubles of Twilio and OpenAI Realtime, shipped as features."""
