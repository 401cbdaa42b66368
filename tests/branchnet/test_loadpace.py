"""The open model's pace: records leave at their intended times, never early, within bounds."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import deque

import pytest

from branchnet.loadgen import PreparedRequest
from branchnet.loadpace import Pacer


def records(count: int) -> deque[PreparedRequest]:
    return deque(
        PreparedRequest(f"0001-01-{n}", "0001", "deposit", b"{", b"}") for n in range(count)
    )


class Sink:
    """Keeps what was sent: the record, its stamp, its intended time and when it left."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.sent: list[tuple[PreparedRequest, bytes, float, float]] = []
        self.fail_at = fail_at

    def send(self, prepared: PreparedRequest, stamp: bytes, intended: float) -> None:
        if len(self.sent) == self.fail_at:
            raise RuntimeError("the client is gone")
        self.sent.append((prepared, stamp, intended, self.loop.time()))


async def test_every_record_leaves_in_order_at_or_after_its_intended_time() -> None:
    sink = Sink()
    start = sink.loop.time() + 0.02
    pending = records(300)
    expected = list(pending)
    pacer = Pacer(
        pending, sink.send, lambda: 0, rate=3000.0, start=start, end=start + 5, max_in_flight=10**6
    )
    before = dt.datetime.now(dt.UTC)
    assert await asyncio.wait_for(pacer.run(), 5) == 300
    assert [p for p, *_ in sink.sent] == expected and not pending
    assert [intended for _, _, intended, _ in sink.sent] == [start + i / 3000 for i in range(300)]
    assert all(left >= intended for _, _, intended, left in sink.sent)
    stamps = {dt.datetime.fromisoformat(stamp[:-1].decode()) for _, stamp, _, _ in sink.sent}
    assert all(before <= stamp <= dt.datetime.now(dt.UTC) for stamp in stamps)


async def test_the_in_flight_bound_holds_records_back_until_the_end() -> None:
    sink = Sink()
    start = sink.loop.time()
    pacer = Pacer(
        records(100),
        sink.send,
        lambda: len(sink.sent),  # nothing is ever answered
        rate=10_000.0,
        start=start,
        end=start + 0.1,
        max_in_flight=7,
    )
    assert await asyncio.wait_for(pacer.run(), 5) == 7
    assert sink.loop.time() >= start + 0.1


async def test_a_failed_send_ends_the_run_with_its_error() -> None:
    sink = Sink(fail_at=5)
    start = sink.loop.time()
    pacer = Pacer(
        records(50), sink.send, lambda: 0, rate=5000.0, start=start, end=start + 5, max_in_flight=99
    )
    with pytest.raises(RuntimeError, match="the client is gone"):
        await asyncio.wait_for(pacer.run(), 5)
    assert pacer.sent == 5
