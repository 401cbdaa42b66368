"""The Jepsen-style check of every request after a fault-injection run.

Each request a terminal sent falls in exactly one class:

- ``ok``: answered, and the journal holds exactly one entry for it with the same result;
- ``lost``: answered, but the journal has no entry for it or one with another result
  (an approval the bank cannot show is money lost);
- ``duplicated``: the journal holds more than one entry for it (applied twice);
- ``unknown_resolved``: never answered, and the journal says what became of it (one entry,
  or none while nothing is left in flight: it was never applied and never will be);
- ``unknown_unresolved``: never answered and not decidable (requests may still be in flight).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from branch_node import Outcome
from host_node import JournalSummary

CLASSES = ("ok", "lost", "duplicated", "unknown_resolved", "unknown_unresolved")
_EXAMPLES = 5


@dataclass(slots=True)
class Verdict:
    """Counts per class, with a few request ids of each failing class as examples."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not any(self.counts[name] for name in ("lost", "duplicated", "unknown_unresolved"))

    def add(self, name: str, request_id: str) -> None:
        self.counts[name] += 1
        if name not in ("ok", "unknown_resolved"):
            shown = self.examples.setdefault(name, [])
            if len(shown) < _EXAMPLES:
                shown.append(request_id)


def classify(
    outcomes: Iterable[Outcome], journal: Mapping[str, JournalSummary], *, drained: bool
) -> Verdict:
    """Sort every request into one class.

    Args:
        outcomes: what the terminals saw, one per request (a retry is the same request).
        journal: the host's journal by request id (``host_node.journal_index``).
        drained: True when no request can still be in flight (queues empty, nodes idle).
    """
    verdict = Verdict()
    for outcome in outcomes:
        summary = journal.get(outcome.request_id)
        if summary is not None and summary.entries > 1:
            verdict.add("duplicated", outcome.request_id)
        elif outcome.result != "timeout":
            agrees = summary is not None and summary.result == outcome.result
            verdict.add("ok" if agrees else "lost", outcome.request_id)
        elif summary is not None or drained:
            verdict.add("unknown_resolved", outcome.request_id)
        else:
            verdict.add("unknown_unresolved", outcome.request_id)
    return verdict
