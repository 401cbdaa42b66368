"""The load test's workload: accounts opened up front, then request records built in advance.

A load generator must not be the bottleneck it measures, so everything costly happens before
the clock runs: :meth:`LoadWorkload.openings` gives the account openings (sent untimed), and
:meth:`LoadWorkload.build` encodes the records of a run — request ids, PIN blocks under each
terminal's PIN pad (a fresh KSN each), JSON — leaving only the origin time to fill in when a
record is sent (:meth:`PreparedRequest.record`, one bytes join).

The workload believes what it sent: each account's PIN (changed by ``change_pin``) and its
wrong tries in a row, which it keeps below the lock-out. Request ids and KSN counters come from
the branches' durable :class:`~branch_node.BranchState`, so runs against a long-lived network
with the same data directory never reuse one.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from branch_node import BranchState, Counter
from branch_node.pinpad import PinPad, load_pinpads
from branch_node.resident_id import resident_id
from branch_node.terminal import teller_id
from common.ids import card_number, request_id, terminal_ids
from common.money import yuan
from common.requests import (
    Balance,
    ChangePin,
    Deposit,
    EncryptedPin,
    IdDocument,
    OpenAccount,
    RequestBase,
    Transfer,
    Withdraw,
    encode_request,
)

#: Kinds a load mix may weigh.
LOAD_KINDS = ("deposit", "withdraw", "transfer", "balance", "change_pin")
#: Named mixes: weights per kind, and the share of PIN requests with a mistyped PIN.
MIXES: dict[str, tuple[dict[str, float], float]] = {
    "deposit": ({"deposit": 1.0}, 0.0),
    "withdraw": ({"withdraw": 1.0}, 0.0),
    "simulate": (
        {"deposit": 30.0, "withdraw": 25.0, "transfer": 12.0, "balance": 15.0, "change_pin": 3.0},
        0.05,
    ),
}
#: Opening deposit of every load account: enough for any run's withdrawals of 1..20 yuan.
OPENING_DEPOSIT = yuan(1_000_000)
#: Origin time written into templates and replaced when a record is sent.
_PLACEHOLDER = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_PLACEHOLDER_JSON = b'"origin_time":"2000-01-01T00:00:00Z"'
_ORIGIN_KEY = b'"origin_time":"'
_BORN_AFTER, _BORN_BEFORE = dt.date(1950, 1, 1), dt.date(2000, 1, 1)


@dataclass(frozen=True, slots=True)
class LoadMix:
    """Relative weights of the request kinds and the share of mistyped PINs."""

    name: str
    weights: tuple[tuple[str, float], ...]
    wrong_pin_rate: float = 0.0

    def __post_init__(self) -> None:
        kinds = [kind for kind, _ in self.weights]
        unknown = sorted(set(kinds) - set(LOAD_KINDS))
        if unknown:
            raise ValueError(f"unknown kind(s) in mix: {', '.join(unknown)}")
        if any(w < 0 for _, w in self.weights) or sum(w for _, w in self.weights) <= 0:
            raise ValueError("mix weights must be non-negative and not all zero")
        if not 0 <= self.wrong_pin_rate < 1:
            raise ValueError("wrong_pin_rate must lie in [0, 1)")

    def as_json(self) -> dict[str, object]:
        weights = dict(self.weights)
        return {"name": self.name, "weights": weights, "wrong_pin_rate": self.wrong_pin_rate}


def parse_mix(text: str) -> LoadMix:
    """A named mix (``deposit``, ``withdraw``, ``simulate``) or ``kind=weight,...``.

    Raises:
        ValueError: neither a named mix nor a well-formed list of known kinds.
    """
    if text in MIXES:
        weights, wrong = MIXES[text]
        return LoadMix(text, tuple(weights.items()), wrong)
    pairs: list[tuple[str, float]] = []
    for part in text.split(","):
        kind, sep, weight = part.strip().partition("=")
        if not sep:
            raise ValueError(f"mix {text!r}: expected a name ({', '.join(MIXES)}) or kind=weight")
        try:
            pairs.append((kind.strip(), float(weight)))
        except ValueError:
            raise ValueError(f"mix {text!r}: {weight!r} is not a number") from None
    return LoadMix(text, tuple(pairs))


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """An encoded request record waiting for its origin time."""

    request_id: str
    branch_id: str
    kind: str
    head: bytes = field(repr=False)
    tail: bytes = field(repr=False)

    def record(self, stamp: bytes) -> bytes:
        """The wire record with ``stamp`` (from :func:`origin_stamp`) as its origin time."""
        return self.head + stamp + self.tail


def origin_stamp(now: dt.datetime) -> bytes:
    """An origin time (UTC) as the record's JSON spells it, closing quote included."""
    # isoformat is C all the way, strftime is not: half the cost, once per send
    return (now.isoformat(timespec="microseconds")[:26] + 'Z"').encode()


