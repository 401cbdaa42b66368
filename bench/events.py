"""CPU the host spends on ops events, per answered request: the event publisher alone.

Feeds a real :class:`~host_node.events.EventPublisher` host batches of ``--batch`` answers
(four branches; deposits, withdrawals, transfers, balances; some declines, some large cash)
the way the host does — one batch, then the publisher has the loop until it is idle — onto
the embedded bus (nobody subscribed: the host's side only) and, with ``--amqp``, onto a
private RabbitMQ node (started here, stopped after) where a dashboard's MQTT subscription
queue that nobody reads (bounded, ``drop-head``) takes every event.
Prints one JSON object: process CPU µs per answer (the best of ``--repeat`` runs), messages
published per answer, and for RabbitMQ the broker's CPU µs per answer too. Run::

    .venv/bin/python bench/events.py [--batch 50] [--batches 400] [--repeat 5] [--amqp]

Nothing here asserts a time; the figures are for before/after comparisons on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from common.bus import Bus
from common.embedded_bus import EmbeddedBroker
from common.ids import card_number, request_id
from common.replies import Reply
from common.requests import Balance, Deposit, EncryptedPin, Request, Transfer, Withdraw
from common.results import ResultCode
from common.topology import EVENTS_EXCHANGE
from host_node.events import EventConfig, EventPublisher
from host_node.intake import Item

BRANCHES = ("0001", "0002", "0003", "0004")
DASHBOARD = "bench.dashboard"
PIN = EncryptedPin(pin_block="1234FFFFFFFFFFFFFFFFFFFFFFFFFFFF", ksn="ABCD0000000000000001")


def _answers(count: int, rng: random.Random) -> list[tuple[Item, Reply]]:
    """Answers as a loaded host gives them: 5% declined, 1% large cash."""
    now = dt.datetime.now(dt.UTC)
    answers = []
    for n in range(count):
        branch = rng.choice(BRANCHES)
        base: dict[str, Any] = {
            "request_id": request_id(branch, "01", n),
            "branch_id": branch,
            "teller_id": f"T{branch}01",
            "terminal_id": "01",
            "origin_time": now,
        }
        account = card_number(branch, "01", rng.randrange(1000))
        amount = 6_000_000 if rng.random() < 0.01 else rng.randrange(100, 500_000)
        roll = rng.random()
        record: Request
        if roll < 0.4:
            record = Deposit(**base, account=account, amount=amount)
        elif roll < 0.8:
            record = Withdraw(**base, account=account, amount=amount, pin=PIN)
        elif roll < 0.95:
            to = card_number(branch, "01", rng.randrange(1000))
            record = Transfer(**base, account=account, to_account=to, amount=amount, pin=PIN)
        else:
            record = Balance(**base, account=account, pin=PIN)
        declined = rng.random() < 0.05
        reply = Reply(
            request_id=base["request_id"],
            result=ResultCode.INSUFFICIENT_FUNDS if declined else ResultCode.APPROVED,
            reason="insufficient funds" if declined else "approved",
            balance=1_000_000,
            received_at=now,
            processed_at=now,
        )
        received = now - dt.timedelta(milliseconds=rng.uniform(2, 40))
        item = Item(branch, b"", record, "0" * 64, received, received)
        answers.append((item, reply))
    return answers


def _idle(publisher: EventPublisher) -> bool:
    """The publisher has accounted and published all it was handed (both loops wait)."""
    return not (
        publisher._batches
        or publisher._buffer
        or publisher._wake.is_set()
        or publisher._account_wake.is_set()
    )


def _messages(publisher: EventPublisher) -> int:
    statistics = publisher.statistics()
    # an older publisher sent one message per event and had no count of messages
    return getattr(statistics, "messages", 0) or statistics.published


async def _run(bus: Bus, batches: list[list[tuple[Item, Reply]]]) -> tuple[float, int]:
    """CPU seconds and messages for publishing ``batches``, one host batch at a time."""
    publisher = EventPublisher(bus, config=EventConfig(stats_interval_s=0, buffer_bound=100_000))
    await publisher.start()
    await asyncio.sleep(0.05)
    before = _messages(publisher)
    started = time.process_time()
    for batch in batches:
        publisher.on_batch(batch)
        # the host's next batch comes later: let the publisher finish this one
        await asyncio.sleep(0)
        while not _idle(publisher):
            await asyncio.sleep(0.002)
    cpu = time.process_time() - started
    messages = _messages(publisher) - before
    await publisher.stop()
    return cpu, messages


async def _measure(bus: Bus, args: argparse.Namespace) -> dict[str, float]:
    await bus.connect()
    rng = random.Random(7)
    answers = args.batch * args.batches
    batches = [_answers(args.batch, rng) for _ in range(args.batches)]
    best, messages = float("inf"), 0
    for _ in range(args.repeat):
        cpu, messages = await _run(bus, batches)
        best = min(best, cpu)
    await bus.close()
    return {
        "cpu_us_per_answer": round(best / answers * 1e6, 2),
        "messages_per_answer": round(messages / answers, 3),
    }


async def _dashboard_queue(url: str) -> None:
    """A stuck MQTT dashboard's queue: bound to every event, oldest dropped beyond 1,000."""
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            DASHBOARD, arguments={"x-max-length": 1000, "x-overflow": "drop-head"}
        )
        await queue.bind(EVENTS_EXCHANGE, "bank.events.#")


def _beam_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _amqp(args: argparse.Namespace) -> dict[str, float]:
    from branchnet.broker import private_broker
    from common.amqp_bus import AmqpBus

    with private_broker("branchnet-bench-events-") as node:
        await _dashboard_queue(node.amqp_url)
        pid = int(node.pid_file.read_text().strip())
        beam = _beam_cpu_s(pid)
        result = await _measure(AmqpBus(node.amqp_url, name="bench-events"), args)
        # the broker's CPU over all runs and the idle time between batches (not the best)
        answers = args.batch * args.batches * args.repeat
        result["broker_cpu_us_per_answer"] = round((_beam_cpu_s(pid) - beam) / answers * 1e6, 2)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50, help="answers per host batch")
    parser.add_argument("--batches", type=int, default=400, help="host batches per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best is reported")
    parser.add_argument("--amqp", action="store_true", help="also onto a private RabbitMQ")
    args = parser.parse_args()
    report: dict[str, Any] = {"batch": args.batch}
    report["embedded"] = asyncio.run(_measure(EmbeddedBroker().connect(), args))
    if args.amqp:
        report["rabbitmq"] = asyncio.run(_amqp(args))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
