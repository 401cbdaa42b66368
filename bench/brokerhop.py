"""Latency of one hop through RabbitMQ: publish→confirm and publish→deliver, and its CPU.

A producer (this process) publishes with :class:`~common.amqp_bus.AmqpBus` to two queues
shaped like the design's: a quorum queue with persistent messages (as ``host.requests`` and
``dr.replication``) and a classic queue with transient messages (as ``crypto.commands``). A
consumer in another process (``--consume``, started here) takes them with the same bus and
acks each. Per queue there are two paced phases: one message every ``--interval-ms`` (each
in its own ``publish`` call, started on time whether or not the previous one is confirmed),
then bursts of ``--burst`` messages in one call every ``--interval-ms * --burst``. Each
message carries its publish time (``CLOCK_MONOTONIC``, shared by the processes).

Prints one JSON object per phase: ``confirm_ms`` (one ``publish`` call, start to return)
and ``deliver_ms`` (publish start to the consumer's handler) as p50/p90/p99/max, and CPU µs
per message of the broker (every thread of its VM, from ``/proc``), the producer and the
consumer. Without ``--url`` a private node is started here and stopped after. Run::

    .venv/bin/python bench/brokerhop.py [--count 2000] [--interval-ms 5] [--burst 16]
    .venv/bin/python bench/brokerhop.py --url amqp://... --broker-pid PID

Nothing here asserts a time; the figures are for before/after comparisons on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.amqp_bus import AmqpBus
from common.bus import Delivery, Message
from common.topology import DEFAULT_EXCHANGE, QueueSpec, Topology

QUORUM = "bench.hop.quorum"
TRANSIENT = "bench.hop.transient"
QUEUES = (
    QueueSpec(QUORUM, quorum=True, single_active_consumer=True),
    QueueSpec(TRANSIENT, max_length=100_000),
)
#: Body: run token (8 bytes), phase (1 byte: 0xFF ends a phase), publish time (ns); padding.
HEAD = struct.Struct("!8sBq")
BODY_SIZE = 300
END = 0xFF
PREFETCH = 64


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max of ``samples`` (nearest rank), rounded to 0.01."""
    ordered = sorted(samples)
    if not ordered:
        return {}
    last = len(ordered) - 1
    ranks = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "max": 1.0}
    return {name: round(ordered[round(q * last)], 2) for name, q in ranks.items()}


def process_cpu_s(pid: int) -> float:
    """CPU seconds run so far by every thread of ``pid`` (``schedstat``: ns, not ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended between the listing and the read
    return total / 1e9


# -- the consumer process --------------------------------------------------------------------


async def consume(url: str, token: bytes) -> None:
    """Take both queues; at a phase's end marker print its latencies (ms) as one JSON line."""
    bus = AmqpBus(url, name="brokerhop-consumer")
    await bus.connect()
    seen: dict[int, list[float]] = {}
    ends = 0
    finished = asyncio.Event()

    async def take(delivery: Delivery) -> None:
        nonlocal ends
        now = time.monotonic_ns()
        run, phase, sent = HEAD.unpack_from(delivery.body)
        await delivery.ack()
        if run != token:
            return  # left over from an earlier run against the same node
        if phase != END:
            seen.setdefault(phase, []).append((now - sent) / 1e6)
            return
        report = {"latencies_ms": seen.copy(), "cpu_s": time.process_time()}
        seen.clear()
        print(json.dumps(report), flush=True)
        ends += 1
        if ends == sent:  # the last end marker carries how many there are
            finished.set()

    subscriptions = [await bus.consume(q.name, take, prefetch=PREFETCH) for q in QUEUES]
    print(json.dumps({"cpu_s": time.process_time()}), flush=True)  # ready
    await finished.wait()
    for subscription in subscriptions:
        await subscription.cancel()
    await bus.close()


# -- the producer --------------------------------------------------------------------------


def _message(queue: str, token: bytes, phase: int, stamp: int) -> Message:
    body = HEAD.pack(token, phase, stamp).ljust(BODY_SIZE, b"\0")
    return Message(DEFAULT_EXCHANGE, queue, body, transient=queue == TRANSIENT)


