"""A counter position worked by hand: one request at a time, any kind, as a teller keys it.

The workload's :class:`~branch_node.terminal.Terminal` serves simulated customers; a
:class:`Desk` serves a person (the teller console) or a script (the scenario library). It draws
request ids and card numbers from the branch's durable counters, encrypts every PIN on the
terminal's own PIN pad (the same :class:`~branch_node.pinpad.PinPad` as the simulated
terminals, KSN counter reserved before use) and submits through the branch's request client.
Where a teller alone may not act, the supervisor at the desk signs the request with their staff
key (``supervisor=``, :class:`~common.authorisation.StaffKey`) before it leaves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from branch_node.errors import BranchError
from branch_node.state import BranchState, Counter
from branch_node.terminal import PinEncryptor, Submitter, teller_id
from common.authorisation import StaffKey
from common.ids import card_number, request_id
from common.pinblock import PinBlockError
from common.replies import Reply
from common.requests import PIN_KINDS, REQUEST_ADAPTER, EncryptedPin, Request, Role

#: Kinds whose record carries a second PIN (the new one).
_NEW_PIN_KINDS = frozenset({"change_pin"})


class Desk:
    """One terminal of a branch, keyed by hand.

    Args:
        branch_id: the branch.
        terminal_id: the terminal (its PIN pad is ``pad``).
        pad: the terminal's PIN pad.
        client: the branch's request client.
        state: the branch's durable counters.
        teller: the staff id keying requests (default: the terminal's teller).
        role: the role that staff member acts in (the host checks it on its staff table).
        clock: origin time source.
    """

    def __init__(
        self,
        branch_id: str,
        terminal_id: str,
        *,
        pad: PinEncryptor,
        client: Submitter,
        state: BranchState,
        teller: str | None = None,
        role: Role = "teller",
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.branch_id = branch_id
        self.terminal_id = terminal_id
        self.teller_id = teller or teller_id(branch_id, terminal_id)
        self.role: Role = role
        self.pad = pad
        self._client = client
        self._state = state
        self._clock = clock

    def issue_card(self) -> str:
        """The next card (account) number from the terminal's card stock."""
        serial = self._state.take(self.terminal_id, Counter.CARD_SERIAL)
        return card_number(self.branch_id, self.terminal_id, serial)

    def request(
        self,
        kind: str,
        *,
        pin: str | None = None,
        new_pin: str | None = None,
        supervisor: StaffKey | None = None,
        **fields: Any,
    ) -> Request:
        """The request record for ``kind`` with ``fields``, PINs encrypted on the pad, signed
        by ``supervisor`` when given (their authorisation covers every field).

        Raises:
            BranchError: the fields do not make a valid request of that kind (the message
                names the field, never a value), or a PIN kind without a PIN.
        """
        account = fields.get("account")
        if not isinstance(account, str):
            raise BranchError(f"{kind}: an account number is required")
        if kind in PIN_KINDS and pin is None:
            raise BranchError(f"{kind}: the customer's PIN is required")
        if kind in _NEW_PIN_KINDS and new_pin is None:
            raise BranchError(f"{kind}: the new PIN is required")
        sequence = self._state.take(self.terminal_id, Counter.SEQUENCE)
        record: dict[str, Any] = {
            "kind": kind,
            "request_id": request_id(self.branch_id, self.terminal_id, sequence),
            "branch_id": self.branch_id,
            "teller_id": self.teller_id,
            "terminal_id": self.terminal_id,
            "origin_time": self._clock(),
            "role": self.role,
            **fields,
        }
        if pin is not None:
            record["pin"] = self._encrypt(pin, account)
        if new_pin is not None:
            record["new_pin"] = self._encrypt(new_pin, account)
        try:
            request = REQUEST_ADAPTER.validate_python(record)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'][1:]) or kind}: {e['msg']}"
                for e in error.errors(include_input=False, include_url=False)
            )
            raise BranchError(f"{kind}: {problems}") from None
        return supervisor.authorise(request) if supervisor is not None else request

    async def ask(
        self,
        kind: str,
        *,
        pin: str | None = None,
        new_pin: str | None = None,
        supervisor: StaffKey | None = None,
        **fields: Any,
    ) -> Reply:
        """Build, submit and await one request; the host's reply (or RequestTimeout)."""
        request = self.request(kind, pin=pin, new_pin=new_pin, supervisor=supervisor, **fields)
        return await self.submit(request)

    async def submit(self, request: Request) -> Reply:
        """Submit a request built by :meth:`request` and await the host's reply.

        Raises:
            RequestTimeout: no reply however often it was sent.
        """
        return await self._client.submit(request)

    def _encrypt(self, pin: str, pan: str) -> EncryptedPin:
        self._state.cover(self.terminal_id, Counter.KSN, self.pad.next_counter)
        try:
            return self.pad.encrypt(pin, pan)
        except PinBlockError as error:  # not a 4-12 digit PIN: no counter was used
            raise BranchError(f"PIN not accepted by the PIN pad: {error}") from None
