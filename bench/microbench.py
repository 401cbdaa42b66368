"""Micro-benchmarks of the per-record CPU on the request path, outside the host's batch loop.

Prints one JSON object: CPU microseconds per operation (thread CPU time, the best of
``--repeat`` runs, so a busy shared machine inflates the figures less; CPU is what the
processes sharing the machine's cores compete for, while an fsync's wait is not), for frames
of ``--records`` records. Run::

    .venv/bin/python bench/microbench.py [--records 64] [--repeat 5] [--pads 16] [--only hsm]
        [--amqp-url amqp://...] [--frame-records 4]

The ``client_*`` figures are the load generator's side (``branchnet loadtest``'s driver,
recorder and request clients, sealed frames) per request, against an echo host whose own CPU is
left out: a burst as fast as it goes, and the open model paced at 1,200/s with replies held
20 ms; with ``--amqp-url`` over that RabbitMQ too.

The ``host_batch.*`` figures are the host's batch path (unpack to answer) per record of a
``--records`` frame; the ``host_frame.*`` ones what the host does with a sealed frame of
``--frame-records`` (4, as the load test's branches send them) outside its batch core: open,
unpack, replies encoded and sealed, events, log calls.

Nothing here asserts a time; the figures are for before/after comparisons on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import functools
import hashlib
import itertools
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from branch_node.client import RequestClient
from branch_node.session import BranchSession
from branchnet.buses import open_bus
from branchnet.loadgen import LoadWorkload, PreparedRequest, origin_stamp, prepare
from branchnet.loadnet import LoadTarget
from branchnet.loadstats import Recorder
from branchnet.loadtest import LoadConfig, _Driver, run_open
from common.bus import Bus, Delivery, Message
from common.embedded_bus import EmbeddedBroker
from common.envelope import (
    FrameEvidence,
    SessionKey,
    open_records,
    read_sealed,
    seal,
    verify_header,
)

try:
    from common.envelope import open_records_and_leaves
except ImportError:  # an older tree, for before/after comparisons
    open_records_and_leaves = None  # type: ignore[assignment]
from common.frames import FrameKind, build_frame, decode_frame, encode_frame
from common.logs import configure_logging, get_logger
from common.pin_commands import PIN_RESPONSE_ADAPTER, HsmError, VerifyPin
from common.replies import Reply, decode_reply, encode_reply
from common.requests import Deposit, EncryptedPin, Withdraw, decode_request, encode_request
from common.results import ResultCode
from common.topology import CORE, HOST_REQUESTS, REPLIES_EXCHANGE, branch_key, host_topology
from crypto_node import ibm3624
from crypto_node.bench import CARD, PIN, pin_blocks
from crypto_node.hsm import Hsm
from crypto_node.keys import CryptoKeys
from crypto_node.pvk import Pvk
from crypto_node.service import read_command
from host_node.batch import Remembered, Settlement
from host_node.errors import FrameRefused
from host_node.evidence import EntryEvidence, FrameProof
from host_node.guard import Guard
from host_node.journal import ChainHead, Origin, head_of
from host_node.journal import seal as journal_seal
from host_node.ledger import AccountState, Posting
from host_node.replication import decode_batch, encode_batch, verify_batch


def _best(run: Callable[[], object], per: int, repeat: int, minimum: float = 0.2) -> float:
    """Microseconds per item: the best of ``repeat`` timed loops of at least ``minimum`` s."""
    best = float("inf")
    for _ in range(repeat):
        loops, started = 0, time.thread_time()
        while (elapsed := time.thread_time() - started) < minimum:
            run()
            loops += 1
        best = min(best, elapsed / (loops * per) * 1e6)
    return round(best, 2)


def _withdraw(n: int, pin: EncryptedPin) -> Withdraw:
    return Withdraw(
        request_id=f"0001-01-{n + 1}",
        branch_id="0001",
        teller_id="T0001",
        terminal_id="01",
        origin_time=dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC),
        account="6200010100000018",
        amount=10_000,
        pin=pin,
    )


def _settlement(entries: int) -> Settlement:
    """A committed batch of ``entries`` approved withdrawals, as the primary ships it."""
    now = dt.datetime.now(dt.UTC)
    head, sealed, remembered, evidence, accounts = ChainHead(), [], [], [], []
    for index in range(entries):
        request_id = f"0001-01-{index + 1}"
        content = hashlib.sha256(request_id.encode()).hexdigest()
        origin = Origin(request_id, "0001", "T0001", "01", now, now, now, content)
        entry = journal_seal(
            head,
            origin,
            kind="withdraw",
            subject=CARD,
            processed_at=now,
            postings=[Posting(CARD, -10_000), Posting("CASH-0001", 10_000)],
            result=ResultCode.APPROVED,
            reason="approved",
        )
        sealed.append(entry)
        head = head_of(entry)
        reply = Reply(
            request_id=request_id,
            result=ResultCode.APPROVED,
            reason="approved",
            balance=100,
            amount=10_000,
            received_at=now,
            processed_at=now,
            journal_seq=entry.seq,
        )
        remembered.append(Remembered(request_id, content, reply))
        evidence.append(EntryEvidence(entry.seq, "ab" * 32, index, b'{"r":1}' * 40, "00", ()))
        number = f"62000101{index:08d}"
        accounts.append(
            AccountState(number=number, branch_id="0001", kind="customer", opened_at=now)
        )
    return Settlement(
        replies=(),
        entries=tuple(sealed),
        accounts=tuple(accounts),
        customers={},
        remembered=tuple(remembered),
        head=head,
        evidence=tuple(evidence),
        frames={"ab" * 32: FrameProof(b'{"h":1}' * 30, b"\x01" * 32 * entries)},
    )


# -- the load generator and request client, against a host that only echoes ------------------

_REPLY_TAIL = (
    b'","result":"00","reason":"approved","balance":123400,"amount":10000,"available":null,'
    b'"account":null,"received_at":"%s","processed_at":"%s","journal_seq":42,"rule":null}'
)


class _EchoHost:
    """Approves every record at once: the host's real guard opens each sealed request frame
    and seals the reply frame. The CPU it spends (its bus publish and ack included) is kept in
    ``spent`` so a figure can leave it out; ``delay_s`` holds each answer that long, as a
    host's round trip does, so the client's frames grow as they would against one. A frame
    the guard refuses (left in a broker's queue by an earlier run) is dropped."""

    def __init__(self, bus: Bus, guard: Guard, delay_s: float) -> None:
        self.bus = bus
        self.guard = guard
        self.delay_s = delay_s
        self.spent = 0.0
        self._sequence = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_frame(self, delivery: Delivery) -> None:
        started = time.thread_time()
        try:
            opened = self.guard.open(delivery.body, delivery.routing_key, dt.datetime.now(dt.UTC))
        except FrameRefused:
            await delivery.ack()
            return
        if opened.answer is not None:
            message = opened.answer
        else:
            now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
            tail = _REPLY_TAIL % (now, now)
            records = [
                b'{"request_id":"' + orjson.loads(record)["request_id"].encode() + tail
                for record in opened.frame.records
            ]
            body = self.guard.seal_reply(opened.branch_id, next(self._sequence), records)
            assert body is not None
            message = Message(REPLIES_EXCHANGE, branch_key(opened.branch_id), body)
        await delivery.ack()
        if self.delay_s and opened.answer is None:
            task = asyncio.create_task(self._later(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            await self.bus.publish([message])
        self.spent += time.thread_time() - started

    async def _later(self, message: Message) -> None:
        await asyncio.sleep(self.delay_s)
        started = time.thread_time()
        await self.bus.publish([message])
        self.spent += time.thread_time() - started


class _EchoThread:
    """The echo host over RabbitMQ on an event loop of its own thread, so that its CPU (its
    AMQP connection's included) is not the measuring thread's."""

    def __init__(self, amqp_url: str, guard: Guard, branch_ids: list[str], delay_s: float) -> None:
        self.spent = 0.0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(
            target=asyncio.run,
            args=(self._main(amqp_url, guard, branch_ids, delay_s),),
            name="echo-host",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the echo host did not start")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    async def _main(
        self, amqp_url: str, guard: Guard, branch_ids: list[str], delay_s: float
    ) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        bus = open_bus(amqp_url, embedded=None, name="bench-echo-host")
        await bus.connect()
        await bus.declare(CORE + host_topology(branch_ids))
        host = _EchoHost(bus, guard, delay_s)
        await bus.consume(HOST_REQUESTS, host.on_frame, prefetch=8)
        self._ready.set()
        await self._stop.wait()
        await bus.close()


class _Quiet:
    """Stands in for a load target: no host process to read."""

    def host_cpu_s(self) -> None:
        return None

    def host_rss_mb(self) -> None:
        return None


class _Records:
    """Stands in for a load workload: ``count`` deposits round the branches, prepared before
    the clock runs (as ``branchnet loadtest`` prepares its records before its run)."""

    def __init__(self, branch_ids: list[str], count: int) -> None:
        self._prepared = [
            prepare(
                Deposit(
                    request_id=f"{branch_ids[n % len(branch_ids)]}-01-{n}",
                    branch_id=branch_ids[n % len(branch_ids)],
                    teller_id="T0001",
                    terminal_id="01",
                    origin_time=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
                    account=CARD,
                    amount=10_000,
                )
            )
            for n in range(1, count + 1)
        ]

    def build(self, count: int) -> list[PreparedRequest]:
        taken, self._prepared = self._prepared[:count], self._prepared[count:]
        return taken


async def _client_run(
    requests: int,
    branches: int,
    *,
    rate: float | None,
    delay_s: float,
    window: int,
    amqp_url: str | None = None,
) -> float:
    """CPU µs per request of the load generator and its request clients (sealed frames) —
    this thread's CPU, less what the echo host spent in it (on the embedded bus; over
    RabbitMQ, at ``amqp_url``, the echo host has a thread of its own).

    ``rate``: paced by the open-model loop of ``branchnet loadtest`` (its recorder and
    per-second ticks included); None: handed over in bursts of 64 as fast as they go.
    """
    branch_ids = [f"{b:04d}" for b in range(1, branches + 1)]
    host_identity = Ed25519PrivateKey.generate()
    identities = {b: Ed25519PrivateKey.generate() for b in branch_ids}
    guard = Guard(host_identity, {b: k.public_key() for b, k in identities.items()})
    broker = EmbeddedBroker()
    host: _EchoHost | _EchoThread
    if amqp_url is None:
        host_bus = broker.connect()
        await host_bus.connect()
        await host_bus.declare(CORE + host_topology(branch_ids))
        host = _EchoHost(host_bus, guard, delay_s)
        await host_bus.consume(HOST_REQUESTS, host.on_frame, prefetch=8)
    else:
        host = _EchoThread(amqp_url, guard, branch_ids, delay_s)
        host.start()
    clients: dict[str, RequestClient] = {}
    buses: list[Bus] = []
    for branch in branch_ids:
        bus = open_bus(amqp_url, embedded=broker, name=f"bench-branch-{branch}")
        buses.append(bus)
        await bus.connect()
        session = BranchSession(
            branch, identities[branch], host_identity.public_key(), check_reply_signatures=False
        )
        clients[branch] = RequestClient(
            bus, branch, window=window, retries=0, max_in_flight=100_000, prefetch=64,
            session=session,
        )  # fmt: skip
        await clients[branch].start()
    while not all(c.session is not None and c.session.ready for c in clients.values()):
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)
    driver = _Driver(clients, cast(LoadTarget, _Quiet()), None)
    workload = _Records(branch_ids, requests)
    host.spent = 0.0
    started = time.thread_time()
    if rate is None:
        recorder = _burst_recorder()
        prepared = workload.build(requests)
        for index in range(0, requests, 64):
            stamp = origin_stamp(dt.datetime.now(dt.UTC))
            for request in prepared[index : index + 64]:
                driver.send(recorder, request, stamp, driver.loop.time())
            await asyncio.sleep(0)
        await driver.drain(30.0)
        assert recorder.answered == requests, (recorder.answered, requests)
    else:
        duration = requests / rate
        result = await run_open(
            driver,
            cast(LoadWorkload, workload),
            rate=rate,
            duration_s=duration,
            warmup_s=0.0,
            config=LoadConfig(rate=rate, duration_s=duration, warmup_s=0.0),
        )
        assert result.recorder.answered == requests, (result.recorder.answered, requests)
    spent = time.thread_time() - started - (host.spent if amqp_url is None else 0.0)
    for client in clients.values():
        await client.stop()
    for bus in buses:
        await bus.close()
    if isinstance(host, _EchoThread):
        host.stop()
    else:
        await host.bus.close()
    return spent / requests * 1e6


def _remember_at_bound(repeat: int) -> float:
    """A request client's bookkeeping of answered ids once it remembers as many as it may
    (every answer then forgets the oldest): µs per answer."""
    client = RequestClient(EmbeddedBroker().connect(), "0001")
    ids = (f"0001-01-{n}" for n in itertools.count())
    for request_id in itertools.islice(ids, 100_000):
        client._remember(request_id, answered=True)

    def answers() -> None:
        for request_id in itertools.islice(ids, 1000):
            client._remember(request_id, answered=True)

    return _best(answers, 1000, repeat)


def _burst_recorder() -> Recorder:
    loop = asyncio.get_running_loop()
    return Recorder(measure_from=loop.time(), wall_offset=time.time() - loop.time())


def client_figures(repeat: int, amqp_url: str | None = None) -> dict[str, Callable[[], float]]:
    """The load generator's and request client's CPU per request (µs), best of ``repeat``;
    with ``amqp_url`` also over that RabbitMQ."""
    configure_logging("warning")  # as ``branchnet loadtest`` runs by default

    def best(
        requests: int, *, rate: float | None, delay_s: float, amqp_url: str | None = None
    ) -> Callable[[], float]:
        run = functools.partial(
            _client_run, requests, 4, rate=rate, delay_s=delay_s, window=2, amqp_url=amqp_url
        )
        return lambda: round(min(asyncio.run(run()) for _ in range(repeat)), 1)

    figures = {
        "client_remember_at_bound/req": lambda: _remember_at_bound(repeat),
        "client_burst/req": best(8192, rate=None, delay_s=0.0),
        "client_paced_1200/req": best(3600, rate=1200.0, delay_s=0.02),
    }
    if amqp_url is not None:
        figures["client_amqp_burst/req"] = best(8192, rate=None, delay_s=0.0, amqp_url=amqp_url)
        figures["client_amqp_paced_1200/req"] = best(
            3600, rate=1200.0, delay_s=0.02, amqp_url=amqp_url
        )
    return figures


def run(
    records: int,
    repeat: int,
    pads: int,
    only: str = "",
    amqp_url: str | None = None,
    frame_records: int = 4,
) -> dict[str, Any]:
    """Microseconds per operation; ``/rec`` figures are per record of a ``records`` frame."""
    keys = CryptoKeys.generate()
    blocks = pin_blocks(keys, pads)
    requests = [_withdraw(n, next(blocks)) for n in range(records)]
    wire = [encode_request(r) for r in requests]
    now = dt.datetime.now(dt.UTC)
    reply = Reply(
        request_id=requests[0].request_id,
        result=ResultCode.APPROVED,
        reason="approved",
        balance=123_400,
        available=123_400,
        amount=10_000,
        received_at=now,
        processed_at=now,
        journal_seq=42,
    )
    reply_wire = encode_reply(reply)
    identity = Ed25519PrivateKey.generate()
    public = identity.public_key()
    session = SessionKey(1, os.urandom(32))
    body = seal(FrameKind.REQUEST, "0001", 1, wire, session, identity)
    header = read_sealed(body).header
    message = os.urandom(200)
    signature = identity.sign(message)

    def open_frame() -> None:
        sealed = read_sealed(body)
        assert verify_header(sealed.header, public)
        open_records(sealed, session)

    def host_open() -> None:
        """What the host's guard does with a request frame: open it and keep its evidence."""
        sealed = read_sealed(body)
        assert verify_header(sealed.header, public)
        if open_records_and_leaves is None:  # before leaf hashes were shared
            FrameEvidence.of(sealed.header_bytes, open_records(sealed, session))
        else:
            FrameEvidence(sealed.header_bytes, open_records_and_leaves(sealed, session)[1])

    # HSM: one VP per record; fresh counters every batch (made before timing each batch).
    offset = ibm3624.generate_offset(
        Pvk(keys.pvk), keys.decimalization_table, ibm3624.validation_data(CARD), PIN
    )
    ids = itertools.count()

    def commands() -> list[VerifyPin]:
        return [
            VerifyPin(
                command_id=f"c-{next(ids)}",
                pan=CARD,
                pin=next(blocks),
                verification_value=offset,
                binding=f"0001-01-{next(ids)}",
            )
            for _ in range(records)
        ]

    def hsm_figure(hsm: Hsm) -> float:
        best = float("inf")
        for _ in range(repeat):
            spent, done = 0.0, 0
            while spent < 0.2:
                batch = commands()
                started = time.thread_time()
                responses = hsm.execute_batch(batch)
                spent += time.thread_time() - started
                done += len(batch)
                assert all(r.error is HsmError.OK for r in responses), responses[0]
            best = min(best, spent / done * 1e6)
        return round(best, 2)

    command_frame = encode_frame(
        build_frame(
            FrameKind.PIN_COMMAND, "host", 1, [c.model_dump_json().encode() for c in commands()]
        )
    )
    responses = [
        PIN_RESPONSE_ADAPTER.validate_python({"command_id": f"c-{i}", "error": "00"})
        for i in range(records)
    ]

    def crypto_frame_io() -> None:
        frame = decode_frame(command_frame, expect=FrameKind.PIN_COMMAND)
        [read_command(r) for r in frame.records]
        out = [PIN_RESPONSE_ADAPTER.dump_json(r) for r in responses]
        encode_frame(build_frame(FrameKind.PIN_RESPONSE, "crypto", 1, out))

    def frame_of(encode: Callable[[], object], per: int = records) -> Callable[[], float]:
        return lambda: _best(encode, per, repeat)

    settlement = _settlement(records)
    batch_record = encode_batch(settlement)

    def standby_apply() -> None:
        """The standby's CPU work on one batch record, short of its store commit."""
        shipped = decode_batch(orjson.loads(batch_record)["batch"])
        assert verify_batch(shipped, ChainHead()).head == settlement.head

    figures: dict[str, Callable[[], float]] = {
        "ed25519_sign": frame_of(lambda: identity.sign(message), 1),
        "ed25519_verify": frame_of(lambda: public.verify(signature, message), 1),
        "verify_header/frame": frame_of(lambda: verify_header(header, public), 1),
        "seal/rec": frame_of(lambda: seal(FrameKind.REQUEST, "0001", 1, wire, session, identity)),
        "open(read+verify+decrypt)/rec": frame_of(open_frame),
        "host_open+evidence/rec": frame_of(host_open),
        "encode_request/rec": frame_of(lambda: [encode_request(r) for r in requests]),
        "decode_request/rec": frame_of(lambda: [decode_request(w, branch_id="0001") for w in wire]),
        "encode_reply/rec": frame_of(lambda: encode_reply(reply), 1),
        "decode_reply/rec": frame_of(lambda: decode_reply(reply_wire), 1),
        "crypto_frame_io/rec": frame_of(crypto_frame_io),
        "replication_encode/entry": frame_of(lambda: encode_batch(settlement)),
        "standby_decode+verify/entry": frame_of(standby_apply),
        "hsm_vp_memory/rec": lambda: hsm_figure(Hsm(keys, persist=False)),
        **client_figures(repeat, amqp_url),
    }
    with tempfile.TemporaryDirectory() as home:
        figures["hsm_vp_persisted/rec"] = lambda: hsm_figure(
            Hsm(keys, replay_file=Path(home) / "marks.json")
        )
        measured = {name: figure() for name, figure in figures.items() if only in name}
    if only in "host_batch":
        measured.update(host_batch(records, repeat))
    if only in "host_frame":
        measured.update(host_frame(frame_records, repeat))
    return {
        "records_per_frame": records,
        "host_frame_records": frame_records,
        "repeat": repeat,
        "pads": pads,
        "us_per_op": measured,
    }


# -- the host's batch path (unpack, snapshot, plan, settle, commit, answer), no bus ------------


def host_batch(records: int, repeat: int, batches: int = 12) -> dict[str, float]:
    """CPU microseconds per record of the host's batch path, by stage and in total.

    Frames of ``records`` records of the load test's ``simulate`` mix (32 accounts opened
    first) go through what the host's batch loop does with them between the bus and the reply
    frames: :func:`~host_node.intake.unpack_frame` (with a sealed frame's evidence),
    the store's snapshot, :func:`~host_node.batch.plan`, :func:`~host_node.batch.settle`
    (the crypto node's answers are computed untimed), the store's commit (a real SQLite file,
    run inline here, in the store's thread in the host) and the answer (reply records
    encoded, metrics observed). Best of ``repeat`` runs of ``batches`` batches, per stage and
    per answered record (a record held back to the next batch is dropped, not retried).
    """
    # imported here: the figures above do not need a host or a load workload
    from branchnet.loadgen import LoadWorkload, origin_stamp, parse_mix
    from crypto_node import Hsm, init_keys, load_crypto_keys
    from host_node.batch import accounts_to_load, plan, settle
    from host_node.intake import unpack_frame
    from host_node.metrics import observe_answers
    from host_node.staff import default_staff
    from host_node.store import connect, read_snapshot, read_staff, write_settlement, write_staff

    stages = ("unpack", "snapshot", "plan", "settle", "commit", "answer")
    with tempfile.TemporaryDirectory() as home:
        data = Path(home)
        init_keys(data, ["0001"], 8)
        workload = LoadWorkload(data, ["0001"], terminals=8, mix=parse_mix("simulate"), seed=3)
        hsm = Hsm(load_crypto_keys(data), persist=False)
        connection = connect(data / "ledger.sqlite")
        write_staff(connection, default_staff(["0001"], terminals=8))
        staff = read_staff(connection)
        ids = (f"c-{n}" for n in itertools.count())
        head = ChainHead()
        sequence = itertools.count(1)

        def one_batch(raws: list[bytes], spent: dict[str, float]) -> list[Reply | None]:
            nonlocal head
            now = dt.datetime.now(dt.UTC)
            frame = build_frame(FrameKind.REQUEST, "0001", next(sequence), raws)
            header_bytes = frame.header.model_dump_json(exclude_none=True).encode()
            evidence = FrameEvidence.of(header_bytes, raws)
            clock = time.thread_time
            started = clock()
            unpacked = unpack_frame(
                frame, "0001", received_at=now, unpacked_at=now, evidence=evidence
            )
            items = list(unpacked.items)
            lap = clock()
            spent["unpack"] += lap - started
            stored = read_snapshot(
                connection, {item.request_id for item in items}, accounts_to_load(items)
            )
            snapshot = dataclasses.replace(stored, staff=staff)
            started, lap = lap, clock()
            spent["snapshot"] += lap - started
            planned = plan(items, snapshot, ids, taken_at=now)
            started, lap = lap, clock()
            spent["plan"] += lap - started
            responses = {r.command_id: r for r in hsm.execute_batch(list(planned.commands))}
            started = clock()
            settlement = settle(items, planned, snapshot, responses, head, _utc_now)
            lap = clock()
            spent["settle"] += lap - started
            write_settlement(connection, settlement)
            head = settlement.head
            started, lap = lap, clock()
            spent["commit"] += lap - started
            answered = [(i, r) for i, r in zip(items, settlement.replies, strict=True) if r]
            for _, reply in answered:
                encode_reply(reply)
            observe_answers(answered, _utc_now())
            spent["answer"] += clock() - lap
            return list(settlement.replies)

        openings = workload.openings(4)
        replies = one_batch([encode_request(r) for r, _ in openings], dict.fromkeys(stages, 0.0))
        workload.opened(
            [a for (_, a), r in zip(openings, replies, strict=True) if r and r.approved]
        )
        best = dict.fromkeys(stages, float("inf"))
        for _ in range(repeat):
            spent = dict.fromkeys(stages, 0.0)
            done = 0
            for _ in range(batches):
                stamp = origin_stamp(dt.datetime.now(dt.UTC))
                raws = [p.record(stamp) for p in workload.build(records)]
                done += len(raws) - sum(r is None for r in one_batch(raws, spent))
            for stage in stages:
                best[stage] = min(best[stage], spent[stage] / done * 1e6)
        connection.close()
    figures = {f"host_batch.{stage}/rec": round(best[stage], 2) for stage in stages}
    figures["host_batch.total/rec"] = round(sum(best.values()), 2)
    return figures


# -- the host's path around the batch loop: a frame in, its replies and events out -----------


def host_frame(records: int, repeat: int, frames: int = 64) -> dict[str, float]:
    """CPU microseconds per record of what the host does with a sealed request frame outside
    its batch loop's decide/commit core, by stage and in total (frames of ``records`` records
    of the load test's ``simulate`` mix, as the load test's branches send them: a few each).

    ``open``: :meth:`~host_node.guard.Guard.open` (header, signature, replay window,
    decryption, Merkle root); ``unpack``: :func:`~host_node.intake.unpack_frame`; ``remember``:
    each reply encoded for its idempotency row and the record kept as evidence
    (:func:`~host_node.evidence.redact_record`), as :func:`~host_node.batch.settle` does;
    ``answer``: the replies encoded for the reply frame, sealed by
    :meth:`~host_node.guard.Guard.seal_reply`; ``events``: the event publisher's accounting and
    messages for the answers; ``log``: the two filtered-out (info) log calls a frame makes at
    the default level (warning).
    """
    from branchnet.loadgen import LoadWorkload, origin_stamp, parse_mix
    from crypto_node import init_keys
    from host_node.events import EventPublisher, _Answers
    from host_node.evidence import redact_record
    from host_node.intake import unpack_frame

    configure_logging("warning")
    log = get_logger("bench.host_frame")
    stages = ("open", "unpack", "remember", "answer", "events", "log")
    identity = Ed25519PrivateKey.generate()
    host = Ed25519PrivateKey.generate()
    guard = Guard(host, {"0001": identity.public_key()})
    branch = BranchSession("0001", identity, host.public_key())
    now = dt.datetime.now(dt.UTC)
    opened = guard.open(branch.hello(0, now), branch_key("0001"), now)
    assert opened.answer is not None
    branch.accept(branch.open(opened.answer.body))
    with tempfile.TemporaryDirectory() as home:
        init_keys(Path(home), ["0001"], 8)
        workload = LoadWorkload(
            Path(home), ["0001"], terminals=8, mix=parse_mix("simulate"), seed=3
        )
        workload.opened([account for _, account in workload.openings(4)])
        stamp = origin_stamp(now)
        bodies = [
            branch.seal(n, [p.record(stamp) for p in workload.build(records)])
            for n in range(1, frames + 1)
        ]
    publisher = EventPublisher(EmbeddedBroker().connect())
    clock = time.thread_time
    best = dict.fromkeys(stages, float("inf"))
    for _ in range(repeat):
        spent = dict.fromkeys(stages, 0.0)
        done = 0
        for sequence, body in enumerate(bodies, 1):
            at = dt.datetime.now(dt.UTC)
            started = clock()
            opened = guard.open(body, branch_key("0001"), at)
            lap = clock()
            spent["open"] += lap - started
            unpacked = unpack_frame(
                opened.frame, "0001", received_at=at, unpacked_at=at, evidence=opened.evidence
            )
            started, lap = lap, clock()
            spent["unpack"] += lap - started
            replies = [
                Reply(
                    request_id=item.request_id,
                    result=ResultCode.APPROVED,
                    reason="approved",
                    balance=123_400,
                    amount=10_000,
                    received_at=at,
                    processed_at=at,
                    journal_seq=sequence,
                )
                for item in unpacked.items
            ]
            started = clock()
            rows = [  # as host_node.batch.settle keeps them
                Remembered(item.request_id, item.content_hash, reply, encode_reply(reply).decode())
                for item, reply in zip(unpacked.items, replies, strict=True)
            ]
            kept = [redact_record(item.raw) for item in unpacked.items]
            lap = clock()
            spent["remember"] += lap - started
            wire = [encode_reply(row.reply) for row in rows]  # as the service's reply frames
            assert guard.seal_reply("0001", sequence, wire) is not None
            started, lap = lap, clock()
            spent["answer"] += lap - started
            answered = list(zip(unpacked.items, replies, strict=True))
            publisher._account(answered, at)
            entry = publisher._buffer.popleft()
            publisher._buffered = 0
            assert isinstance(entry, _Answers) and publisher._messages(entry)
            started, lap = lap, clock()
            spent["events"] += lap - started
            log.info("request frame handled", branch="0001", frame_sequence=sequence, records=4)
            log.debug("pin commands sent", commands=len(kept))
            spent["log"] += clock() - lap
            guard.forget("0001", opened.frame.header.sequence)
            done += len(unpacked.items)
        for stage in stages:
            best[stage] = min(best[stage], spent[stage] / done * 1e6)
    figures = {f"host_frame.{stage}/rec": round(best[stage], 2) for stage in stages}
    figures["host_frame.total/rec"] = round(sum(best.values()), 2)
    return figures


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default="", help="only the figures whose name has this")
    parser.add_argument("--pads", type=int, default=16, help="PIN pads taking turns (HSM)")
    parser.add_argument(
        "--amqp-url", help="also measure the load generator's clients over this RabbitMQ"
    )
    parser.add_argument(
        "--frame-records", type=int, default=4, help="records per frame of the host_frame figures"
    )
    arguments = parser.parse_args()
    result = run(
        arguments.records,
        arguments.repeat,
        arguments.pads,
        arguments.only,
        arguments.amqp_url,
        arguments.frame_records,
    )
    result["loadavg"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
