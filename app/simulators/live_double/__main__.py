"""`python -m app.simulators.live_double`: the same as `octi live-double`."""

from app.simulators.live_double.command import cli

cli()
