from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.pin_commands import ChangePinCommand, PinCommand, VerifyPin
from common.replies import encode_reply
from common.requests import Request, Transfer
from common.results import ResultCode
from host_node.batch import Defer, Echo, Mismatch, Remembered, Replay, Run, Snapshot, plan, settle
from host_node.journal import ChainHead
from host_node.ledger import Decision, Posting
from host_node.rules import _RULES, _transfer, pin_command
from tests.host_node.fakes import STAFF, T0, MemoryBank, Teller, account_no, item_of

A, B = account_no(1), account_no(2)


def command_ids() -> Iterator[str]:
    return (f"c{n}" for n in itertools.count())


def opened_bank(teller: Teller) -> MemoryBank:
    bank = MemoryBank()
    bank.run(
        [
            teller.open_account(A, deposit=10_000, pin=teller.pin("1234"), id_number="X1"),
            teller.open_account(B, deposit=500, pin=teller.pin("5678"), id_number="X2"),
        ]
    )
    return bank


def test_a_copy_in_the_same_batch_is_applied_once_and_answered_alike() -> None:
    teller = Teller()
    bank = opened_bank(teller)
    deposit = teller.deposit(A, 300)
    first, second = bank.run([deposit, deposit])
    assert first == second and first.result is ResultCode.APPROVED
    assert bank.balance(A) == 10_300
    assert [e.request_id for e in bank.journal].count(deposit.request_id) == 1


def test_a_retry_gets_the_stored_reply_without_a_pin_check() -> None:
    teller = Teller()
    bank = opened_bank(teller)
    withdraw = teller.withdraw(A, 1_000, teller.pin("1234"))
    (original,) = bank.run([withdraw])
    entries = len(bank.journal)
    snapshot = Snapshot(bank.known, bank.accounts, STAFF)
    planned = plan([item_of(withdraw)], snapshot, command_ids())
    assert planned.commands == () and planned.actions == (Replay(original),)
    (again,) = bank.run([withdraw])
    assert again == original
    assert (len(bank.journal), bank.balance(A)) == (entries, 9_000)


def test_same_id_with_other_content_is_94_and_keeps_the_original() -> None:
    teller = Teller()
    bank = opened_bank(teller)
    deposit = teller.deposit(A, 300)
    forged = deposit.model_copy(update={"amount": 30_000})
    original, refused, later = bank.run([deposit, forged, forged])
    assert original.result is ResultCode.APPROVED
    assert refused.result is later.result is ResultCode.DUPLICATE_MISMATCH
    assert refused.journal_seq != later.journal_seq
    assert bank.known[deposit.request_id].reply == original
    (retry,) = bank.run([forged])
    assert retry.result is ResultCode.DUPLICATE_MISMATCH
    assert bank.balance(A) == 10_300
    entries = [e for e in bank.journal if e.request_id == deposit.request_id]
    assert [e.result.value for e in entries] == ["00", "94", "94", "94"]


def test_refused_record_with_an_id_is_answered_journaled_and_remembered() -> None:
    bank = opened_bank(Teller())
    raw = (
        b'{"request_id":"0001-01-0000000099","branch_id":"0001","teller_id":"T1",'
        b'"terminal_id":"01","origin_time":"2026-01-05T09:30:00Z","kind":"deposit",'
        b'"account":"' + A.encode() + b'","amount":-5}'
    )
    first, copy = bank.run([raw, raw])
    assert first.result is ResultCode.INVALID_AMOUNT and copy == first
    (retry,) = bank.run([raw])
    assert retry == first
    assert [e.kind for e in bank.journal if e.request_id == first.request_id] == ["deposit"]
    assert bank.balance(A) == 10_000


def _due(request: Request, seconds: float) -> Request:
    """``request`` with a deadline ``seconds`` after T0."""
    return request.model_copy(update={"deadline": T0 + dt.timedelta(seconds=seconds)})


