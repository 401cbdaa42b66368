"""Structured logs: structlog, JSON lines, with secrets removed before anything is written.

Any event key that names secret material (PINs, PIN blocks, keys) is replaced, and card
numbers, identity numbers and customer names are masked (common.masking), whatever the
caller passed. A logged exception is written as its types and where they were raised, never
its text: a message (a validation error's, a library's) may quote a record verbatim.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from common.masking import mask_value

_SECRET_KEYS = re.compile(r"(^|_)(pin|pin_block|new_pin|key|bdk|pvk|lmk|secret|password)(_|$)")
REDACTED = "[redacted]"


def redact(
    _logger: object, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: drop secret-named values, mask personal data (cards, IDs, names)."""
    for key, value in list(event.items()):
        if _SECRET_KEYS.search(key) and key not in ("pin_mode", "key_version", "key_epoch"):
            event[key] = REDACTED
        elif isinstance(value, str | Mapping | list | tuple):
            event[key] = mask_value(key, value)
    return event


def exception_outline(error: BaseException, depth: int = 6) -> str:
    """``error`` and its causes as types and the places they were raised, without messages."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = traceback.extract_tb(current.__traceback__)[-depth:]
        where = " < ".join(
            f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}" for f in reversed(frames)
        )
        parts.append(f"{type(current).__name__} at {where or 'unknown'}")
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)


def outline_exception(
    _logger: object, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: ``exc_info`` becomes ``exception``, an :func:`exception_outline`."""
    exc_info = event.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    error = exc_info if isinstance(exc_info, BaseException) else None
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        error = exc_info[1]
    if error is not None:
        event["exception"] = exception_outline(error)
    return event


def configure_logging(level: str = "warning", *, json: bool = True) -> None:
    """Send structlog and stdlib logging to stderr as one JSON object per line."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.WARNING)
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        outline_exception,  # before redact, which would take an exc_info tuple apart
        redact,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared[1:]],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)


def get_logger(name: str) -> Any:
    """A structlog logger bound to ``name``."""
    return structlog.get_logger(name)
