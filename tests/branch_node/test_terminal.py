"""A terminal: requests built right, PINs encrypted under reserved KSNs, outcomes recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from branch_node.errors import BranchNotRegistered, RequestTimeout
from branch_node.state import BranchState, Counter
from branch_node.terminal import TIMEOUT, Terminal
from branch_node.workload import WorkloadConfig, WorkloadModel
from common.ids import card_number
from common.replies import Reply
from common.requests import (
    REQUEST_ADAPTER,
    ChangePin,
    EncryptedPin,
    OpenAccount,
    RequestBase,
    decode_request,
    encode_request,
)
from common.results import ResultCode
from tests.branch_node.fakes import FakeBank, FakePinPad


class BankCounter:
    """Submits straight to a fake bank; can be told to time out or fail."""

    def __init__(self, bank: FakeBank) -> None:
        self.bank = bank
        self.requests: list[RequestBase] = []
        self.failure: Exception | None = None

    async def submit(self, request: RequestBase) -> Reply:
        self.requests.append(request)
        if self.failure is not None:
            raise self.failure
        return self.bank.answer(REQUEST_ADAPTER.validate_python(request))


def _terminal(tmp_path: Path, bank: FakeBank, *, block: int = 1000) -> tuple[Terminal, BankCounter]:
    state = BranchState.open(tmp_path, "0001", block=block)
    serials = iter(range(1, 10_000))
    model = WorkloadModel(1, WorkloadConfig(), lambda: card_number("0001", "02", next(serials)))
    counter = BankCounter(bank)
    pad = FakePinPad(state.peek("02", Counter.KSN))
    return Terminal("0001", "02", pad=pad, model=model, client=counter, state=state), counter


async def test_requests_are_valid_records_with_sequential_ids(tmp_path: Path) -> None:
    terminal, counter = _terminal(tmp_path, FakeBank())
    for _ in range(300):
        await terminal.serve()
    ids = [r.request_id for r in counter.requests]
    assert ids[:2] == ["0001-02-0000000001", "0001-02-0000000002"]
    assert len(set(ids)) == 300
    for request in counter.requests:
        decoded = decode_request(encode_request(request), branch_id="0001")
        assert decoded == request  # the host decodes exactly what was sent
        assert request.teller_id == "T000102" and request.terminal_id == "02"


async def test_pins_are_encrypted_by_the_pad_for_the_card(tmp_path: Path) -> None:
    terminal, counter = _terminal(tmp_path, FakeBank())
    for _ in range(300):
        await terminal.serve()
    openings = [r for r in counter.requests if isinstance(r, OpenAccount)]
    assert any(r.pin is not None for r in openings)
    changes = [r for r in counter.requests if isinstance(r, ChangePin)]
    assert changes and all(r.pin.ksn != r.new_pin.ksn for r in changes)
    pad = terminal.pad
    assert isinstance(pad, FakePinPad)
    ksns = [int(r.ksn[-8:], 16) for q in counter.requests for r in _pins(q)]
    assert ksns == pad.used and len(set(ksns)) == len(ksns)


def _pins(request: RequestBase) -> list[EncryptedPin]:
    found = (getattr(request, "pin", None), getattr(request, "new_pin", None))
    return [pin for pin in found if isinstance(pin, EncryptedPin)]


async def test_a_ksn_is_reserved_on_disk_before_the_pad_uses_it(tmp_path: Path) -> None:
    terminal, _ = _terminal(tmp_path, FakeBank(), block=5)
    for _ in range(200):
        await terminal.serve()
    # a crash now: the reloaded state resumes the pad past every counter it used
    assert BranchState.open(tmp_path, "0001").peek("02", Counter.KSN) >= terminal.pad.counter


async def test_outcomes_record_the_cash_each_approval_moved(tmp_path: Path) -> None:
    bank = FakeBank()
    terminal, _ = _terminal(tmp_path, bank)
    outcomes = [await terminal.serve() for _ in range(1000)]
    assert sum(o.cash_in - o.cash_out for o in outcomes) == bank.cash
    assert all(o.cash_in == 0 and o.cash_out == 0 for o in outcomes if o.result != "00")
    assert all(o.cash_in == o.cash_out == 0 for o in outcomes if o.kind == "transfer")
    assert any(o.cash_out > 0 for o in outcomes if o.kind == "close_account")
    assert all(o.result == o.expected for o in outcomes)
    assert all(o.latency_s >= 0 and o.sent_at.tzinfo is not None for o in outcomes)


async def test_a_timeout_is_an_outcome_and_the_terminal_goes_on(tmp_path: Path) -> None:
    terminal, counter = _terminal(tmp_path, FakeBank())
    await terminal.serve()
    counter.failure = RequestTimeout("0001-02-0000000002", 4)
    outcome = await terminal.serve()
    assert outcome.result == TIMEOUT and outcome.amount == 0
    counter.failure = None
    assert (await terminal.serve()).result in {c.value for c in ResultCode}


async def test_a_fatal_error_propagates_without_wedging_the_model(tmp_path: Path) -> None:
    terminal, counter = _terminal(tmp_path, FakeBank())
    counter.failure = BranchNotRegistered("0001")
    with pytest.raises(BranchNotRegistered):
        await terminal.serve()
    counter.failure = None
    await terminal.serve()  # the model was told the outcome is unknown
