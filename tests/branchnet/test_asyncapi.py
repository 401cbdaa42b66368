"""The AsyncAPI document agrees with the topology and the event models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from branchnet.asyncapi import asyncapi_document
from branchnet.cli import _parser
from common.events import EventType
from common.settings import load_settings
from common.topology import (
    CORE,
    EVENTS_EXCHANGE,
    branch_reply_queue,
    branch_topology,
    event_key,
    host_topology,
    stats_key,
)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_every_queue_exchange_and_event_of_the_topology_has_a_channel() -> None:
    document = asyncapi_document()
    assert document["asyncapi"] == "3.0.0"
    channels = document["channels"]
    by_address = {c["address"]: c for c in channels.values() if c["address"] is not None}
    template = branch_topology("{branchId}")
    for queue in (*CORE.queues, *template.queues):
        binding = by_address[queue.name]["bindings"]["amqp"]
        assert binding["is"] == "queue" and binding["queue"]["name"] == queue.name
    assert branch_reply_queue("{branchId}") in by_address
    exchanges = {
        c["bindings"]["amqp"]["exchange"]["name"]: c["bindings"]["amqp"]["exchange"]["type"]
        for c in channels.values()
        if c["bindings"]["amqp"]["is"] == "routingKey"
    }
    assert exchanges == {e.name: e.type for e in CORE.exchanges} | {EVENTS_EXCHANGE: "topic"}
    # every binding the nodes declare routes along a documented address
    for binding in (*host_topology(["{branchId}"]).bindings, *template.bindings):
        assert binding.routing_key in by_address
    for event_type in EventType:
        channel = by_address[event_key("{branch}", event_type.value)]
        assert f"bank/events/{{branch}}/{event_type.value}" in channel["description"]
        (message,) = channel["messages"].values()
        # a message carries an array of events of its key (the host batches them)
        payload = _resolve(document, message["$ref"])["payload"]
        assert payload["type"] == "array" and payload["minItems"] == 1
        element = _resolve(document, payload["items"]["$ref"])
        assert element["properties"]["type"]["const"] == event_type.value
        assert {"node", "at"} <= set(element["required"])
    assert stats_key("{node}") in by_address


def test_every_reference_resolves_and_every_channel_has_an_operation() -> None:
    document = asyncapi_document()
    for ref in _refs(document):
        _resolve(document, ref)
    operated = {op["channel"]["$ref"].rsplit("/", 1)[1] for op in document["operations"].values()}
    assert operated == set(document["channels"])


def test_the_command_writes_the_document(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.json"
    # the command's own function: main() would reconfigure logging for the whole session
    args = _parser().parse_args(["asyncapi", "--out", str(out)])
    assert args.run(args, load_settings()) == 0
    assert json.loads(out.read_text()) == json.loads(json.dumps(asyncapi_document()))
