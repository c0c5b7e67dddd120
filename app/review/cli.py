"""``octi review``: reviewer access to the call logs, as a click group for the root command."""

from __future__ import annotations

import sys

import click

from app.accounts.passwords import hash_password


# `-h` as well as `--help`, as the argparse command accepted.
@click.group(name="review", context_settings={"help_option_names": ["-h", "--help"]})
def review() -> None:
    """Reviewer access to the call logs."""


@review.command(name="hash-password", short_help="Print an argon2 hash for REVIEW_PASSWORD.")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the password from standard input.")
def hash_password_command(from_stdin: bool) -> None:
    """Print an argon2 hash of a password, to set as REVIEW_PASSWORD."""
    if from_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt="Again")
    if not password:
        raise click.ClickException("empty password")
    click.echo(hash_password(password))
    click.echo("Set it as REVIEW_PASSWORD (in a .env file as is; in docker-compose double each '$').", err=True)
