"""A batch of request records, decided as if one by one: the pure core of the host.

Two steps around the crypto node's round trip:

1. :func:`plan` sorts each record: a retry of a stored request (its stored reply), a copy of
   an earlier record of this batch, an id reused with other content (``94``), a refused
   record, a request to decide (with the PIN command it needs), or a request held back to the
   next batch. A request is held back when an earlier request of the batch may give its
   account a new PIN value (an opening or a PIN change: its PIN must not be checked against
   the old value), and so is every later request on an account already held back, so that
   each account still sees its requests in arrival order.
2. :func:`settle` walks the records in arrival order over a :class:`~host_node.ledger.Ledger`,
   applying the rules with the crypto node's answers, and produces the replies, journal
   entries, changed accounts and idempotency rows the store then commits in one transaction.

A record whose sorting or rule raises (a defect) is declined ``96`` with the reason
``unexpected: <type>`` (never the exception's text), journalled without postings and
remembered like any answer, so the rest of its batch is decided and a retry gets that answer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import field

from common.ids import cash_account
from common.logs import get_logger
from common.pin_commands import PinCommand, PinResponse
from common.replies import Reply, encode_reply
from common.requests import RecordError, Request
from common.results import ResultCode
from host_node.errors import defect_reason, defect_site
from host_node.evidence import (
    EntryEvidence,
    FrameProof,
    documents_checked,
    pin_outcome,
    redact_record,
)
from host_node.immutable import immutable
from host_node.intake import Item
from host_node.journal import ChainHead, JournalEntry, head_of, seal, subject_of
from host_node.ledger import AccountState, Customer, Decision, Ledger, PinMethod, decline
from host_node.policy import DEFAULT_POLICY, Policy
from host_node.rules import accounts_named, changes_pin, decide, needs_crypto, pin_command
from host_node.staff import StaffMember

MISMATCH_REASON = "request id reused with different content"

_log = get_logger(__name__)


@immutable
class Stored:
    """An idempotency row: the fingerprint of a decided request and the reply it got."""

    content_hash: str
    reply: Reply


@immutable
class Snapshot:
    """What the store holds for a batch: stored replies by request id, accounts by number,
    and the staff table (for supervisor authorisations)."""

    known: Mapping[str, Stored]
    accounts: Mapping[str, AccountState]
    staff: Mapping[str, StaffMember] = field(default_factory=dict)


@immutable
class Replay:
    """A retry of a stored request: answer with its stored reply."""

    reply: Reply


@immutable
class Echo:
    """A copy of an earlier record of the same batch: answer as that one is answered."""

    first: int


@immutable
class Mismatch:
    """A known request id with other content: ``94``, journaled, not remembered."""


@immutable
class Refuse:
    """A record refused before processing, with the code it is answered with."""

    error: RecordError


@immutable
class Run:
    """A request to decide, with the command the crypto node must answer first."""

    request: Request
    command: PinCommand | None


@immutable
class Defer:
    """A request held back to the next batch."""


Action = Replay | Echo | Mismatch | Refuse | Run | Defer
#: Actions answered without a decision (now, from the store, or as an earlier copy).
_ANSWERED = (Defer, Replay, Echo)


@immutable
class Plan:
    """Each item's action, in item order, and the PIN commands the batch must send."""

    actions: tuple[Action, ...]
    commands: tuple[PinCommand, ...]


@immutable
class Remembered:
    """An idempotency row to store; ``reply_json`` is ``reply`` encoded once, as :meth:`json`
    gives it to the store and the standby (empty: encoded when asked)."""

    request_id: str
    content_hash: str
    reply: Reply
    reply_json: str = field(default="", compare=False, repr=False)

    def json(self) -> str:
        """The reply's wire JSON, as the idempotency table stores it."""
        return self.reply_json or encode_reply(self.reply).decode()


@immutable
class Settlement:
    """Everything a batch changes, ready to commit in one transaction.

    ``replies`` line up with the batch's items; a deferred item's is None. ``evidence`` lines
    up with ``entries``; ``frames`` are the frames it names, by digest. ``new_accounts`` are
    the numbers of the ``accounts`` the store did not hold before (None: not known).
    """

    replies: tuple[Reply | None, ...]
    entries: tuple[JournalEntry, ...]
    accounts: tuple[AccountState, ...]
    customers: Mapping[str, Customer]
    remembered: tuple[Remembered, ...]
    head: ChainHead
    evidence: tuple[EntryEvidence, ...] = ()
    frames: Mapping[str, FrameProof] = field(default_factory=dict)
    new_accounts: frozenset[str] | None = None


def accounts_to_load(items: Sequence[Item]) -> set[str]:
    """The ledger accounts a batch may read: the accounts named and the branches' cash."""
    numbers = {cash_account(branch_id) for branch_id in {item.branch_id for item in items}}
    for item in items:
        if not isinstance(item.record, RecordError):
            try:
                numbers.update(accounts_named(item.record))
            except Exception:  # a defect: plan() refuses the record 96
                continue
    return numbers


