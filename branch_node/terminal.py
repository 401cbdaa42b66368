"""A counter terminal: a teller, a PIN pad and the workload, one request at a time.

The terminal turns the workload's next :class:`~branch_node.workload.Intent` into a request
record (a fresh request id, the customer's PIN encrypted by the pad against the card number),
submits it, waits for the host's reply, lets the model learn from it and records an
:class:`Outcome`. That is how a counter works: a teller serves one customer at a time; the
branch gets its concurrency from many terminals.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from branch_node.errors import RequestTimeout
from branch_node.state import BranchState, Counter
from branch_node.workload import Intent, WorkloadModel
from common.authorisation import StaffKey
from common.ids import request_id
from common.replies import Reply
from common.requests import (
    Balance,
    ChangePin,
    CloseAccount,
    CustomerQuery,
    Deposit,
    EncryptedPin,
    IdDocument,
    OpenAccount,
    RequestBase,
    Transfer,
    Withdraw,
)

#: The result recorded for a request that was never answered.
TIMEOUT = "timeout"
#: Why the workload's staff look a customer's account up.
QUERY_PURPOSE = "customer enquiry at the counter"


class PinEncryptor(Protocol):
    """What a terminal needs of its PIN pad (``branch_node.pinpad.PinPad``)."""

    @property
    def counter(self) -> int:
        """The last DUKPT transaction counter used (0 before the first PIN)."""
        ...

    @property
    def next_counter(self) -> int:
        """The counter the next :meth:`encrypt` will use."""
        ...

    def encrypt(self, pin: str, pan: str) -> EncryptedPin: ...


class Submitter(Protocol):
    async def submit(self, request: RequestBase) -> Reply: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one request, as the terminal saw it.

    ``result`` is the reply's two-character code, or ``"timeout"``. ``amount`` is the money
    the reply says moved; ``cash_in`` / ``cash_out`` the counter cash an approved request took
    in (deposits, opening deposits) or paid out (withdrawals, close-account payouts).
    ``expected`` is what the workload model predicted.
    """

    request_id: str
    kind: str
    result: str
    amount: int
    cash_in: int
    cash_out: int
    account: str
    latency_s: float
    sent_at: dt.datetime
    expected: str


def teller_id(branch_id: str, terminal_id: str) -> str:
    """The teller staffing a terminal: ``T`` + branch id + terminal id."""
    return f"T{branch_id}{terminal_id}"


class Terminal:
    """One counter position of a branch."""

    def __init__(
        self,
        branch_id: str,
        terminal_id: str,
        *,
        pad: PinEncryptor,
        model: WorkloadModel,
        client: Submitter,
        state: BranchState,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        supervisor: StaffKey | None = None,
    ) -> None:
        self.branch_id = branch_id
        self.terminal_id = terminal_id
        self.teller_id = teller_id(branch_id, terminal_id)
        #: The branch supervisor who signs what a teller alone may not do (None: nobody).
        self.supervisor = supervisor
        self.pad = pad
        self.model = model
        self._client = client
        self._state = state
        self._clock = clock

    async def serve(self) -> Outcome:
        """Serve the next customer: build, submit, await, learn, record."""
        intent = self.model.next_intent()
        request = self.build(intent)
        started = time.perf_counter()
        try:
            reply: Reply | None = await self._client.submit(request)
        except RequestTimeout:
            reply = None
        except BaseException:
            self.model.observe(intent, None)  # whatever it did is in doubt now
            raise
        latency = time.perf_counter() - started
        self.model.observe(intent, reply)
        return outcome_of(intent, request, reply, latency)

    def build(self, intent: Intent) -> RequestBase:
        """The request record for ``intent``, with a fresh request id and encrypted PINs."""
        sequence = self._state.take(self.terminal_id, Counter.SEQUENCE)
        base: dict[str, Any] = {
            "request_id": request_id(self.branch_id, self.terminal_id, sequence),
            "branch_id": self.branch_id,
            "teller_id": self.teller_id,
            "terminal_id": self.terminal_id,
            "origin_time": self._clock(),
            "account": intent.account,
        }
        kind = intent.kind
        if kind == "open_account":
            assert intent.id_number is not None and intent.customer is not None
            return OpenAccount(
                **base,
                customer_name=intent.customer.name,
                id_document=IdDocument(id_type="resident_id", number=intent.id_number),
                pin=self._encrypt(intent.pin, intent.account) if intent.pin else None,
                initial_deposit=intent.amount or 0,
            )
        if kind == "deposit":
            return Deposit(**base, amount=_amount(intent))
        if kind == "customer_query":
            query = CustomerQuery(**base, purpose=QUERY_PURPOSE)
            if intent.supervised and self.supervisor is not None:
                return self.supervisor.authorise(query)
            return query
        pin = self._encrypt(intent.pin, intent.account)
        if kind == "withdraw":
            shown = intent.id_number
            document = IdDocument(id_type="resident_id", number=shown) if shown else None
            return Withdraw(**base, amount=_amount(intent), pin=pin, withdrawer=document)
        if kind == "transfer":
            assert intent.to_account is not None
            return Transfer(**base, to_account=intent.to_account, amount=_amount(intent), pin=pin)
        if kind == "balance":
            return Balance(**base, pin=pin)
        if kind == "change_pin":
            new_pin = self._encrypt(intent.new_pin, intent.account)
            return ChangePin(**base, pin=pin, new_pin=new_pin)
        if kind == "close_account":
            return CloseAccount(**base, pin=pin)
        raise ValueError(f"the workload asked for an unknown kind {kind!r}")

    def _encrypt(self, pin: str | None, pan: str) -> EncryptedPin:
        if pin is None:
            raise ValueError(f"{self.terminal_id}: a PIN request for an account without a PIN")
        # Reserve the KSN counter durably before the pad uses it: a crash must not reuse it.
        self._state.cover(self.terminal_id, Counter.KSN, self.pad.next_counter)
        return self.pad.encrypt(pin, pan)

    def record_position(self) -> None:
        """Tell the state how far the pad's KSN counter got (before a clean close)."""
        self._state.advance(self.terminal_id, Counter.KSN, self.pad.counter)


def _amount(intent: Intent) -> int:
    if intent.amount is None:
        raise ValueError(f"a {intent.kind} without an amount")
    return intent.amount


def outcome_of(
    intent: Intent, request: RequestBase, reply: Reply | None, latency_s: float
) -> Outcome:
    """The :class:`Outcome` of one request from its intent, record and reply (None: timeout)."""
    moved = 0
    cash_in = cash_out = 0
    if reply is not None and reply.approved:
        moved = reply.amount if reply.amount is not None else intent.amount or 0
        cash_in = moved if intent.cash_in else 0
        cash_out = moved if intent.cash_out else 0
    return Outcome(
        request_id=request.request_id,
        kind=intent.kind,
        result=str(reply.result) if reply is not None else TIMEOUT,
        amount=moved,
        cash_in=cash_in,
        cash_out=cash_out,
        account=intent.account,
        latency_s=latency_s,
        sent_at=request.origin_time,
        expected=str(intent.expect),
    )
