"""Wire contracts and shared mechanisms: models, money, ids, frames, the bus, topology."""

from __future__ import annotations

from common.bus import Bus, Delivery, Handler, Message, QueueStats, Subscription
from common.embedded_bus import EmbeddedBroker, EmbeddedBus
from common.errors import (
    BranchnetError,
    BusClosedError,
    BusError,
    ConfigError,
    FrameError,
    UnroutableError,
)
from common.frames import Frame, FrameHeader, FrameKind, build_frame, decode_frame, encode_frame
from common.replies import Reply, decode_reply, encode_reply
from common.requests import (
    KINDS,
    PIN_KINDS,
    EncryptedPin,
    IdDocument,
    RecordError,
    Request,
    RequestBase,
    decode_request,
    encode_request,
)
from common.results import ResultCode
from common.settings import Settings, load_settings

__all__ = [
    "KINDS",
    "PIN_KINDS",
    "BranchnetError",
    "Bus",
    "BusClosedError",
    "BusError",
    "ConfigError",
    "Delivery",
    "EmbeddedBroker",
    "EmbeddedBus",
    "EncryptedPin",
    "Frame",
    "FrameError",
    "FrameHeader",
    "FrameKind",
    "Handler",
    "IdDocument",
    "Message",
    "QueueStats",
    "RecordError",
    "Reply",
    "Request",
    "RequestBase",
    "ResultCode",
    "Settings",
    "Subscription",
    "UnroutableError",
    "build_frame",
    "decode_frame",
    "decode_reply",
    "decode_request",
    "encode_frame",
    "encode_reply",
    "encode_request",
    "load_settings",
]
