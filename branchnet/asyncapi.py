"""The AsyncAPI 3 document of branchnet's bus, generated from the topology and the models.

Channels come from :mod:`common.topology` (every exchange, queue and event key) and message
payloads from the pydantic models, so the document cannot drift from the code: a test checks
that it names every queue, exchange and event type the topology and the schema define.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

import branchnet
from common.events import EVENT_MODELS, EventType, StatsSummary
from common.frames import FrameHeader
from common.pin_commands import PinCommand, PinResponse
from common.replies import Reply
from common.requests import Request
from common.topology import (
    CORE,
    DEAD_EXCHANGE,
    EVENTS_EXCHANGE,
    REPLIES_EXCHANGE,
    REQUESTS_EXCHANGE,
    ExchangeSpec,
    QueueSpec,
    branch_key,
    branch_reply_queue,
    branch_topology,
    event_key,
    stats_key,
)

REF = "#/components/schemas/{model}"
FRAME_CONTENT_TYPE = "application/x-branchnet-frame"
_BRANCH = "{branchId}"
_BRANCH_PARAMETER = {"description": "A branch id: four digits, e.g. 0001."}
_EVENT_BRANCH_PARAMETER = {
    "description": "A branch id (four digits), or `network` for events about the network."
}

#: Which records each point-to-point channel carries, in frames.
_FRAME_RECORDS: dict[str, tuple[str, str]] = {
    "host.requests": ("requestFrame", "Request frames from every registered branch."),
    "crypto.commands": ("pinCommandFrame", "PIN commands from the host to the crypto node."),
    "host.crypto-replies": ("pinResponseFrame", "The crypto node's answers to the host."),
    "dr.replication": ("journalFrame", "Journal entries from the primary to the standby."),
    "dr.acks": ("ackFrame", "Applied positions from the standby to the primary."),
    "bn.dead": ("deadLetter", "Rejected or undeliverable messages, reason in a header."),
}


def _camel(name: str) -> str:
    for mark in ".-_{}":
        name = name.replace(mark, " ")
    words = name.split()
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])


class _Schemas:
    """Collects JSON schemas of models into ``components.schemas``."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, name: str, model: Any) -> dict[str, str]:
        schema = TypeAdapter(model).json_schema(ref_template=REF, mode="serialization")
        self.schemas.update(schema.pop("$defs", {}))
        self.schemas[name] = schema
        return {"$ref": REF.format(model=name)}


def _queue_binding(queue: QueueSpec) -> dict[str, Any]:
    return {
        "amqp": {
            "is": "queue",
            "queue": {"name": queue.name, "durable": queue.durable or queue.quorum},
            "bindingVersion": "0.3.0",
        }
    }


def _exchange_binding(exchange: ExchangeSpec) -> dict[str, Any]:
    return {
        "amqp": {
            "is": "routingKey",
            "exchange": {"name": exchange.name, "type": exchange.type, "durable": exchange.durable},
            "bindingVersion": "0.3.0",
        }
    }


