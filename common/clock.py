"""The simulation clock: the host's idea of "now", run faster than the wall or moved by hand.

Rules that count calendar days (appointments the day before, daily limits, daily interest)
need days to pass in a run of seconds. A :class:`SimulationClock` starts at a chosen moment and
advances ``rate`` simulated seconds per wall second, plus whatever :meth:`advance` adds; it
never goes backwards.
"""

from __future__ import annotations

import datetime as dt
import threading
import time


class SimulationClock:
    """A monotonic simulated clock.

    Args:
        start: the simulated moment at creation (timezone-aware).
        rate: simulated seconds per wall-clock second (0: moves only by :meth:`advance`).
    """

    def __init__(self, start: dt.datetime, rate: float = 1.0) -> None:
        if start.tzinfo is None:
            raise ValueError("the simulation clock needs a timezone-aware start")
        if rate < 0:
            raise ValueError("rate must not be negative")
        self.start = start
        self.rate = rate
        self._wall = time.monotonic()
        self._offset = dt.timedelta()
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self._lock:
            elapsed = (time.monotonic() - self._wall) * self.rate
            return self.start + self._offset + dt.timedelta(seconds=elapsed)

    def __call__(self) -> dt.datetime:
        return self.now()

    def advance(self, delta: dt.timedelta) -> dt.datetime:
        """Move the clock forward by ``delta``; the new now."""
        if delta < dt.timedelta():
            raise ValueError("the clock does not go backwards")
        with self._lock:
            self._offset += delta
        return self.now()
