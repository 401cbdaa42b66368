from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from common.results import ResultCode
from host_node.journal import (
    GENESIS_HASH,
    ChainHead,
    JournalEntry,
    Origin,
    decode_entry,
    entry_body,
    head_of,
    record_hash,
    seal,
    verify_chain,
)
from host_node.ledger import Posting
from tests.host_node.fakes import T0

ORIGIN = Origin(
    request_id="0001-01-0000000001",
    branch_id="0001",
    teller_id="T07",
    terminal_id="01",
    origin_time=T0,
    received_at=T0 + dt.timedelta(milliseconds=3),
    unpacked_at=T0 + dt.timedelta(milliseconds=4),
    record_hash=record_hash(b'{"kind":"deposit"}'),
)


def chain(length: int) -> list[JournalEntry]:
    entries, head = [], ChainHead()
    for n in range(length):
        entry = seal(
            head,
            ORIGIN,
            kind="deposit",
            subject="620001******0011",
            processed_at=T0 + dt.timedelta(seconds=n),
            postings=(Posting("6200010100000011", 100 + n), Posting("CASH-0001", -100 - n)),
            result=ResultCode.APPROVED,
            reason="approved",
        )
        entries.append(entry)
        head = head_of(entry)
    return entries


def test_a_chain_starts_at_genesis_and_verifies() -> None:
    entries = chain(4)
    assert entries[0].prev_hash == GENESIS_HASH and [e.seq for e in entries] == [1, 2, 3, 4]
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert verify_chain(entries) is None
    assert verify_chain(entries[2:], head_of(entries[1])) is None


def test_a_changed_entry_breaks_the_chain() -> None:
    entries = chain(3)
    postings = (Posting("6200010100000011", 9_999), Posting("CASH-0001", -9_999))
    forged = replace(entries[1], postings=postings)
    assert verify_chain([entries[0], forged, entries[2]]) == "entry 2 does not match its hash"


def test_a_resealed_entry_no_longer_links() -> None:
    entries = chain(3)
    resealed = replace(entries[1], result=ResultCode.WRONG_PIN, hash="f" * 64)
    assert verify_chain([entries[0], resealed, entries[2]]) is not None
    assert verify_chain([entries[0], entries[2]]) == "entry 3 follows entry 1"


def test_the_hash_covers_the_previous_hash() -> None:
    kwargs = {
        "kind": "balance",
        "subject": "",
        "processed_at": T0,
        "postings": (),
        "result": ResultCode.APPROVED,
        "reason": "approved",
    }
    one = seal(ChainHead(), ORIGIN, **kwargs)  # type: ignore[arg-type]
    other = seal(ChainHead(0, "1" * 64), ORIGIN, **kwargs)  # type: ignore[arg-type]
    assert one.hash != other.hash


postings = st.lists(
    st.tuples(st.text(min_size=1, max_size=20), st.integers(-(10**12), 10**12)), max_size=4
)


@given(
    postings=postings,
    reason=st.text(max_size=80),
    origin_time=st.none() | st.datetimes(timezones=st.none() | st.just(dt.UTC)),
)
def test_the_stored_body_decodes_to_the_same_entry(
    postings: list[tuple[str, int]], reason: str, origin_time: dt.datetime | None
) -> None:
    origin = replace(ORIGIN, origin_time=origin_time)
    entry = seal(
        ChainHead(7, "a" * 64),
        origin,
        kind="transfer",
        subject="x",
        processed_at=T0,
        postings=[Posting(a, n) for a, n in postings],
        result=ResultCode.INSUFFICIENT_FUNDS,
        reason=reason,
    )
    assert entry.body == entry_body(entry)
    decoded = decode_entry(entry.body, entry.hash)
    assert decoded == entry and decoded.body == entry.body
    assert verify_chain([decoded], ChainHead(7, "a" * 64)) is None
