"""The collector settings a node process takes once started."""

from __future__ import annotations

import subprocess
import sys

_PROGRAM = """
import gc
from common.heap import OLDER_THRESHOLD, YOUNG_THRESHOLD, settle

kept = [[index] for index in range(50_000)]  # start-up objects: frozen, no longer scanned
cycle = [None]
cycle[0] = cycle  # garbage already: collected before the freeze, not frozen
del cycle
settle()
assert gc.get_freeze_count() >= 50_000, gc.get_freeze_count()
assert gc.get_threshold() == (YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
tracked = len(gc.get_objects())
assert tracked < 10_000, tracked  # a full collection now scans only what came since
later = [None]
later[0] = later  # cyclic garbage made after settling is still collected
del later
assert gc.collect() >= 1
print("ok")
"""


def test_settle_freezes_the_start_up_heap_and_still_collects_later_garbage() -> None:
    # its own interpreter: freezing this test process's heap would keep every test's objects
    run = subprocess.run(
        [sys.executable, "-c", _PROGRAM], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
