"""Running ``branchnet.cli.main`` in the test process without leaving its logging behind."""

from __future__ import annotations

import logging

import structlog

from branchnet.cli import main


def run_cli(*argv: str) -> int:
    """``main(argv)``, then the logging configuration as it was (main reconfigures it onto
    the current stderr, which pytest closes after the test)."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return main(list(argv))
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)
