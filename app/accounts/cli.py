"""``octi web``: browser users (in the call log's database) and their access tokens."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from app.accounts.tokens import AccessTokens
from app.accounts.users import UserError, WebUsers
from app.cli_support import HELP_OPTIONS
from app.config import Settings

T = TypeVar("T")


def _with_users(action: Callable[[WebUsers], Awaitable[T]]) -> T:
    async def run() -> T:
        users = WebUsers(Settings().effective_database_url)
        try:
            return await action(users)
        except UserError as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            await users.close()
    return asyncio.run(run())


def _password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt="Again")


@click.group(name="web", context_settings=HELP_OPTIONS)
def web() -> None:
    """Who may talk to OCTI from a browser (/ws/realtime, the softphone)."""


@web.command(name="add-user")
@click.argument("username")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the password from standard input.")
def add_user(username: str, from_stdin: bool) -> None:
    """Create a browser user (the password is asked for, or read from standard input)."""
    password = _password(from_stdin)
    user = _with_users(lambda users: users.add(username, password))
    click.echo(f"user {user.username} created")


@web.command(name="users")
def list_users() -> None:
    """List the browser users."""
    for user in _with_users(lambda users: users.list()):
        state = "disabled" if user.disabled else "active"
        click.echo(f"{user.username}\t{state}\t{user.created_at:%Y-%m-%d %H:%M} UTC")


@web.command(name="disable-user")
@click.argument("username")
@click.option("--enable", is_flag=True, help="Enable the user again instead.")
def disable_user(username: str, enable: bool) -> None:
    """Disable a browser user: their tokens stop working at once."""
    if not _with_users(lambda users: users.set_disabled(username, not enable)):
        raise click.ClickException(f"no user {username!r}")
    click.echo(f"user {username} {'enabled' if enable else 'disabled'}")


@web.command(name="token")
@click.argument("username")
def token(username: str) -> None:
    """Print an access token for a user (for scripts and tests; pages sign in instead)."""
    if not _with_users(lambda users: users.active(username)):
        raise click.ClickException(f"no active user {username!r}")
    settings = Settings()
    click.echo(AccessTokens.from_settings(settings).issue(username.strip().lower()))
