"""`octi call-out +33…`: OCTI calls a farmer back, from the command line.

The call goes through Twilio's REST API as the review's « Rappeler » does; Twilio then
requests the running service's outbound webhook (PUBLIC_BASE_URL), which takes the call.
"""

from __future__ import annotations

import click

from app.channels.twilio.callback import CallBackRefused, CallBacks
from app.channels.twilio.rest import TwilioRest
from app.cli_support import HELP_OPTIONS, run_coroutine
from app.config import get_settings
from app.logs import mask_phone


async def _call_out(number: str, question: str) -> str:
    settings = get_settings()
    rest = TwilioRest(settings)
    try:
        return await CallBacks(settings, rest).place(number, question)
    finally:
        await rest.close()


@click.command(name="call-out", context_settings=HELP_OPTIONS)
@click.argument("number")
@click.option("--question", default="", help="What OCTI calls about; it greets the farmer with it.")
def cli(number: str, question: str) -> None:
    """Call NUMBER (E.164, e.g. +33612345678) back; OCTI takes the call when someone answers."""
    try:
        call_sid = run_coroutine(_call_out(number, question))
    except CallBackRefused as refused:
        raise click.ClickException(f"{refused.message} ({refused.code})") from None
    click.echo(f"call-back {call_sid} placed to {mask_phone(number)}")
