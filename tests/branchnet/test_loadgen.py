"""The load workload's records and the load recorder's buckets."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pytest

from branchnet.loadgen import LoadMix, LoadWorkload, origin_stamp, parse_mix
from branchnet.loadstats import _bucket
from common.requests import RecordError, Withdraw, decode_request
from crypto_node import init_keys


@pytest.fixture
def workload(tmp_path: Path) -> LoadWorkload:
    init_keys(tmp_path, ["0001"], 2)
    load = LoadWorkload(tmp_path, ["0001"], terminals=2, mix=parse_mix("simulate"), seed=7)
    load.opened([account for _, account in load.openings(3)])
    return load


def test_prepared_records_are_valid_requests_with_the_stamped_origin_time(
    workload: LoadWorkload,
) -> None:
    now = dt.datetime(2026, 5, 1, 8, 30, 15, 123456, tzinfo=dt.UTC)
    prepared = workload.build(400)
    requests = [decode_request(p.record(origin_stamp(now)), branch_id="0001") for p in prepared]
    assert not [r for r in requests if isinstance(r, RecordError)]
    assert {r.origin_time for r in requests if not isinstance(r, RecordError)} == {now}
    assert [p.request_id for p in prepared] == [
        r.request_id for r in requests if not isinstance(r, RecordError)
    ]
    assert len({p.request_id for p in prepared}) == 400
    kinds = Counter(p.kind for p in prepared)
    assert set(kinds) == {"deposit", "withdraw", "transfer", "balance", "change_pin"}


def test_a_ksn_is_never_reused_and_ids_continue_after_a_restart(tmp_path: Path) -> None:
    init_keys(tmp_path, ["0001"], 1)
    first = LoadWorkload(tmp_path, ["0001"], terminals=1, mix=parse_mix("withdraw"))
    first.opened([a for _, a in first.openings(2)])
    before = first.build(50)
    first.close()
    second = LoadWorkload(tmp_path, ["0001"], terminals=1, mix=parse_mix("withdraw"))
    second.opened([a for _, a in second.openings(2)])
    after = second.build(50)
    stamp = origin_stamp(dt.datetime.now(dt.UTC))
    records = [decode_request(p.record(stamp)) for p in before + after]
    ksns = [r.pin.ksn for r in records if isinstance(r, Withdraw)]
    assert len(set(ksns)) == len(ksns) == 100
    assert len({p.request_id for p in before + after}) == 100


def test_the_workload_never_types_a_third_wrong_pin_in_a_row(workload: LoadWorkload) -> None:
    workload.mix = LoadMix("wrong-heavy", (("withdraw", 1.0),), wrong_pin_rate=0.9)
    workload.build(300)
    assert all(account.wrong_in_a_row <= 2 for account in workload.accounts)


@pytest.mark.parametrize("text", ["lottery", "deposit=x", "deposit=-1", "open_account=1"])
def test_a_bad_mix_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_mix(text)


def test_a_custom_mix_weighs_the_kinds_named() -> None:
    mix = parse_mix("deposit=3, withdraw=1")
    assert dict(mix.weights) == {"deposit": 3.0, "withdraw": 1.0}


@pytest.mark.parametrize("us", [1, 7, 255, 256, 1000, 12_345, 987_654, 123_456_789])
def test_latency_buckets_stay_within_one_percent(us: int) -> None:
    assert abs(_bucket(us) - us) <= max(1, us * 0.008)