def asyncapi_document() -> dict[str, Any]:
    """The whole document as a JSON-ready dict."""
    schemas = _Schemas()
    frame_header = schemas.ref("FrameHeader", FrameHeader)
    records = {
        "requestFrame": ("Request", Request),
        "replyFrame": ("Reply", Reply),
        "pinCommandFrame": ("PinCommand", PinCommand),
        "pinResponseFrame": ("PinResponse", PinResponse),
    }
    messages: dict[str, Any] = {}
    for message_name, (schema_name, model) in records.items():
        messages[message_name] = _frame_message(
            message_name, frame_header, schemas.ref(schema_name, model)
        )
    for message_name in ("journalFrame", "ackFrame"):
        messages[message_name] = _frame_message(message_name, frame_header, None)
    messages["deadLetter"] = {
        "name": "deadLetter",
        "title": "A dead-lettered message",
        "contentType": "application/octet-stream",
        "headers": {
            "type": "object",
            "properties": {
                "x-branchnet-reason": {"type": "string"},
                "x-branchnet-origin": {"type": "string"},
            },
        },
        "payload": {"type": "string", "description": "The original body, unchanged."},
    }
    for event_type, model in EVENT_MODELS.items():
        messages[_event_message(event_type)] = {
            "name": event_type.value,
            "title": (model.__doc__ or event_type.value).strip().splitlines()[0],
            "contentType": "application/json",
            "payload": {
                "type": "array",
                "minItems": 1,
                "description": (
                    f"One or more {event_type.value} events, all with this message's routing "
                    "key (the host sends one message per key per batch of answers)."
                ),
                "items": schemas.ref(model.__name__, model),
            },
        }
    messages["stats"] = {
        "name": "stats",
        "title": "A node's once-a-second summary",
        "contentType": "application/json",
        "payload": schemas.ref("StatsSummary", StatsSummary),
    }

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    exchanges = {e.name: e for e in CORE.exchanges}
    for exchange_name, message_name, summary in (
        (REQUESTS_EXCHANGE, "requestFrame", "A branch's request frames, keyed by branch."),
        (REPLIES_EXCHANGE, "replyFrame", "The host's reply frames, keyed by branch."),
    ):
        channel = _camel(exchange_name)
        channels[channel] = {
            "address": branch_key(_BRANCH),
            "title": exchange_name,
            "description": summary,
            "parameters": {"branchId": _BRANCH_PARAMETER},
            "messages": {message_name: {"$ref": f"#/components/messages/{message_name}"}},
            "bindings": _exchange_binding(exchanges[exchange_name]),
        }
    channels["bnDeadExchange"] = {
        "address": None,
        "title": DEAD_EXCHANGE,
        "description": "Where rejected and undeliverable messages go (fanout to bn.dead).",
        "messages": {"deadLetter": {"$ref": "#/components/messages/deadLetter"}},
        "bindings": _exchange_binding(exchanges[DEAD_EXCHANGE]),
    }
    reply_queue = branch_topology(_BRANCH).queues[0]
    for queue in (*CORE.queues, reply_queue):
        message_name, summary = _FRAME_RECORDS.get(
            queue.name, ("replyFrame", "One branch's replies, bound to its key on bn.replies.")
        )
        channel = _camel(queue.name)
        channels[channel] = {
            "address": queue.name,
            "title": queue.name,
            "description": summary,
            "messages": {message_name: {"$ref": f"#/components/messages/{message_name}"}},
            "bindings": _queue_binding(queue),
        }
        if queue.name == branch_reply_queue(_BRANCH):
            channels[channel]["parameters"] = {"branchId": _BRANCH_PARAMETER}
    events_exchange = ExchangeSpec(EVENTS_EXCHANGE, "topic")
    for event_type in EventType:
        message_name = _event_message(event_type)
        channel = f"events{message_name[0].upper()}{message_name[1:]}"
        channels[channel] = {
            "address": event_key("{branch}", event_type.value),
            "title": f"{event_type.value} events",
            "description": (
                f"MQTT: bank/events/{{branch}}/{event_type.value} "
                f"(subscribe to bank/events/+/+ for every event)."
            ),
            "parameters": {"branch": _EVENT_BRANCH_PARAMETER},
            "messages": {message_name: {"$ref": f"#/components/messages/{message_name}"}},
            "bindings": _exchange_binding(events_exchange),
        }
        operations[f"publish{channel[0].upper()}{channel[1:]}"] = _operation(
            "send", channel, message_name, f"The host publishes {event_type.value} events."
        )
    channels["stats"] = {
        "address": stats_key("{node}"),
        "title": "node stats",
        "description": "MQTT: bank/stats/{node}; one summary a second per node.",
        "parameters": {"node": {"description": "The node's name, e.g. host."}},
        "messages": {"stats": {"$ref": "#/components/messages/stats"}},
        "bindings": _exchange_binding(events_exchange),
    }
    operations["publishStats"] = _operation("send", "stats", "stats", "Each node's summary.")
    for channel_name, channel in channels.items():
        if channel_name.startswith("events") or channel_name == "stats":
            continue
        (message_name,) = channel["messages"]
        operations[f"receive{channel_name[0].upper()}{channel_name[1:]}"] = _operation(
            "receive", channel_name, message_name, channel["description"]
        )
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "branchnet",
            "version": branchnet.__version__,
            "description": (
                "The message bus of a simulated centralised banking network: branches, the "
                "host, the crypto node (HSM), the disaster-recovery standby, and ops events. "
                "Frames are a JSON header line followed by one JSON record per line."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {"host": "localhost:5672", "protocol": "amqp", "protocolVersion": "0.9.1"},
            "mqtt": {
                "host": "localhost:1883",
                "protocol": "mqtt",
                "description": "RabbitMQ's MQTT plugin: amq.topic keys with / for .",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas.schemas},
    }


def _event_message(event_type: EventType) -> str:
    return _camel(event_type.value)


def _frame_message(
    name: str, header: dict[str, str], record: dict[str, str] | None
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": "object",
        "description": "The frame header (first line); each further line is one record.",
        "properties": {"header": header},
    }
    if record is not None:
        payload["properties"]["records"] = {"type": "array", "items": record}
    return {"name": name, "contentType": FRAME_CONTENT_TYPE, "payload": payload}


def _operation(action: str, channel: str, message: str, summary: str) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
    }