def test_a_request_taken_after_its_deadline_is_declined_68_and_applies_nothing() -> None:
    teller = Teller()
    bank = opened_bank(teller)
    bank.taken_at = T0
    entries = len(bank.journal)
    deposit = _due(teller.deposit(A, 300), -0.5)
    withdraw = _due(teller.withdraw(A, 1_000, teller.pin("1234")), -0.5)
    planned = plan(
        [item_of(withdraw)], Snapshot(bank.known, bank.accounts), command_ids(), taken_at=T0
    )
    assert planned.commands == ()  # no PIN check for a request nobody waits for
    late = bank.run([deposit, withdraw])
    assert [r.result for r in late] == [ResultCode.TOO_LATE] * 2
    assert all("deadline passed" in r.reason and r.balance is None for r in late)
    assert bank.balance(A) == 10_000
    journaled = bank.journal[entries:]
    assert [(e.request_id, e.result, e.postings) for e in journaled] == [
        (deposit.request_id, ResultCode.TOO_LATE, ()),
        (withdraw.request_id, ResultCode.TOO_LATE, ()),
    ]
    # a retry, however late, gets the stored decline and changes nothing
    bank.taken_at = T0 + dt.timedelta(hours=1)
    assert bank.run([deposit, withdraw]) == late
    assert (len(bank.journal), bank.balance(A)) == (entries + 2, 10_000)


def test_a_request_taken_by_its_deadline_or_without_one_is_applied() -> None:
    teller = Teller()
    bank = opened_bank(teller)
    bank.taken_at = T0
    in_time = _due(teller.deposit(A, 100), 0.5)
    on_the_dot = _due(teller.deposit(A, 20), 0)
    legacy = teller.deposit(A, 3)  # a branch that sends no deadline
    assert legacy.deadline is None
    replies = bank.run([in_time, on_the_dot, legacy])
    assert [r.result for r in replies] == [ResultCode.APPROVED] * 3
    assert bank.balance(A) == 10_123


def test_pin_requests_after_a_pin_change_wait_for_the_next_batch() -> None:
    teller = Teller()
    bank = opened_bank(teller)
    batch: list[Request] = [
        teller.change_pin(A, teller.pin("1234"), teller.pin("8888")),
        teller.withdraw(A, 100, teller.pin("1234")),
        teller.deposit(A, 50),
        teller.withdraw(B, 100, teller.pin("5678")),
        teller.withdraw(A, 100, teller.pin("8888")),
    ]
    snapshot = Snapshot(bank.known, bank.accounts, STAFF)
    planned = plan([item_of(r) for r in batch], snapshot, command_ids())
    assert [type(a) for a in planned.actions] == [Run, Defer, Defer, Run, Defer]
    assert [type(c) for c in planned.commands] == [ChangePinCommand, VerifyPin]
    replies = bank.run(batch)
    assert [r.result.value for r in replies] == ["00", "55", "00", "00", "00"]
    assert bank.balance(A) == 10_000 + 50 - 100


def test_copies_of_a_deferred_request_wait_with_it() -> None:
    teller = Teller()
    bank = opened_bank(teller)
    withdraw = teller.withdraw(A, 100, teller.pin("1234"))
    change = teller.change_pin(A, teller.pin("1234"), teller.pin("1111"))
    batch: list[Request] = [change, withdraw, withdraw]
    snapshot = Snapshot(bank.known, bank.accounts, STAFF)
    planned = plan([item_of(r) for r in batch], snapshot, command_ids())
    assert [type(a) for a in planned.actions] == [Run, Defer, Defer]
    _, first, copy = bank.run(batch)
    assert first == copy and first.result is ResultCode.WRONG_PIN


def test_plan_sorts_repeats() -> None:
    teller = Teller()
    deposit = teller.deposit(A, 1)
    forged = deposit.model_copy(update={"amount": 2})
    items = [item_of(r) for r in (deposit, deposit, forged)]
    planned = plan(items, Snapshot({}, {}), command_ids())
    assert planned.actions[1:] == (Echo(0), Mismatch())


PINS = ["1234", "2222"]
steps = st.lists(
    st.tuples(
        st.sampled_from(["deposit", "withdraw", "transfer", "balance", "change_pin", "close"]),
        st.sampled_from([A, B]),
        st.sampled_from(PINS),
        st.integers(min_value=1, max_value=4_000),
    ),
    max_size=30,
)


