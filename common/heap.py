"""The garbage collector of a long-running node process.

A node's heap is mostly what it built to start (modules, schemas, keys, connections: about
100,000 objects) and short-lived per-batch objects that reference counting frees. CPython's
collector still scans the start-up objects in every full collection: in a host under load that
was one 55 to 95 ms stop of the event loop every ~6 s, each freeing nothing, a stall every
request in flight waited out. :func:`settle` moves the start-up heap out of the collector's
sight and lets the youngest generation grow larger between collections (fewer, no longer
pauses: most young objects are gone by then).
"""

from __future__ import annotations

import gc

#: Allocations (net of frees) between young collections; CPython's default is 700.
YOUNG_THRESHOLD = 10_000
#: Young collections per middle one, middle per full one (CPython's defaults: 10, 10).
OLDER_THRESHOLD = 20


def settle() -> None:
    """Collect once and freeze what is left, then collect less often. For a process's main
    entry, once its node has started: objects alive now are never collected (nor scanned)
    afterwards, so not for a process that will drop much of what it holds now (a test run)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