def plan(
    items: Sequence[Item],
    snapshot: Snapshot,
    command_ids: Iterator[str],
    pin_method: PinMethod = "ibm3624",
    *,
    taken_at: dt.datetime | None = None,
) -> Plan:
    """Sort a batch's items into actions and collect the PIN commands to send.

    ``pin_method`` is how new PINs are recorded (IBM 3624 offset or Visa PVV). ``taken_at``
    is the wall-clock time the host took the batch: a fresh request whose deadline is
    earlier is refused ``68`` (a retry of a stored one still gets its stored reply).
    """
    firsts: dict[str, int] = {}
    scheduler = _Scheduler(snapshot, command_ids, pin_method)
    actions: list[Action] = []
    for index, item in enumerate(items):
        repeat = _repeat(item, snapshot, firsts, items)
        if repeat is None:
            firsts[item.request_id] = index
            actions.append(_fresh(item.record, scheduler, taken_at))
        else:
            actions.append(Defer() if item.request_id in scheduler.held_ids else repeat)
    return Plan(tuple(actions), tuple(scheduler.commands))


def _fresh(
    record: Request | RecordError, scheduler: _Scheduler, taken_at: dt.datetime | None
) -> Refuse | Run | Defer:
    """A fresh record's action; one whose sorting raises (a defect) is refused ``96``."""
    if isinstance(record, RecordError):
        return Refuse(record)
    try:
        late = too_late(record, taken_at) if taken_at is not None else None
        return Refuse(late) if late is not None else scheduler.run(record)
    except Exception as error:
        _log.error(
            "record failed on a defect; declined 96",
            request_id=record.request_id,
            error_type=type(error).__name__,
            raised_at=defect_site(error),
        )
        return Refuse(RecordError(record.request_id, ResultCode.SYSTEM_ERROR, defect_reason(error)))


def too_late(request: Request, taken_at: dt.datetime) -> RecordError | None:
    """The ``68`` refusal of a request whose deadline passed before ``taken_at``, else None
    (no deadline: a request from an older branch is taken whenever it comes)."""
    deadline = request.deadline
    if deadline is None or deadline >= taken_at:
        return None
    late_s = (taken_at - deadline).total_seconds()
    return RecordError(
        request.request_id, ResultCode.TOO_LATE, f"deadline passed {late_s:.3f} s before taken"
    )


def _repeat(
    item: Item, snapshot: Snapshot, firsts: Mapping[str, int], items: Sequence[Item]
) -> Replay | Echo | Mismatch | None:
    """The action for a request id seen before (stored, or earlier in the batch), else None."""
    stored = snapshot.known.get(item.request_id)
    if stored is not None:
        return Replay(stored.reply) if stored.content_hash == item.content_hash else Mismatch()
    first = firsts.get(item.request_id)
    if first is None:
        return None
    return Echo(first) if items[first].content_hash == item.content_hash else Mismatch()


class _Scheduler:
    """Decides which fresh requests run in this batch and which wait for the next."""

    def __init__(
        self, snapshot: Snapshot, command_ids: Iterator[str], pin_method: PinMethod
    ) -> None:
        self.snapshot = snapshot
        self.command_ids = command_ids
        self.pin_method = pin_method
        self.commands: list[PinCommand] = []
        self.held_ids: set[str] = set()
        self.held_accounts: set[str] = set()
        self.repinned: set[str] = set()

    def run(self, request: Request) -> Run | Defer:
        named = set(accounts_named(request))
        repinned = needs_crypto(request) and request.account in self.repinned
        if repinned or named & self.held_accounts:
            self.held_ids.add(request.request_id)
            self.held_accounts.update(named)
            return Defer()
        repins = changes_pin(request)
        stored = self.snapshot.accounts.get(request.account)
        command = pin_command(request, stored, next(self.command_ids), self.pin_method)
        if repins:  # only once nothing can raise: a refused record holds nothing back
            self.repinned.add(request.account)
        if command is not None:
            self.commands.append(command)
        return Run(request, command)


