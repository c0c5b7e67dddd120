"""`python -m app.simulators.realtime_double`: the same as `octi realtime-double`."""

from app.simulators.realtime_double.command import cli

cli()