def _script(steps: list[tuple[str, str, str, int]]) -> list[Request]:
    teller = Teller(start=100)
    requests: list[Request] = [
        teller.open_account(A, deposit=5_000, pin=teller.pin("1234"), id_number="X1"),
        teller.open_account(B, deposit=5_000, pin=teller.pin("1234"), id_number="X2"),
    ]
    for kind, account, pin, amount in steps:
        other = B if account == A else A
        match kind:
            case "deposit":
                requests.append(teller.deposit(account, amount))
            case "withdraw":
                requests.append(teller.withdraw(account, amount, teller.pin(pin)))
            case "transfer":
                requests.append(teller.transfer(account, other, amount, teller.pin(pin)))
            case "balance":
                requests.append(teller.balance(account, teller.pin(pin)))
            case "change_pin":
                new = PINS[1 - PINS.index(pin)]
                requests.append(teller.change_pin(account, teller.pin(pin), teller.pin(new)))
            case _:
                requests.append(teller.close(account, teller.pin(pin)))
    return requests


def _outcome(reply: object) -> tuple[object, ...]:
    return tuple(getattr(reply, f) for f in ("result", "reason", "balance", "amount", "account"))


@settings(max_examples=80, deadline=None)
@given(steps=steps)
def test_one_batch_decides_like_one_request_at_a_time(
    steps: list[tuple[str, str, str, int]],
) -> None:
    requests = _script(steps)
    together, alone = MemoryBank(), MemoryBank()
    batched = together.run(requests)
    serial = [reply for request in requests for reply in alone.run([request])]
    assert [_outcome(r) for r in batched] == [_outcome(r) for r in serial]
    assert together.accounts == alone.accounts


def test_a_pin_change_whose_command_raises_is_declined_96_and_holds_nothing_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    teller = Teller()
    bank = opened_bank(teller)
    change = teller.change_pin(A, teller.pin("1234"), teller.pin("8888"))

    def buggy_command(request: Request, *args: Any) -> PinCommand | None:
        if request.request_id == change.request_id:
            raise KeyError("1234")  # the text of a defect may carry anything
        return pin_command(request, *args)

    monkeypatch.setattr("host_node.batch.pin_command", buggy_command)
    withdraw = teller.withdraw(A, 100, teller.pin("1234"))
    refused, taken = bank.run([change, withdraw])
    assert (refused.result, refused.reason) == (ResultCode.SYSTEM_ERROR, "unexpected: KeyError")
    assert taken.result is ResultCode.APPROVED and bank.deferrals == 0  # the old PIN still holds
    (entry,) = [e for e in bank.journal if e.request_id == change.request_id]
    assert entry.postings == () and bank.balance(A) == 10_000 - 100
    assert bank.known[change.request_id].reply == refused  # a retry gets the same answer


def test_a_rule_that_raises_declines_its_record_96_and_the_batch_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    teller = Teller()
    bank = opened_bank(teller)
    poison = teller.transfer(A, B, 700, teller.pin("1234"))

    def unbalanced(request: Transfer, *args: Any) -> Decision:
        if request.request_id == poison.request_id:  # postings that do not balance
            return Decision(ResultCode.APPROVED, "ok", (Posting(A, -700), Posting(B, 70)))
        return _transfer(request, *args)

    monkeypatch.setitem(_RULES, "transfer", unbalanced)
    batch: list[Request] = [
        teller.deposit(A, 10),
        poison,
        teller.transfer(A, B, 300, teller.pin("1234")),
    ]
    replies = bank.run(batch)
    assert [r.result.value for r in replies] == ["00", "96", "00"]
    assert replies[1].reason == "unexpected: ValueError"
    assert (bank.balance(A), bank.balance(B)) == (10_000 + 10 - 300, 500 + 300)
    assert sum(account.balance for account in bank.accounts.values()) == 0  # money conserved


def test_a_remembered_reply_is_encoded_once_as_the_store_and_standby_keep_it() -> None:
    teller = Teller()
    items = [item_of(teller.open_account(A, deposit=100)), item_of(teller.deposit(A, 5))]
    snapshot = Snapshot({}, {}, STAFF)
    planned = plan(items, snapshot, command_ids())
    settled = settle(items, planned, snapshot, {}, ChainHead(), lambda: T0)
    wire = [encode_reply(r).decode() for r in settled.replies if r is not None]
    assert [row.reply_json for row in settled.remembered] == wire
    row = settled.remembered[1]
    bare = Remembered(row.request_id, row.content_hash, row.reply)  # as decoded on a standby
    assert bare.json() == row.json() == wire[1] and bare == row
