"""The PIN round trip as the host sees it: PinClient → RabbitMQ → crypto node process → back.

A private RabbitMQ (or ``--url``) and a real crypto node (``branchnet crypto``, its own
process, its replay marks on disk) serve batches of ``VP`` commands as the host sends them:
fresh format 4 blocks from ``--pads`` PIN pads taking turns, each bound to a request id.
Before the node starts, every pad is given ``--history`` used counters with fingerprints, as
a node that has run a while has (the marks file holds each pad's window).

For each batch size, ``--rounds`` batches go one after the other (more for small batches: at
least ``--commands`` commands a run, as ``/proc`` counts CPU in 10 ms ticks). Prints one
JSON object: per batch size the round trip's wall time (p50/p90 ms, for each of ``--repeat``
runs: a shared machine makes them noisy) and the crypto process's CPU µs per command (``/proc``;
the best run). ``in_process`` has the same figures without the broker's noise: CPU µs per
command of the crypto service's frame handler and of ``PinClient.execute`` (the host's
side, with the making of canned answers), over buses that hand frames straight over
(``time.process_time``, best of ``--repeat``). ``PINPATH_KEEP=1`` keeps the data directory
(the node's log, at ``BRANCHNET_LOG_LEVEL``). Run::

    .venv/bin/python bench/pinpath.py [--sizes 1,4,16,64] [--rounds 60] [--repeat 3]

To compare two versions, alternate short runs of each against one broker (``--url``).
Nothing here asserts a time; the figures are for before/after comparisons on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import crypto_node.service
from branchnet.buses import open_bus
from branchnet.loadnet import cpu_s
from common.bus import Bus, Delivery, Handler, Message, QueueStats, Subscription
from common.dukpt import KeyDerivation, Ksn, next_counter
from common.frames import FrameKind, build_frame, encode_frame
from common.logs import configure_logging
from common.pin_commands import PIN_RESPONSE_ADAPTER, HsmError, PinResponse, VerifyPin
from common.pinblock import encipher_format4
from common.requests import EncryptedPin
from common.topology import CORE, CRYPTO_COMMANDS, HOST_CRYPTO_REPLIES, REPLY_TO_HEADER
from crypto_node import CryptoService, Hsm, ibm3624, init_keys, load_crypto_keys, replay_marks_path
from crypto_node.keys import CryptoKeys
from crypto_node.pvk import Pvk
from crypto_node.replay import ReplayGuard, ReplayMarks
from host_node.pin_client import PinClient

CARD = "6200010100000018"
PIN = "123456"
TERMINALS = 16


class Pads:
    """PIN pads of the data directory's branches, taking turns, each past its ``history``."""

    def __init__(self, keys: CryptoKeys, branches: list[str], pads: int, history: int) -> None:
        ids = [(b, f"{t:02d}") for b in branches for t in range(1, TERMINALS + 1)][:pads]
        loaded = [keys.pinpad_key(branch, terminal) for branch, terminal in ids]
        self.ids = [initial_key_id for initial_key_id, _ in loaded]
        self.derivations = [KeyDerivation(key, initial_key_id) for initial_key_id, key in loaded]
        self.counters = [history] * len(ids)
        self._turns = itertools.cycle(range(len(ids)))

    def seed(self, path: Path, history: int) -> None:
        """Write marks as if each pad had used its first ``history`` counters."""
        guard = ReplayGuard()
        for pad in self.ids:
            for counter in range(1, history + 1):
                guard.record(Ksn(pad, counter), os.urandom(16))
        ReplayMarks(path).save(guard)

    def blocks(self) -> Iterator[EncryptedPin]:
        for pad in self._turns:
            self.counters[pad] = counter = next_counter(self.counters[pad])
            key = self.derivations[pad].pin_key(counter)
            block = encipher_format4(key, PIN, CARD).hex().upper()
            yield EncryptedPin(pin_block=block, ksn=str(Ksn(self.ids[pad], counter)))


class _Handed(Delivery):
    def __init__(self, body: bytes, headers: Mapping[str, object]) -> None:
        self.body, self.headers = body, headers
        self.exchange, self.routing_key, self.queue, self.redelivered = "", "", "", False

    async def ack(self) -> None:
        pass

    async def nack(self, *, requeue: bool = True) -> None:
        raise AssertionError("nacked")


class _Subscription(Subscription):
    async def cancel(self) -> None:
        pass