def settle(
    items: Sequence[Item],
    planned: Plan,
    snapshot: Snapshot,
    responses: Mapping[str, PinResponse | None],
    head: ChainHead,
    clock: Callable[[], dt.datetime],
    policy: Policy = DEFAULT_POLICY,
) -> Settlement:
    """Decide the batch in arrival order and gather what it changes.

    Args:
        items: the batch's items, as planned.
        planned: their actions, from :func:`plan`.
        snapshot: the stored state the plan was made from.
        responses: the crypto node's answers by command id (None: no answer in time).
        head: the journal's head before the batch.
        clock: the processing time source.
        policy: the rules' thresholds and limits.
    """
    ledger = Ledger(snapshot.accounts, snapshot.staff)
    replies: list[Reply | None] = []
    entries: list[JournalEntry] = []
    customers: dict[str, Customer] = {}
    remembered: list[Remembered] = []
    evidence: list[EntryEvidence] = []
    frames: dict[str, FrameProof] = {}
    digests: dict[int, str] = {}  # by id() of the items' frame proofs, all alive meanwhile
    for item, action in zip(items, planned.actions, strict=True):
        if isinstance(action, _ANSWERED):
            if isinstance(action, Defer):
                replies.append(None)
            elif isinstance(action, Replay):
                replies.append(action.reply)
            else:
                replies.append(replies[action.first])
            continue
        now = clock()
        decision = _applied(item, action, ledger, responses, now, policy)
        if decision.customer is not None and decision.account is not None:
            customers[decision.account] = decision.customer
        request = None if isinstance(item.record, RecordError) else item.record
        entry = seal(
            head,
            item.origin(),
            kind=item.kind,
            subject=subject_of(request.account if request else None),
            processed_at=now,
            postings=decision.postings,
            result=decision.result,
            reason=decision.reason,
            rule=decision.rule,
            identities=decision.identities,
        )
        head = head_of(entry)
        entries.append(entry)
        evidence.append(_evidence(item, action, responses, entry, frames, digests))
        reply = _reply(item, decision, ledger, entry)
        replies.append(reply)
        if not isinstance(action, Mismatch):
            remembered.append(
                Remembered(item.request_id, item.content_hash, reply, encode_reply(reply).decode())
            )
    touched = tuple(ledger.touched())
    return Settlement(
        tuple(replies),
        tuple(entries),
        touched,
        customers,
        tuple(remembered),
        head,
        tuple(evidence),
        frames,
        frozenset(a.number for a in touched if a.number not in snapshot.accounts),
    )


def _evidence(
    item: Item,
    action: Mismatch | Refuse | Run,
    responses: Mapping[str, PinResponse | None],
    entry: JournalEntry,
    frames: dict[str, FrameProof],
    digests: dict[int, str],
) -> EntryEvidence:
    """What to keep beside ``entry`` to prove it later (see host_node.evidence); its frame
    goes into ``frames`` by digest, each frame's digest computed once (``digests``)."""
    command = action.command if isinstance(action, Run) else None
    response = responses.get(command.command_id) if command is not None else None
    digest = None
    proof = item.frame
    if proof is not None:
        digest = digests.get(id(proof))
        if digest is None:
            digest = digests[id(proof)] = proof.digest
            frames[digest] = proof
    return EntryEvidence(
        seq=entry.seq,
        frame_digest=digest,
        record_index=item.index,
        record=redact_record(item.raw),
        pin_outcome=pin_outcome(command, response),
        documents=documents_checked(item.record),
    )


def _applied(
    item: Item,
    action: Mismatch | Refuse | Run,
    ledger: Ledger,
    responses: Mapping[str, PinResponse | None],
    now: dt.datetime,
    policy: Policy,
) -> Decision:
    """Decide ``action`` and apply it to ``ledger``; a rule that raises (a defect) declines
    the record ``96`` and moves nothing, so the rest of the batch goes on."""
    try:
        decision = _decision(action, ledger, responses, now, policy)
        ledger.apply(decision, now)  # all or nothing
    except Exception as error:
        _log.error(
            "record failed on a defect; declined 96",
            request_id=item.request_id,
            error_type=type(error).__name__,
            raised_at=defect_site(error),
        )
        decision = decline(ResultCode.SYSTEM_ERROR, defect_reason(error))
    return decision


def _decision(
    action: Mismatch | Refuse | Run,
    ledger: Ledger,
    responses: Mapping[str, PinResponse | None],
    now: dt.datetime,
    policy: Policy,
) -> Decision:
    if isinstance(action, Mismatch):
        return decline(ResultCode.DUPLICATE_MISMATCH, MISMATCH_REASON)
    if isinstance(action, Refuse):
        return decline(action.error.code, action.error.reason)
    pin = responses.get(action.command.command_id) if action.command else None
    return decide(action.request, ledger, pin, now, policy)


def _reply(item: Item, decision: Decision, ledger: Ledger, entry: JournalEntry) -> Reply:
    reported = ledger.get(decision.report) if decision.report else None
    approved = decision.result is ResultCode.APPROVED
    return Reply(
        request_id=item.request_id,
        result=decision.result,
        reason=decision.reason,
        balance=reported.balance if reported and approved else None,
        amount=decision.amount if approved else None,
        account=decision.account if approved else None,
        received_at=item.received_at,
        processed_at=entry.processed_at,
        journal_seq=entry.seq,
        rule=decision.rule or None,
        available=reported.available if reported and approved else None,
    )
