"""Logged exceptions: their types and places, never their text (which may quote a record)."""

from __future__ import annotations

import json
import logging

import pytest
import structlog
from structlog.testing import capture_logs

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


@pytest.mark.usefixtures("logging_restored")
def test_a_logger_is_assembled_once_per_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    made: list[object] = []

    def factory(*_args: object) -> structlog.PrintLogger:
        made.append(_args)
        return structlog.PrintLogger()

    log = get_logger("branchnet.test")
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=factory,
    )
    for n in range(3):
        log.info("counted", n=n)
    log.debug("filtered")
    assert len(made) == 1
    assert [json.loads(line)["n"] for line in capsys.readouterr().out.splitlines()] == [0, 1, 2]


@pytest.mark.usefixtures("logging_restored")
def test_a_logger_follows_a_later_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    log = get_logger("branchnet.test")
    configure_logging("warning")
    log.info("not shown")
    log.warning("shown at warning")
    with capture_logs() as captured:
        log.warning("captured", pin_block=PIN_BLOCK)
    configure_logging("info")
    log.info("shown at info")
    events = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    assert events == ["shown at warning", "shown at info"]
    assert [entry["event"] for entry in captured] == ["captured"]