class HandingBus(Bus):
    """A bus that hands each published message to ``on_publish`` (no broker, no copies)."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.on_publish: Callable[[Message], Any] | None = None

    async def connect(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def declare(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def publish(self, messages: Sequence[Message]) -> None:
        for message in messages:
            if self.on_publish is not None:
                self.on_publish(message)

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> Subscription:
        self.handlers[queue] = handler
        return _Subscription()

    async def queue_stats(self, queue: str) -> QueueStats:
        return QueueStats(queue, 0, 1)


def _commands(
    ids: Iterator[str], blocks: Iterator[EncryptedPin], value: str, size: int
) -> list[VerifyPin]:
    commands = []
    for _ in range(size):
        command_id = next(ids)
        commands.append(
            VerifyPin(
                command_id=command_id,
                pan=CARD,
                pin=next(blocks),
                verification_value=value,
                binding=f"0001-{command_id}",
            )
        )
    return commands


async def in_process(
    data_dir: Path, pads: Pads, value: str, sizes: list[int], commands: int, repeat: int
) -> dict[str, Any]:
    """CPU µs per command: the crypto service's handler, and ``PinClient.execute``."""
    keys = load_crypto_keys(data_dir)
    commands = max(commands, 2000)
    bus = HandingBus()
    hsm = Hsm(keys, replay_file=data_dir / "in-process" / "marks.json")
    # As `branchnet crypto` runs it (a version before INLINE_COMMANDS ran every batch in a thread).
    inline = getattr(crypto_node.service, "INLINE_COMMANDS", None)
    service = CryptoService(bus, hsm, **({} if inline is None else {"inline_commands": inline}))
    await service.start()
    handle = bus.handlers[CRYPTO_COMMANDS]
    headers = {REPLY_TO_HEADER: HOST_CRYPTO_REPLIES}
    blocks, ids = pads.blocks(), (f"p{n}" for n in itertools.count())
    # The host's side: answered at once with canned responses, as the crypto node would.
    client_bus = HandingBus()
    client = PinClient(client_bus, timeout_s=10.0)
    await client.start()
    answer = client_bus.handlers[HOST_CRYPTO_REPLIES]
    sequence = itertools.count()
    answering: set[asyncio.Future[None]] = set()

    def respond(message: Message) -> None:
        frame_records = message.body.split(b"\n")[1:]
        records = [
            PIN_RESPONSE_ADAPTER.dump_json(
                PinResponse(command_id=orjson_id(record), error=HsmError.OK)
            )
            for record in frame_records
        ]
        reply = build_frame(FrameKind.PIN_RESPONSE, "crypto", next(sequence), records)
        task = asyncio.ensure_future(answer(_Handed(encode_frame(reply), {})))
        answering.add(task)
        task.add_done_callback(answering.discard)

    client_bus.on_publish = respond
    figures: dict[str, Any] = {}
    try:
        for size in sizes:
            frames = max(1, commands // size)
            service_cpu, client_cpu = [], []
            for _ in range(repeat):
                batches = [_commands(ids, blocks, value, size) for _ in range(frames)]
                bodies = [
                    encode_frame(
                        build_frame(
                            FrameKind.PIN_COMMAND,
                            "host",
                            n,
                            [c.__pydantic_serializer__.to_json(c) for c in batch],
                        )
                    )
                    for n, batch in enumerate(batches)
                ]
                started = time.process_time()
                for body in bodies:
                    await handle(_Handed(body, headers))
                service_cpu.append((time.process_time() - started) / (frames * size) * 1e6)
                client_ids = client.command_ids()
                batches = [
                    [c.model_copy(update={"command_id": next(client_ids)}) for c in batch]
                    for batch in batches
                ]
                started = time.process_time()
                for batch in batches:
                    await client.execute(batch)
                client_cpu.append((time.process_time() - started) / (frames * size) * 1e6)
            figures[str(size)] = {
                "crypto_service_cpu_us_per_command": round(min(service_cpu), 1),
                "pin_client_cpu_us_per_command": round(min(client_cpu), 1),
            }
    finally:
        await client.stop()
        await service.stop()
    return figures


def orjson_id(record: bytes) -> str:
    """A command record's id (the bench's ids never need escaping)."""
    return record.split(b'"command_id":"', 1)[1].split(b'"', 1)[0].decode()


async def _wait_for_consumer(bus: Bus, node: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while (await bus.queue_stats(CRYPTO_COMMANDS)).consumers == 0:
        if node.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the crypto node did not start")
        await asyncio.sleep(0.1)


async def _round_trips(
    client: PinClient, blocks: Iterator[EncryptedPin], value: str, size: int, rounds: int
) -> list[float]:
    ids = client.command_ids()
    times = []
    for _ in range(rounds):
        commands = _commands(ids, blocks, value, size)
        started = time.perf_counter()
        answers = await client.execute(commands)
        times.append(time.perf_counter() - started)
        wrong = [a for a in answers.values() if a is None or a.error is not HsmError.OK]
        if wrong:
            raise SystemExit(f"{len(wrong)} commands not answered 00: {wrong[:1]}")
    return times


def _percentile(times: list[float], fraction: float) -> float:
    ordered = sorted(times)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000, 2)


async def round_trips(
    args: argparse.Namespace, data_dir: Path, amqp_url: str, pads: Pads, value: str
) -> dict[str, Any]:
    """Per batch size: wall p50/p90/mean of each run, crypto and client CPU per command."""
    env = dict(os.environ)
    env.update(
        BRANCHNET_AMQP_URL=amqp_url,
        BRANCHNET_DATA_DIR=str(data_dir),
        BRANCHNET_LOG_LEVEL=os.environ.get("BRANCHNET_LOG_LEVEL", "warning"),
    )
    log = (data_dir / "crypto.log").open("ab")
    node = subprocess.Popen(
        [sys.executable, "-m", "branchnet.cli", "crypto"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    bus = open_bus(amqp_url, embedded=None, name="bench-pinpath")
    results: dict[str, Any] = {}
    try:
        await bus.connect()
        await bus.declare(CORE)
        await _wait_for_consumer(bus, node)
        client = PinClient(bus, timeout_s=10.0)
        await client.start()
        blocks = pads.blocks()
        await _round_trips(client, blocks, value, 4, 20)  # warm up both ends
        for size in args.sizes:
            runs = []
            rounds = max(args.rounds, -(-args.commands // size))
            for _ in range(args.repeat):
                cpu_before = cpu_s(node.pid) or 0.0
                client_before = time.process_time()
                times = await _round_trips(client, blocks, value, size, rounds)
                commands = size * rounds
                runs.append(
                    {
                        "p50_ms": _percentile(times, 0.5),
                        "p90_ms": _percentile(times, 0.9),
                        "mean_ms": round(statistics.fmean(times) * 1000, 2),
                        "crypto_cpu_us_per_command": round(
                            ((cpu_s(node.pid) or 0.0) - cpu_before) / commands * 1e6, 1
                        ),
                        "client_cpu_us_per_command": round(
                            (time.process_time() - client_before) / commands * 1e6, 1
                        ),
                    }
                )
            results[str(size)] = {
                "p50_ms": [r["p50_ms"] for r in runs],
                "p90_ms": [r["p90_ms"] for r in runs],
                "mean_ms": [r["mean_ms"] for r in runs],
                "crypto_cpu_us_per_command": min(r["crypto_cpu_us_per_command"] for r in runs),
                "client_cpu_us_per_command": min(r["client_cpu_us_per_command"] for r in runs),
            }
        await client.stop()
    finally:
        await bus.close()
        node.terminate()
        try:
            node.wait(20)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
        log.close()
    return results


async def run(args: argparse.Namespace, data_dir: Path, amqp_url: str | None) -> dict[str, Any]:
    branches = [f"{n:04d}" for n in range(1, -(-args.pads // TERMINALS) + 1)]
    init_keys(data_dir, branches, TERMINALS)
    keys = load_crypto_keys(data_dir)
    pads = Pads(keys, branches, args.pads, args.history)
    pads.seed(replay_marks_path(data_dir), args.history)
    pads.seed(data_dir / "in-process" / "marks.json", args.history)
    value = ibm3624.generate_offset(
        Pvk(keys.pvk), keys.decimalization_table, ibm3624.validation_data(CARD), PIN
    )
    report: dict[str, Any] = {
        "rounds": args.rounds,
        "repeat": args.repeat,
        "pads": len(pads.ids),
        "history": args.history,
        "marks_file_bytes_at_start": replay_marks_path(data_dir).stat().st_size,
    }
    if amqp_url is not None:
        report["round_trips"] = await round_trips(args, data_dir, amqp_url, pads, value)
    report["in_process"] = await in_process(
        data_dir, pads, value, args.sizes, args.commands, args.repeat
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="a RabbitMQ (default: a private one)")
    parser.add_argument(
        "--in-process-only", action="store_true", help="no broker: the in_process figures only"
    )
    parser.add_argument("--sizes", default="1,4,16,64", help="commands per batch (1,4,16,64)")
    parser.add_argument("--rounds", type=int, default=60, help="batches per run (60)")
    parser.add_argument("--commands", type=int, default=600, help="least per run (600)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per batch size (3)")
    parser.add_argument("--pads", type=int, default=64, help="PIN pads taking turns (64)")
    parser.add_argument("--history", type=int, default=64, help="counters used per pad (64)")
    args = parser.parse_args()
    args.sizes = [int(size) for size in args.sizes.split(",")]
    configure_logging("warning")  # as the crypto node runs
    data_dir = Path(tempfile.mkdtemp(prefix="branchnet-pinpath-"))
    try:
        with contextlib.ExitStack() as stack:
            amqp_url = args.url
            if amqp_url is None and not args.in_process_only:
                from branchnet.broker import private_broker

                node = stack.enter_context(private_broker("branchnet-pinpath-rabbitmq-"))
                amqp_url = node.amqp_url
            print(json.dumps(asyncio.run(run(args, data_dir, amqp_url)), indent=1))
    finally:
        if not os.environ.get("PINPATH_KEEP"):
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
