"""The open model's pace: each prepared record handed over at its intended send time.

Record *i* is due at ``start + i / rate`` whatever the system does; a wake sends every record
that is due (never one early), stamped with the wall time of the wake. The wakes are timer
callbacks on the event loop rather than a task that sleeps: at a thousand requests a second
the generator wakes about as often, and a timer costs a third less CPU than a task's sleep
(its future, its wake-up step), CPU the generator would take from the host it measures.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import deque
from collections.abc import Callable

from branchnet.loadgen import PreparedRequest, origin_stamp

#: Sends one record: (the record, its origin stamp, its intended send time on the loop's clock).
Send = Callable[[PreparedRequest, bytes, float], None]
#: Most records handed over in one wake when behind, before other work gets a turn.
BURST = 2048
#: The shortest wait between wakes (so a late loop does not spin).
MIN_WAIT_S = 0.0005
#: How long to wait while the in-flight bound holds the next record back.
BLOCKED_WAIT_S = 0.001


class Pacer:
    """Hands ``prepared`` to ``send`` at ``rate`` from ``start`` until ``end`` (loop time).

    Args:
        prepared: the records, in order; each is dropped once sent.
        send: hands one record over (may raise: the run then ends with that error).
        in_flight: how many records sent are still unanswered.
        max_in_flight: nothing more is sent while this many are unanswered.
    """

    def __init__(
        self,
        prepared: deque[PreparedRequest],
        send: Send,
        in_flight: Callable[[], int],
        *,
        rate: float,
        start: float,
        end: float,
        max_in_flight: int,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._prepared = prepared
        self._send = send
        self._in_flight = in_flight
        self._rate = rate
        self._start = start
        self._end = end
        self._max_in_flight = max_in_flight
        self._total = len(prepared)
        self._handle: asyncio.Handle | None = None
        #: Records sent so far.
        self.sent = 0
        self.finished: asyncio.Future[None] = self._loop.create_future()

    async def run(self) -> int:
        """Send until every record went or the end came; returns how many were sent."""
        self._handle = self._loop.call_at(self._start, self._wake)
        try:
            await self.finished
        finally:
            if self._handle is not None:
                self._handle.cancel()
        return self.sent

    def _wake(self) -> None:
        self._handle = None
        try:
            next_at = self._send_due()
        except Exception as error:  # a send failed: the run ends with its error
            self.finished.set_exception(error)
            return
        if next_at is None:
            self.finished.set_result(None)
        elif next_at == 0.0:
            self._handle = self._loop.call_soon(self._wake)
        else:
            self._handle = self._loop.call_at(next_at, self._wake)

    def _send_due(self) -> float | None:
        """Send what is due; returns when to wake next (0.0: at once; None: done)."""
        now = self._loop.time()
        sent, rate, start = self.sent, self._rate, self._start
        if sent >= self._total or now >= self._end:
            return None
        due = min(self._total, int((now - start) * rate) + 1)
        if due > sent:
            room = self._max_in_flight - self._in_flight()
            if room <= 0:
                return now + BLOCKED_WAIT_S
            stamp = origin_stamp(dt.datetime.now(dt.UTC))
            stop = min(due, sent + room, sent + BURST)
            popleft, send = self._prepared.popleft, self._send
            for index in range(sent, stop):
                send(popleft(), stamp, start + index / rate)
                self.sent = index + 1
            if stop < due:  # behind: let the clients and their replies run, then go on
                return 0.0
            if stop >= self._total:
                return None
        return max(start + self.sent / rate, now + MIN_WAIT_S)
