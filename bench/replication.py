"""CPU per replicated journal entry on each end of DR replication, outside a running network.

The primary's side is :meth:`~host_node.replication.Replicator.ship` (encoding and signing a
committed batch); the standby's is its frame handler (signature, decoding, chain check and
the SQLite transaction, on the store's writer thread too), both over a bus that only records
what is published. Batches are ``--entries`` realistic entries: withdrawals, deposits and
transfers on accounts with holders and PINs, with their evidence and idempotency rows.
``standby_apply`` hands the standby one frame at a time (each written before the next comes);
``standby_apply_queued`` hands it every frame at once (a standby that groups writes groups
them). Prints one JSON object: process CPU microseconds per entry, the best of ``--repeat`` runs::

    .venv/bin/python bench/replication.py [--entries 50] [--batches 40] [--repeat 5]

``--rabbitmq`` also measures the sync round trip on a private RabbitMQ node with a real
standby process (``branchnet host --role standby``, its store fsynced as in production): a
:class:`~host_node.replication.Replicator` ships ``--rounds`` batches at ``--rate`` batches
a second as the host does (``ship`` after the commit, ``held`` before the replies, the next
batch shipped while one is held) and reports, per batch, the ``ship`` time and the round
trip from ``ship`` to ``held`` returning (p50, p90, max in ms), the replication frames,
acks and ack signature checks per batch, and the CPU per entry of this process (the
primary's side), of the standby process and of the broker.

Nothing here asserts a time; the figures are for before/after comparisons on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.bus import Bus, Delivery, Handler, Message, QueueStats, Subscription
from common.identity import ensure_identity, identity_dir
from common.replies import Reply, encode_reply
from common.results import ResultCode
from host_node.batch import Remembered, Settlement
from host_node.checkpoint import SIGNER
from host_node.evidence import EntryEvidence, FrameProof
from host_node.journal import ChainHead, Origin, head_of
from host_node.journal import seal as journal_seal
from host_node.ledger import AccountState, Customer, DailyUsage, PinRecord, Posting
from host_node.replication import Replicator
from host_node.standby import StandbyService

_KINDS = ("withdraw", "deposit", "transfer")
#: Customer accounts the batches touch, each with its own holder (``--accounts``).
_ACCOUNTS = [256]


def _number(serial: int) -> str:
    return f"62000101{serial % _ACCOUNTS[0]:08d}"


def _holder(number: str) -> Customer:
    return Customer("Zhang San", "resident_id", f"1101011990{number[-8:]}")


class _Recorded(Delivery):
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.headers: Mapping[str, object] = {}
        self.exchange = ""
        self.routing_key = ""
        self.queue = ""
        self.redelivered = False

    async def ack(self) -> None:
        pass

    async def nack(self, *, requeue: bool = True) -> None:
        raise AssertionError("nacked")


class _Subscription(Subscription):
    async def cancel(self) -> None:
        pass


class RecordingBus(Bus):
    """A bus that keeps what is published and delivers nothing."""

    def __init__(self) -> None:
        self.published: list[Message] = []

    async def connect(self) -> None:
        pass

    async def declare(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def publish(self, messages: Sequence[Message], **kwargs: Any) -> None:
        self.published.extend(messages)

    async def consume(self, queue: str, handler: Handler, **kwargs: Any) -> Subscription:
        return _Subscription()

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        raise AssertionError(f"dead-lettered: {reason}")

    async def queue_stats(self, queue: str) -> QueueStats:
        return QueueStats(queue, 0, 0)

    async def close(self) -> None:
        pass


def _settlement(
    head: ChainHead, entries: int, batch: int, held: set[str], *, seed: bool = False
) -> Settlement:
    """A committed batch of ``entries`` approved requests after ``head``; a ``seed`` batch
    also brings every customer. The accounts not in ``held`` are new (and added to it)."""
    now = dt.datetime.now(dt.UTC)
    sealed, remembered, evidence, accounts = [], [], [], {}
    digest = hashlib.sha256(f"frame-{batch}".encode()).hexdigest()
    cash = AccountState(number="CASH-0001", branch_id="0001", kind="cash", opened_at=now)
    for index in range(entries):
        serial = batch * entries + index
        request_id = f"0001-01-{serial + 1}"
        content = hashlib.sha256(request_id.encode()).hexdigest()
        number = _number(serial)
        kind = _KINDS[serial % 3]
        amount = 10_000 + serial % 977
        origin = Origin(request_id, "0001", "T0001", "01", now, now, now, content)
        if kind == "transfer":
            other = _number(serial + 1)
            postings = [Posting(number, -amount), Posting(other, amount)]
        else:
            sign = -1 if kind == "withdraw" else 1
            postings = [Posting(number, sign * amount), Posting("CASH-0001", -sign * amount)]
        entry = journal_seal(
            head,
            origin,
            kind=kind,
            subject=f"6200********{number[-4:]}",
            processed_at=now,
            postings=postings,
            result=ResultCode.APPROVED,
            reason="approved",
            rule="",
        )
        sealed.append(entry)
        head = head_of(entry)
        reply = Reply(
            request_id=request_id,
            result=ResultCode.APPROVED,
            reason="approved",
            balance=1_000_000 + serial,
            available=1_000_000 + serial,
            amount=amount,
            received_at=now,
            processed_at=now,
            journal_seq=entry.seq,
        )
        remembered.append(Remembered(request_id, content, reply, encode_reply(reply).decode()))
        record = orjson.dumps(
            {
                "kind": kind,
                "request_id": request_id,
                "branch_id": "0001",
                "teller_id": "T0001",
                "terminal_id": "01",
                "origin_time": now,
                "account": number,
                "amount": amount,
                "pin": "[removed]",
            }
        )
        evidence.append(EntryEvidence(entry.seq, digest, index, record, "00 PIN verified", ()))
        for posting in postings:
            if posting.account != "CASH-0001":
                accounts[posting.account] = AccountState(
                    number=posting.account,
                    branch_id="0001",
                    kind="customer",
                    opened_at=now,
                    balance=1_000_000 + serial,
                    pin=PinRecord(f"{serial % 10000:04d}"),
                    holder=_holder(posting.account),
                    usage=DailyUsage(now.date(), amount, 0),
                )
    accounts["CASH-0001"] = cash
    header = b'{"version":1,"kind":"request","sender":"0001","sequence":1,"signature":"' + (
        b"ab" * 64 + b'"}'
    )
    new = frozenset(number for number in accounts if number not in held)
    held.update(accounts)
    return Settlement(
        replies=(),
        entries=tuple(sealed),
        accounts=tuple(accounts.values()),
        customers={_number(n): _holder(_number(n)) for n in range(_ACCOUNTS[0])} if seed else {},
        remembered=tuple(remembered),
        head=head,
        evidence=tuple(evidence),
        frames={digest: FrameProof(header, os.urandom(32 * entries))},
        new_accounts=new,
    )


def _batches(count: int, entries: int) -> list[Settlement]:
    """A seed batch of one entry, then ``count`` batches of ``entries``."""
    held: set[str] = set()
    batches = [_settlement(ChainHead(), 1, 0, held, seed=True)]
    for number in range(1, count + 1):
        batches.append(_settlement(batches[-1].head, entries, number, held))
    return batches


async def _ship(key: Ed25519PrivateKey, batches: list[Settlement]) -> tuple[float, list[bytes]]:
    """CPU seconds to ship every batch but the seed; the frames (seed first)."""
    bus = RecordingBus()
    replicator = Replicator(
        bus, key, key.public_key(), mode="async", standby_lost="async", timeout_s=1.0
    )
    flush = getattr(replicator, "_flush", None)  # absent before ship stopped waiting
    await replicator.ship(batches[0])
    if flush is not None:
        await flush()
    started = time.process_time()
    for settlement in batches[1:]:
        await replicator.ship(settlement)
        if flush is not None:
            await flush()  # one frame a batch, as when each is shipped before the next comes
    spent = time.process_time() - started
    await replicator.stop()
    return spent, [m.body for m in bus.published]


async def _apply(data_dir: Path, frames: list[bytes], *, queued: bool) -> float:
    standby = StandbyService(RecordingBus(), data_dir)
    await standby.start()
    try:
        await standby._on_frame(_Recorded(frames[0]))
        drain = getattr(standby, "_drain", None)  # absent before the standby grouped writes
        started = time.process_time()
        for body in frames[1:]:
            await standby._on_frame(_Recorded(body))
            if drain is not None and not queued:
                await drain()
        if drain is not None:
            await drain()
        spent = time.process_time() - started
        assert standby.store.head.seq > 0
    finally:
        await standby.stop()
    return spent


async def run(entries: int, count: int, repeat: int) -> dict[str, Any]:
    batches = _batches(count, entries)
    total = entries * count
    ship_best = apply_best = queued_best = float("inf")
    with tempfile.TemporaryDirectory() as home:
        primary = Path(home) / "primary"
        key = ensure_identity(primary, SIGNER)
        for attempt in range(repeat):
            spent, frames = await _ship(key, batches)
            ship_best = min(ship_best, spent)
            standby_dir = Path(home) / f"standby-{attempt}"
            shutil.copytree(identity_dir(primary), identity_dir(standby_dir))
            apply_best = min(apply_best, await _apply(standby_dir, frames, queued=False))
            queued_dir = Path(home) / f"queued-{attempt}"
            shutil.copytree(identity_dir(primary), identity_dir(queued_dir))
            queued_best = min(queued_best, await _apply(queued_dir, frames, queued=True))
    return {
        "entries_per_batch": entries,
        "accounts": _ACCOUNTS[0],
        "batches": count,
        "us_per_entry": {
            "primary_ship": round(ship_best / total * 1e6, 2),
            "standby_apply": round(apply_best / total * 1e6, 2),
            "standby_apply_queued": round(queued_best / total * 1e6, 2),
        },
        "bytes_per_entry": round(sum(len(f) for f in frames[1:]) / total, 1),
    }


def _cpu_s(pid: int) -> float:
    """User and system CPU seconds process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(ordered[len(ordered) // 2] * 1e3, 2),
        "p90": round(ordered[int(len(ordered) * 0.9)] * 1e3, 2),
        "max": round(ordered[-1] * 1e3, 2),
    }


async def _until_consumed(bus: Bus, queue: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (await bus.queue_stats(queue)).consumers == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody consumes {queue}")
        await asyncio.sleep(0.1)


async def _round_trips(
    amqp_url: str,
    key: Ed25519PrivateKey,
    batches: list[Settlement],
    rate: float,
    pids: list[int],
) -> tuple[list[float], list[float], list[float], dict[str, int]]:
    """Ship ``batches`` paced at ``rate`` a second and wait for each as the host does: the
    ``ship`` times, the ship-to-held round trips, the CPU seconds of this process and of
    ``pids`` over the paced batches (the first, seed batch and the start-up left out), and
    the replication frames sent, acks received and ack signatures verified meanwhile."""
    from common.amqp_bus import AmqpBus
    from common.topology import CORE, DR_REPLICATION
    from host_node import replication

    bus = AmqpBus(amqp_url, name="bench-primary")
    await bus.connect()
    await bus.declare(CORE)
    await _until_consumed(bus, DR_REPLICATION)
    replicator = Replicator(
        bus, key, key.public_key(), mode="sync", standby_lost="stop", timeout_s=10.0
    )
    counts = {"frames": 0, "acks": 0, "verified": 0}
    on_ack, verify = replicator._on_ack, getattr(replication, "verify")  # noqa: B009

    async def counted_ack(delivery: Delivery) -> None:
        counts["acks"] += 1
        await on_ack(delivery)

    def counted_verify(*args: Any) -> bool:
        counts["verified"] += 1
        return bool(verify(*args))

    setattr(replicator, "_on_ack", counted_ack)  # noqa: B010 - before start subscribes it
    setattr(replication, "verify", counted_verify)  # noqa: B010 - the primary's checks only
    await replicator.start(ChainHead())
    ships: list[float] = []
    trips: list[float] = []

    async def held(seq: int, started: float) -> None:
        await replicator.held(seq)
        trips.append(time.perf_counter() - started)

    await replicator.ship(batches[0])
    await replicator.held(batches[0].head.seq)
    answering: asyncio.Task[None] | None = None
    cpu = [time.process_time(), *(_cpu_s(pid) for pid in pids)]
    counts.update(frames=-replicator._sequence, acks=0, verified=0)
    next_at = time.perf_counter()
    for settlement in batches[1:]:
        next_at += 1 / rate
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        started = time.perf_counter()
        await replicator.ship(settlement)
        ships.append(time.perf_counter() - started)
        if answering is not None:
            await answering  # the host answers its batches in order
        answering = asyncio.create_task(held(settlement.head.seq, started))
    if answering is not None:
        await answering
    cpu = [
        spent - before
        for spent, before in zip([time.process_time(), *map(_cpu_s, pids)], cpu, strict=True)
    ]
    counts["frames"] += replicator._sequence
    await replicator.stop()
    await bus.close()
    setattr(replication, "verify", verify)  # noqa: B010
    return ships, trips, cpu, counts


async def _rabbitmq(entries: int, count: int, rate: float) -> dict[str, Any]:
    from branchnet.broker import private_broker

    batches = _batches(count, entries)
    with (
        private_broker("branchnet-bench-replication-") as node,
        tempfile.TemporaryDirectory(prefix="branchnet-bench-replication-nodes-") as nodes,
    ):
        standby: subprocess.Popen[bytes] | None = None
        try:
            home = Path(nodes)
            key = ensure_identity(home / "primary", SIGNER)
            shutil.copytree(identity_dir(home / "primary"), identity_dir(home / "standby"))
            standby = subprocess.Popen(
                [
                    *(sys.executable, "-m", "branchnet.cli", "host", "--role", "standby"),
                    *("--data-dir", str(home / "standby"), "--amqp-url", node.amqp_url),
                    *("--branches", "1"),
                ],
                env={**os.environ, "BRANCHNET_LOG_LEVEL": "warning"},
                stdout=subprocess.DEVNULL,
            )
            broker_pid = int(node.pid_file.read_text().strip())
            ships, trips, (primary_cpu, standby_cpu, broker_cpu), counts = await _round_trips(
                node.amqp_url, key, batches, rate, [standby.pid, broker_pid]
            )
        finally:
            if standby is not None:
                standby.send_signal(signal.SIGTERM)
                standby.wait(30)
    total = entries * count
    return {
        "rate_batches_per_s": rate,
        "ship_ms": _percentiles(ships),
        "ship_to_held_ms": _percentiles(trips),
        "per_batch": {name: round(number / count, 2) for name, number in counts.items()},
        "cpu_us_per_entry": {
            "primary": round(primary_cpu / total * 1e6, 2),
            "standby": round(standby_cpu / total * 1e6, 2),
            "broker": round(broker_cpu / total * 1e6, 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--accounts", type=int, default=256, help="customer accounts touched")
    parser.add_argument("--rabbitmq", action="store_true", help="also the round trip (above)")
    parser.add_argument("--rounds", type=int, default=400, help="batches of the round trip")
    parser.add_argument("--rate", type=float, default=40.0, help="batches a second shipped")
    arguments = parser.parse_args()
    _ACCOUNTS[0] = arguments.accounts
    result = asyncio.run(run(arguments.entries, arguments.batches, arguments.repeat))
    if arguments.rabbitmq:
        result["rabbitmq"] = asyncio.run(
            _rabbitmq(arguments.entries, arguments.rounds, arguments.rate)
        )
    result["loadavg"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
