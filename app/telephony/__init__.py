"""Twilio: webhooks, signatures, TwiML and the Media Streams wire protocol."""
