"""`python -m app.simulators.twilio_caller`: the same as `octi call`."""

from app.simulators.twilio_caller.command import cli

cli()
