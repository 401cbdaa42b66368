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
from structlog._config import _CONFIG as _STRUCTLOG  # what structlog.configure() sets

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


class _Logger:
    """A named structlog logger that assembles its bound logger once per configuration.

    structlog's lazy proxy assembles a new bound logger on every call (a few microseconds,
    even for a call its level filters out), and its ``cache_logger_on_first_use`` would keep
    one assembled under an older configuration (before :func:`configure_logging`, or under a
    test's ``capture_logs``). This one keeps its logger while structlog's configuration
    holds the same level filter, logger factory and processor list, and assembles it anew
    when any of them is replaced (``capture_logs`` changes that list in place).
    """

    __slots__ = ("_bound", "_context", "_factory", "_processors", "_proxy", "_wrapper")

    def __init__(self, name: str) -> None:
        self._proxy: Any = structlog.get_logger(name)
        self._bound: Any = None
        self._wrapper: object = None
        self._factory: object = None
        self._processors: object = None
        self._context: object = None

    def _logger(self) -> Any:
        config = _STRUCTLOG
        bound = self._bound
        if (
            bound is None
            or self._wrapper is not config.default_wrapper_class
            or self._factory is not config.logger_factory
            or self._processors is not config.default_processors
            or self._context is not config.default_context_class
        ):
            self._wrapper, self._factory = config.default_wrapper_class, config.logger_factory
            self._processors = config.default_processors
            self._context = config.default_context_class
            bound = self._bound = self._proxy.bind()
        return bound

    # the usual calls spelt out: reaching them through __getattr__ costs most of the saving
    def debug(self, event: str, *args: Any, **values: Any) -> Any:
        return self._logger().debug(event, *args, **values)

    def info(self, event: str, *args: Any, **values: Any) -> Any:
        return self._logger().info(event, *args, **values)

    def warning(self, event: str, *args: Any, **values: Any) -> Any:
        return self._logger().warning(event, *args, **values)

    def error(self, event: str, *args: Any, **values: Any) -> Any:
        return self._logger().error(event, *args, **values)

    def exception(self, event: str, *args: Any, **values: Any) -> Any:
        return self._logger().exception(event, *args, **values)

    def critical(self, event: str, *args: Any, **values: Any) -> Any:
        return self._logger().critical(event, *args, **values)

    def __getattr__(self, name: str) -> Any:
        """Everything else a bound logger has (``bind``, ``log``, the async calls...)."""
        return getattr(self._logger(), name)


def get_logger(name: str) -> Any:
    """A structlog logger bound to ``name`` (see :class:`_Logger`)."""
    return _Logger(name)
