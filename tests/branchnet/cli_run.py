"""Running ``branchnet.cli.main`` in the test process without leaving its logging behind."""

from __future__ import annotations

from branchnet.cli import main
from tests.conftest import logging_kept


def run_cli(*argv: str) -> int:
    """``main(argv)``, then the logging configuration as it was."""
    with logging_kept():
        return main(list(argv))
