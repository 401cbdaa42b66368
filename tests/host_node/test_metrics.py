from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from host_node.metrics import observe_many

BUCKETS = (0.001, 0.01, 0.1, 1.0)


def samples(histogram: Histogram) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, sample.value)
        for family in histogram.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    ]


@pytest.mark.parametrize("amount", [0.0, 0.0005, 0.01, 0.5, 3.0])
@pytest.mark.parametrize("count", [1, 7])
def test_observe_many_records_what_as_many_observations_do(amount: float, count: int) -> None:
    registry = CollectorRegistry()
    many = Histogram("many_seconds", "h", buckets=BUCKETS, registry=registry)
    one_by_one = Histogram("one_by_one_seconds", "h", buckets=BUCKETS, registry=registry)
    observe_many(many, 0.002, 2)  # an earlier frame's
    observe_many(many, amount, count)
    for value in [0.002, 0.002] + [amount] * count:
        one_by_one.observe(value)
    expected = [
        (n.replace("one_by_one", "many"), labels, v) for n, labels, v in samples(one_by_one)
    ]
    # the sum may differ in the last bits: amount * count is not a running float sum
    assert samples(many) == [
        (n, labels, pytest.approx(v, rel=1e-12) if n.endswith("_sum") else v)
        for n, labels, v in expected
    ]
    assert ("many_seconds_count", {}, 2.0 + count) in samples(many)


def test_observe_many_on_a_labelled_parent_raises_as_observe_does() -> None:
    parent = Histogram("by_stage_seconds", "h", ["stage"], registry=CollectorRegistry())
    with pytest.raises(ValueError, match="missing label"):
        observe_many(parent, 0.1, 3)
