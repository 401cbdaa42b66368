"""Logged exceptions: their types and places, never their text (which may quote a record)."""

from __future__ import annotations

import json
import logging

import pytest

from common.logs import configure_logging, get_logger

PIN_BLOCK = "0412AC5FFFFFFFFF"


def _raise_chained() -> None:
    try:
        raise KeyError(f"record {PIN_BLOCK}")
    except KeyError as error:
        raise ValueError(f"pin_block={PIN_BLOCK} is not valid") from error


@pytest.mark.usefixtures("logging_restored")
def test_an_exception_is_logged_as_types_and_places_without_its_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info")
    try:
        _raise_chained()
    except ValueError:
        get_logger("branchnet.test").exception("handler failed")
        logging.getLogger("aiormq.test").exception("library handler failed")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == ["handler failed", "library handler failed"]
    for line in lines:
        assert PIN_BLOCK not in json.dumps(line)
        outline = line["exception"]
        assert outline.startswith("ValueError at test_logs.py:")
        assert "in _raise_chained" in outline and "<- KeyError at test_logs.py:" in outline