async def _paced(
    bus: AmqpBus, queue: str, token: bytes, phase: int, *, count: int, per_call: int, gap_s: float
) -> list[float]:
    """Publish ``count`` messages, ``per_call`` per call, a call every ``gap_s`` on a fixed
    schedule; returns each call's confirm time (ms)."""
    confirms: list[float] = []

    async def one_call() -> None:
        started = time.monotonic_ns()
        await bus.publish([_message(queue, token, phase, started)] * per_call)
        confirms.append((time.monotonic_ns() - started) / 1e6)

    calls: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    for n in range(count // per_call):
        delay = start + n * gap_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one_call())
        calls.add(task)
        task.add_done_callback(calls.discard)
    await asyncio.gather(*calls)
    return confirms


async def _read_json(stream: asyncio.StreamReader) -> dict[str, Any]:
    line = await stream.readline()
    if not line:
        raise RuntimeError("the consumer process ended early")
    report: dict[str, Any] = json.loads(line)
    return report


async def measure(
    url: str, broker_pid: int | None, *, count: int, interval_ms: float, burst: int
) -> list[dict[str, Any]]:
    """Run the four phases against the node at ``url``; one result per phase."""
    token = secrets.token_bytes(8)
    bus = AmqpBus(url, name="brokerhop-producer")
    await bus.connect()
    consumer = await asyncio.create_subprocess_exec(
        *(sys.executable, __file__, "--consume", "--url", url, "--token", token.hex()),
        stdout=asyncio.subprocess.PIPE,
    )
    assert consumer.stdout is not None
    results: list[dict[str, Any]] = []
    try:
        await bus.declare(Topology(queues=QUEUES))
        consumer_cpu = (await _read_json(consumer.stdout))["cpu_s"]  # ready
        phases = [(q.name, per_call) for q in QUEUES for per_call in (1, burst)]
        for phase, (queue, per_call) in enumerate(phases):
            broker_before = process_cpu_s(broker_pid) if broker_pid else 0.0
            producer_before, wall_before = time.process_time(), time.monotonic()
            confirms = await _paced(
                bus,
                queue,
                token,
                phase,
                count=count,
                per_call=per_call,
                gap_s=interval_ms * per_call / 1000,
            )
            marker_count = len(phases) if phase == len(phases) - 1 else 0
            await bus.publish([_message(queue, token, END, marker_count)])
            report = await _read_json(consumer.stdout)
            sent = len(confirms) * per_call
            delivered = report["latencies_ms"].get(str(phase), [])
            result: dict[str, Any] = {
                "queue": queue,
                "per_call": per_call,
                "messages": sent,
                "delivered": len(delivered),
                "confirm_ms": percentiles(confirms),
                "deliver_ms": percentiles(delivered),
                "producer_cpu_us_per_msg": round(
                    (time.process_time() - producer_before) / sent * 1e6, 1
                ),
                "consumer_cpu_us_per_msg": round((report["cpu_s"] - consumer_cpu) / sent * 1e6, 1),
            }
            consumer_cpu = report["cpu_s"]
            if broker_pid:
                spent = process_cpu_s(broker_pid) - broker_before
                result["broker_cpu_us_per_msg"] = round(spent / sent * 1e6, 1)
                result["broker_cpu_share"] = round(spent / (time.monotonic() - wall_before), 3)
            results.append(result)
        await consumer.wait()
    finally:
        if consumer.returncode is None:
            consumer.kill()
            await consumer.wait()
        await bus.close()
    return results


async def _on_private_node(args: argparse.Namespace) -> list[dict[str, Any]]:
    from branchnet.broker import private_broker

    with private_broker("branchnet-bench-brokerhop-") as node:
        return await _measure_args(node.amqp_url, int(node.pid_file.read_text().strip()), args)


async def _measure_args(
    url: str, broker_pid: int | None, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """:func:`measure` as the command line asks."""
    return await measure(
        url, broker_pid, count=args.count, interval_ms=args.interval_ms, burst=args.burst
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running node (default: start a private one)")
    parser.add_argument("--broker-pid", type=int, help="the --url node's VM, for its CPU")
    parser.add_argument("--count", type=int, default=2000, help="messages per phase")
    parser.add_argument("--interval-ms", type=float, default=5.0)
    parser.add_argument("--burst", type=int, default=16)
    parser.add_argument("--consume", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume:
        asyncio.run(consume(args.url, bytes.fromhex(args.token)))
        return
    if args.url:
        results = asyncio.run(_measure_args(args.url, args.broker_pid, args))
    else:
        results = asyncio.run(_on_private_node(args))
    for result in results:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
