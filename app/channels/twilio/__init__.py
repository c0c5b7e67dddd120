"""Twilio: webhooks, signatures, TwiML, the Media Streams wire protocol and the channel."""
