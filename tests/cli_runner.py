"""`octi …` run in the test process through the real command group, its output captured."""

from __future__ import annotations

from click.testing import CliRunner, Result

from app.cli import octi


def run_octi(*arguments: str, input: str | None = None) -> Result:
    """Exit code, stdout and stderr of `octi ARGUMENTS…` (given `input` on stdin); an unexpected
    exception propagates."""
    return CliRunner().invoke(octi, list(arguments), input=input, prog_name="octi", catch_exceptions=False)