def prepare(request: RequestBase) -> PreparedRequest:
    """Encode ``request`` (built with the placeholder origin time) into a template."""
    raw = encode_request(request)
    head, found, tail = raw.partition(_PLACEHOLDER_JSON)
    if not found:
        raise ValueError("the request does not carry the placeholder origin time")
    kind = str(getattr(request, "kind", ""))
    return PreparedRequest(request.request_id, request.branch_id, kind, head + _ORIGIN_KEY, tail)


@dataclass(slots=True)
class LoadAccount:
    """An account the load test opened, and what the workload believes about its PIN."""

    number: str
    branch_id: str
    terminal_id: str
    pin: str
    wrong_in_a_row: int = 0


@dataclass(slots=True)
class _Terminal:
    branch_id: str
    terminal_id: str
    teller_id: str
    pad: PinPad
    state: BranchState
    accounts: list[LoadAccount] = field(default_factory=list)


class LoadWorkload:
    """The branches' terminals, their PIN pads and accounts, and the records they send.

    Args:
        data_dir: holds the PIN pad keys and the branches' counters.
        branch_ids: the branches to speak for (registered with the host).
        terminals: terminals (PIN pads) per branch; requests go round them in turn.
        mix: what to send.
        seed: seeds every choice (kinds, accounts, amounts, PINs).
    """

    def __init__(
        self,
        data_dir: Path,
        branch_ids: Sequence[str],
        *,
        terminals: int,
        mix: LoadMix,
        seed: int = 1,
    ) -> None:
        self.mix = mix
        self._rng = random.Random(seed)
        self._kinds = [kind for kind, _ in mix.weights]
        self._weights = [weight for _, weight in mix.weights]
        self._states: list[BranchState] = []
        self._terminals: list[_Terminal] = []
        for branch_id in branch_ids:
            state = BranchState.open(data_dir, branch_id, block=100_000)
            self._states.append(state)
            ids = terminal_ids(terminals)
            pads = load_pinpads(data_dir, branch_id, {t: state.peek(t, Counter.KSN) for t in ids})
            self._terminals.extend(
                _Terminal(branch_id, t, teller_id(branch_id, t), pads[t], state) for t in ids
            )
        self._turn = 0

    @property
    def accounts(self) -> list[LoadAccount]:
        return [account for terminal in self._terminals for account in terminal.accounts]

    def openings(self, per_terminal: int) -> list[tuple[OpenAccount, LoadAccount]]:
        """Account openings, ``per_terminal`` at each terminal, with the accounts they make.

        Call :meth:`opened` with the accounts whose opening was approved.
        """
        openings = []
        for terminal in self._terminals:
            for _ in range(per_terminal):
                serial = terminal.state.take(terminal.terminal_id, Counter.CARD_SERIAL)
                number = card_number(terminal.branch_id, terminal.terminal_id, serial)
                pin = f"{self._rng.randrange(1_000_000):06d}"
                document = IdDocument(
                    id_type="resident_id",
                    number=resident_id(self._rng, born_after=_BORN_AFTER, born_before=_BORN_BEFORE),
                )
                request = OpenAccount(
                    **self._base(terminal, dt.datetime.now(dt.UTC)),
                    account=number,
                    customer_name=f"Load {terminal.branch_id}-{terminal.terminal_id}-{serial}",
                    id_document=document,
                    pin=self._encrypt(terminal, pin, number),
                    initial_deposit=OPENING_DEPOSIT,
                )
                account = LoadAccount(number, terminal.branch_id, terminal.terminal_id, pin)
                openings.append((request, account))
        return openings

    def opened(self, accounts: Sequence[LoadAccount]) -> None:
        """Take ``accounts`` (approved openings) into the workload."""
        by_terminal = {(t.branch_id, t.terminal_id): t for t in self._terminals}
        for account in accounts:
            by_terminal[(account.branch_id, account.terminal_id)].accounts.append(account)

    def build(self, count: int) -> list[PreparedRequest]:
        """The next ``count`` records, round the terminals in turn.

        Raises:
            ValueError: no terminal has an open account yet.
        """
        ready = [t for t in self._terminals if t.accounts]
        if not ready:
            raise ValueError("no accounts are open: run the openings first")
        prepared = []
        kinds = self._rng.choices(self._kinds, self._weights, k=count)
        for kind in kinds:
            terminal = ready[self._turn % len(ready)]
            self._turn += 1
            prepared.append(prepare(self._request(terminal, kind)))
        return prepared

    def close(self) -> None:
        """Write every terminal's counters (request sequence, card serial, KSN)."""
        for terminal in self._terminals:
            terminal.state.advance(terminal.terminal_id, Counter.KSN, terminal.pad.counter)
        for state in self._states:
            state.close()

    def _request(self, terminal: _Terminal, kind: str) -> RequestBase:
        rng = self._rng
        account = rng.choice(terminal.accounts)
        base = self._base(terminal, _PLACEHOLDER)
        number = account.number
        amount = yuan(rng.randint(1, 20))
        if kind == "deposit":
            return Deposit(**base, account=number, amount=amount)
        pin = self._pin(terminal, account)
        if kind == "withdraw":
            return Withdraw(**base, account=number, amount=amount, pin=pin)
        if kind == "transfer":
            to = rng.choice(terminal.accounts).number
            if to == number and len(terminal.accounts) > 1:
                to = next(a.number for a in terminal.accounts if a.number != number)
            return Transfer(**base, account=number, to_account=to, amount=amount, pin=pin)
        if kind == "balance":
            return Balance(**base, account=number, pin=pin)
        new_pin = f"{rng.randrange(1_000_000):06d}"
        if account.wrong_in_a_row == 0:  # a right PIN: the change takes effect
            account.pin = new_pin
        return ChangePin(
            **base, account=number, pin=pin, new_pin=self._encrypt(terminal, new_pin, number)
        )

    def _base(self, terminal: _Terminal, origin_time: dt.datetime) -> dict[str, Any]:
        sequence = terminal.state.take(terminal.terminal_id, Counter.SEQUENCE)
        return {
            "request_id": request_id(terminal.branch_id, terminal.terminal_id, sequence),
            "branch_id": terminal.branch_id,
            "teller_id": terminal.teller_id,
            "terminal_id": terminal.terminal_id,
            "origin_time": origin_time,
        }

    def _pin(self, terminal: _Terminal, account: LoadAccount) -> EncryptedPin:
        """The PIN the customer types: now and then a wrong one, never a third in a row."""
        wrong = (
            self.mix.wrong_pin_rate > 0
            and account.wrong_in_a_row < 2
            and self._rng.random() < self.mix.wrong_pin_rate
        )
        if wrong:
            account.wrong_in_a_row += 1
            typed = f"{(int(account.pin) + 1) % 1_000_000:06d}"
        else:
            account.wrong_in_a_row = 0
            typed = account.pin
        return self._encrypt(terminal, typed, account.number)

    @staticmethod
    def _encrypt(terminal: _Terminal, pin: str, pan: str) -> EncryptedPin:
        terminal.state.cover(terminal.terminal_id, Counter.KSN, terminal.pad.next_counter)
        return terminal.pad.encrypt(pin, pan)
