"""A local impersonator of Twilio's REST API (`TwilioRestDouble`), linked to the simulated caller.

The product's REST client (`app.channels.twilio.rest`, with `TWILIO_API_BASE` set to the
double's `url`) talks to it as to Twilio. Calls placed with
`place_call(..., rest_api=double)` belong to its account: a call update hangs them up or
replaces their TwiML (the media stream gets `stop` and closes, then the new TwiML runs, <Dial>
included, see `twilio_caller/legs.py`); calls.create places a call to the server through the
same simulated caller, answered by the double's `callee`; messages.create keeps the SMS.
`resources` has the JSON shapes and Twilio's error codes.
"""

from app.simulators.twilio_rest.server import Callee, CreatedCall, TwilioRestDouble

__all__ = ["Callee", "CreatedCall", "TwilioRestDouble"]
