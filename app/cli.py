"""The `octi` command: serve the phone line, and try it without a phone.

Each sub-command is a click command defined beside the code it drives; this group only
registers it, by import path, and imports it when it runs. `octi --help` therefore loads
none of the service's dependencies (uvicorn, numpy, the knowledge stack, the doctor's).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import click

from app.cli_support import HELP_OPTIONS


@dataclass(frozen=True)
class Subcommand:
    location: str  # "module:attribute" of the click command
    summary: str  # its line in `octi --help`, shown without importing the module


SUBCOMMANDS = {
    "serve": Subcommand("app.serve:cli", "run the phone agent (TwiML webhook + media stream)"),
    "call": Subcommand("app.simulators.twilio_caller:cli", "place a simulated Twilio call against a running server"),
    "call-out": Subcommand("app.channels.twilio.call_out:cli", "call a farmer back: OCTI takes the call"),
    "realtime-double": Subcommand("app.simulators.realtime_double:cli", "run a local OpenAI Realtime GA double"),
    "live-double": Subcommand("app.simulators.live_double:cli", "run a local OpenAI GPT-Live double"),
    "kb": Subcommand("app.knowledge.cli:cli", "the knowledge base: ingest, search, stats, eval"),
    "calls": Subcommand("app.calllog.cli:cli", "the call log: list, show, export, purge"),
    "review": Subcommand("app.review.cli:review", "reviewer access: hash-password for REVIEW_PASSWORD"),
    "web": Subcommand("app.accounts.cli:web", "browser users and their access tokens"),
    "doctor": Subcommand("app.doctor:cli",
                         "check the set-up: keys, models, URLs, database, knowledge base, realtime, ngrok"),
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported only when one of them is run or asked for help."""

    def __init__(self, *args: Any, subcommands: dict[str, Subcommand], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subcommands = subcommands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.subcommands)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        subcommand = self.subcommands.get(cmd_name)
        if subcommand is None:
            return None
        module, _, attribute = subcommand.location.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, subcommand.summary) for name, subcommand in self.subcommands.items()])


@click.group(cls=LazyGroup, subcommands=SUBCOMMANDS, context_settings=HELP_OPTIONS)
def octi() -> None:
    """OCTI phone line: serve the phone agent, and try it without a phone."""


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `octi` script and of `python -m app`; exits with the command's code."""
    octi.main(args=argv, prog_name="octi")
