"""What the `octi` sub-commands share: running a coroutine, reading an argument, help and groups.

It imports none of the sub-commands, so each of them can import it while `app.cli` imports
them in turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

INTERRUPTED_EXIT_CODE = 130  # what shells report for a process stopped by SIGINT (128 + 2)

# `-h` as well as `--help`, as the argparse commands accepted; sub-commands inherit it from the root.
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}

Result = TypeVar("Result")


def run_coroutine(coroutine: Coroutine[Any, Any, Result]) -> Result:
    """Run a sub-command's coroutine in its own event loop and return its result.

    Ctrl-C ends the command with exit code 130 and "interrupted" on stderr, without a traceback.
    """
    try:
        return asyncio.run(coroutine)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        raise click.exceptions.Exit(INTERRUPTED_EXIT_CODE) from None


class OrderedGroup(click.Group):
    """A group that lists its commands in the order they were added, not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


class ParsedBy(click.ParamType):
    """An argument read by a parsing function; its ValueError, or an OverflowError of date or
    number arithmetic on a huge value, is a usage error (exit code 2)."""

    def __init__(self, parse: Callable[[str], Any], name: str) -> None:
        self.parse = parse
        self.name = name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):  # a default, or a value parsed already
            return value
        try:
            return self.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        except OverflowError:
            self.fail(f"out of range: {value!r}", param, ctx)
