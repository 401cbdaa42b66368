"""The host service: request frames in, batches decided and committed, reply frames out.

The consumer checks, opens and unpacks each frame as it arrives — while the batch loop waits
for the crypto node or the disk — and queues it (a bounded inbox: when it is full the consumer
waits and the bus holds the rest). One batch loop takes every ready frame up to a record
budget (so batches are small under light load and large under heavy load), reads what the
store knows, sends the batch's PIN commands together, decides the batch in arrival order and
commits it in one transaction; then, while the loop goes on with the next batch, the batch is
answered: one reply frame per branch, and only then acks of the frames it answered completely.
A crash before the commit redelivers the frames; anything replayed after a commit is absorbed
by the idempotency table. A defect (an unexpected exception) costs only its own frame or
record: a frame that cannot be opened for one is dead-lettered at once with the reason
``unexpected: <type>``; a record whose planning or rule raises is declined ``96``.

With a :class:`~host_node.guard.Guard` the host takes sealed frames only (secure envelopes):
the guard checks and opens each frame, answers sign-ons, and seals the replies; a refused
frame raises a security alert through the guard's hook and is dead-lettered with its reason,
never reaching the ledger. Without one (tests, tools) frames travel plain.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.authorisation import staff_public_keys
from common.bus import Bus, Delivery, Message, Subscription
from common.errors import BranchnetError, FrameError, UnroutableError
from common.frames import MAX_RECORDS, FrameKind, build_frame, encode_frame
from common.identity import ensure_identity
from common.logs import get_logger
from common.metrics import STAGE_SECONDS
from common.replies import Reply, encode_reply
from common.topology import (
    CORE,
    DEAD_EXCHANGE,
    HOST_REQUESTS,
    ORIGIN_HEADER,
    REASON_HEADER,
    REPLIES_EXCHANGE,
    branch_key,
    host_topology,
)
from host_node.batch import accounts_to_load, plan, settle
from host_node.checkpoint import SIGNER, Segment, sign_checkpoint
from host_node.config import HostConfig
from host_node.errors import FrameRefused, StoreCorrupt, defect_reason, defect_site
from host_node.event_rules import frame_alert, refusal_alert
from host_node.events import EventPublisher, host_events
from host_node.guard import Guard, Refusal
from host_node.intake import DeadRecord, Item, unpack, unpack_frame
from host_node.integrity import check_store, check_wal
from host_node.pin_client import SENDER, PinClient
from host_node.pin_local import PinLocal
from host_node.policy import bank_day
from host_node.query_trail import AuditTrail, audit_path, records_of
from host_node.replication import FencedError, Replicator, epoch_message, read_fence
from host_node.staff import default_staff, with_keys
from host_node.store import Store, ledger_path
from host_node.tiers import TierChange, TierHook

DEFAULT_CONFIG = HostConfig()
#: Pause after a batch failed for want of the store or the bus, before trying again.
RETRY_DELAY_S = 0.5

_log = get_logger(__name__)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(eq=False, slots=True)
class _Inbound:
    """A request frame in the host's hands, acked once every record of it is answered."""

    delivery: Delivery
    received_at: dt.datetime
    branch_id: str = ""
    sequence: int = 0
    outstanding: int = 0
    settled: bool = False
    results: Counter[str] = field(default_factory=Counter)
    #: The frame's records, unpacked as it arrived.
    items: tuple[Item, ...] = ()
    dead: tuple[DeadRecord, ...] = ()

    async def ack(self) -> None:
        await self.delivery.ack()
        self.settled = True

    async def give_back(self) -> None:
        if not self.settled:
            self.settled = True
            await self.delivery.nack(requeue=True)


@dataclass(frozen=True, slots=True)
class _Pending:
    item: Item
    inbound: _Inbound


@dataclass(slots=True)
class _Batch:
    items: list[_Pending] = field(default_factory=list)
    dead: list[tuple[DeadRecord, _Inbound]] = field(default_factory=list)
    inbounds: dict[int, _Inbound] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return len(self.items) + len(self.dead)

    def add(self, inbound: _Inbound) -> None:
        """Take an opened frame's records into the batch."""
        self.inbounds[id(inbound)] = inbound
        self.items.extend(_Pending(item, inbound) for item in inbound.items)
        self.dead.extend((dead, inbound) for dead in inbound.dead)


@dataclass(frozen=True, slots=True)
class _Decided:
    """A committed batch waiting to be answered."""

    batch: _Batch
    answered: list[tuple[_Pending, Reply]]
    journal_seq: int
    started: float


@dataclass(frozen=True, slots=True)
class HostStatistics:
    """A snapshot of the host's work and queues (trio ``statistics()`` style)."""

    frames: int
    dead_frames: int
    records: int
    dead_records: int
    batches: int
    deferred: int
    by_result: Mapping[str, int]
    inbox: int
    inbox_bound: int
    carried: int
    pin_pending: int
    journal_seq: int
    #: Entries shipped to the standby and not yet confirmed (0 without replication).
    replication_lag: int = 0
    #: True while a sync primary runs async because its standby went silent.
    replication_degraded: bool = False


class HostService:
    """The central host: ledger, rules, PIN routing and journal behind ``host.requests``.

    The caller owns ``bus`` and connects it before :meth:`start`. ``clock`` is the host's
    time (a :class:`~common.clock.SimulationClock` lets days pass in seconds: appointments,
    daily limits, interest); ``on_tier_change`` is called with each customer tier change.
    """

    def __init__(
        self,
        bus: Bus,
        data_dir: Path,
        *,
        branch_ids: Sequence[str],
        config: HostConfig = DEFAULT_CONFIG,
        clock: Callable[[], dt.datetime] = _now,
        on_tier_change: TierHook | None = None,
        events: EventPublisher | None = None,
        guard: Guard | None = None,
    ) -> None:
        self.bus = bus
        self._clock = clock
        #: Called with each customer tier change after its batch committed (each also goes
        #: out as a ``tier_changed`` event); exceptions are logged, never raised.
        self.on_tier_change = on_tier_change
        self.branch_ids = frozenset(branch_ids)
        self.config = config
        self.guard = guard
        self.store = Store(ledger_path(data_dir), synchronous=config.synchronous)
        self.data_dir = data_dir
        self.epoch = 0
        self._signing_key = ensure_identity(data_dir, SIGNER)
        self._segment = Segment(
            1, every=config.checkpoint_every, interval_s=config.checkpoint_interval_s
        )
        self._checkpointer: asyncio.Task[None] | None = None
        #: Held while a checkpoint is signed and stored: the checkpointer is never cancelled
        #: mid-write (its store write would land while its hashes were put back for another).
        self._checkpointing = asyncio.Lock()
        self.replicator: Replicator | None = None
        if config.replication != "off":
            self.replicator = Replicator(
                bus,
                self._signing_key,
                self._signing_key.public_key(),
                mode=config.replication,
                standby_lost=config.standby_lost,
                timeout_s=config.standby_timeout_s,
            )
        self._pins: PinClient | PinLocal = (
            PinLocal(data_dir)
            if config.pin_mode == "host"
            else PinClient(bus, timeout_s=config.crypto_timeout_s)
        )
        self.audit = AuditTrail(audit_path(data_dir))
        self._command_ids = self._pins.command_ids()
        self._inbox: asyncio.Queue[_Inbound] = asyncio.Queue(config.queue_bound)
        self._carried: list[_Pending] = []
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._idle = False
        self._reply_sequence = itertools.count(1)
        self._counts: Counter[str] = Counter()
        self._by_result: Counter[str] = Counter()
        self._closed_through: dt.date | None = None
        #: Ops events and stats (host_node/events.py); others emit through ``events.emit``.
        self.events = events or host_events(bus)
        self.events.watch_queues(self._queue_depths)

    async def start(self) -> None:
        """Check and open the store, declare the topology, start consuming ``host.requests``.

        Raises:
            StoreCorrupt: the store is damaged at rest (:mod:`host_node.integrity`).
        """
        await asyncio.to_thread(check_wal, self.store.path)
        await self.store.open()
        try:
            await self.store.read(check_store, self._signing_key.public_key())
        except StoreCorrupt:
            await self.store.close()
            raise
        last, hashes = await self.store.checkpoint_tail()
        self._segment = Segment(
            last + 1,
            every=self.config.checkpoint_every,
            interval_s=self.config.checkpoint_interval_s,
        )
        self._segment.extend(hashes)
        # The staff and the public keys of those who sign (made by `branchnet keys init`).
        keys = staff_public_keys(self.data_dir)
        await self.store.enrol_staff(with_keys(default_staff(sorted(self.branch_ids)), keys))
        await self.audit.open()
        await self.bus.declare(CORE + host_topology(sorted(self.branch_ids)))
        await self._take_epoch()
        if self.replicator is not None:
            self.replicator.epoch = self.epoch
            await self.replicator.start(self.store.head)
            self.events.watch_replication(self.replicator.status)
        await self._pins.start()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="host-batches")
        self._checkpointer = asyncio.create_task(self._checkpoints(), name="host-checkpoints")
        self._subscription = await self.bus.consume(
            HOST_REQUESTS, self._accept, prefetch=self.config.prefetch
        )
        await self.events.start()
        if self.guard is not None:  # sessions died with the last run: ask branches to sign on
            notices = [
                self.guard.rekey_notice(b, "host restarted", _now()) for b in self.branch_ids
            ]
            # A branch that never declared its reply queue signs on when it starts.
            with contextlib.suppress(UnroutableError):
                await self.bus.publish([n for n in notices if n is not None])

    async def stop(self) -> None:
        """Finish the batch in hand, give back every frame not fully answered, close the store."""
        if self._task is None:
            return
        self._stopping = True
        if self._idle:
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        if self._subscription is not None:
            await self._subscription.cancel()
            self._subscription = None
        unanswered = [pending.inbound for pending in self._carried]
        while not self._inbox.empty():
            unanswered.append(self._inbox.get_nowait())
        await self._give_back(unanswered)
        self._carried = []
        await self._pins.stop()
        if self.replicator is not None:
            await self.replicator.stop()
        if self._checkpointer is not None:
            async with self._checkpointing:
                self._checkpointer.cancel()
            await asyncio.gather(self._checkpointer, return_exceptions=True)
            self._checkpointer = None
        try:
            await self.checkpoint()
        finally:
            await self.store.close()
            await self.audit.close()
            await self.events.stop()

    async def _take_epoch(self) -> None:
        """Adopt the store's epoch, unless a promoted host announced a higher one.

        Raises:
            FencedError: another host is primary in a later epoch (the store is closed).
        """
        self.epoch = max(1, await self.store.epoch())
        fence = await read_fence(self.bus, self._signing_key.public_key())
        if fence > self.epoch:
            await self.store.close()
            raise FencedError(
                f"a host promoted to epoch {fence} is primary; this host (epoch {self.epoch}) "
                "refuses to process"
            )
        await self.store.set_epoch(self.epoch)

    async def announce_epoch(self) -> None:
        """Publish this host's epoch on ``dr.epoch``: older primaries will refuse to run."""
        await self.bus.publish([epoch_message(self._signing_key, self.epoch)])

    async def checkpoint(self) -> None:
        """Sign and store a checkpoint over the entries committed since the last one, if any.

        Raises:
            StoreError: it was not stored (the entries wait for the next one).
        """
        async with self._checkpointing:
            if not self._segment.hashes:
                return
            first_seq, hashes = self._segment.take()
            checkpoint = sign_checkpoint(
                self._signing_key, hashes, first_seq=first_seq, epoch=self.epoch, signed_at=_now()
            )
            try:
                await self.store.add_checkpoint(checkpoint)
            except BaseException:
                self._segment.put_back(first_seq, hashes)
                raise
            if self.replicator is not None:
                await self.replicator.ship_checkpoint(checkpoint)
        _log.info("journal checkpoint signed", seq=checkpoint.seq, entries=len(hashes))

    async def _checkpoints(self) -> None:
        """Sign a checkpoint whenever one is due, until cancelled."""
        while True:
            await asyncio.sleep(min(0.5, self.config.checkpoint_interval_s))
            if self._segment.due():
                try:
                    await self.checkpoint()
                except BranchnetError as error:
                    _log.error("checkpoint failed; retrying", error=str(error))

    def statistics(self) -> HostStatistics:
        return HostStatistics(
            frames=self._counts["frames"],
            dead_frames=self._counts["dead_frames"],
            records=self._counts["records"],
            dead_records=self._counts["dead_records"],
            batches=self._counts["batches"],
            deferred=self._counts["deferred"],
            by_result=dict(self._by_result),
            inbox=self._inbox.qsize(),
            inbox_bound=self.config.queue_bound,
            carried=len(self._carried),
            pin_pending=self._pins.pending,
            journal_seq=self.store.head.seq,
            replication_lag=self.replicator.lag if self.replicator else 0,
            replication_degraded=self.replicator.degraded if self.replicator else False,
        )

    def _queue_depths(self) -> dict[str, int]:
        return {
            "inbox": self._inbox.qsize(),
            "carried": len(self._carried),
            "pin_pending": self._pins.pending,
        }

    async def _accept(self, delivery: Delivery) -> None:
        inbound = _Inbound(delivery, self._clock())
        if not await self._open(inbound):
            return
        try:
            await self._inbox.put(inbound)
        except BaseException:  # stopped while the inbox was full: the frame goes back
            await self._give_back([inbound])
            raise

    async def _run(self) -> None:
        """Decide and commit batch after batch; each batch's answering (the standby's
        confirmation, reply frames, acks) runs while the next batch is read, decided and
        committed. Answers go out in batch order: one batch is answered at a time."""
        answering: asyncio.Task[None] | None = None
        try:
            while not self._stopping:
                batch = _Batch()
                try:
                    await self._collect(batch)
                    if batch.records:
                        decided = await self._process(batch)
                        if answering is not None:
                            await answering  # never raises: it gives its frames back
                        answering = asyncio.create_task(self._answer(decided), name="answers")
                except (BranchnetError, OSError) as error:
                    _log.error("batch failed; frames given back", error=str(error))
                    await self._recover(batch)
                except Exception:
                    _log.exception("batch failed on a defect; frames given back")
                    await self._recover(batch)
        finally:
            if answering is not None:
                await asyncio.gather(answering, return_exceptions=True)

    async def _collect(self, batch: _Batch) -> None:
        """Take the carried-over records, then every ready frame up to the record budget."""
        carried, self._carried = self._carried, []
        batch.items.extend(carried)
        for pending in carried:
            batch.inbounds[id(pending.inbound)] = pending.inbound
        if not carried:
            self._idle = True
            try:
                inbound = await self._inbox.get()
            finally:
                self._idle = False
            batch.add(inbound)
        while batch.records < self.config.max_batch_records and not self._inbox.empty():
            batch.add(self._inbox.get_nowait())

    async def _open(self, inbound: _Inbound) -> bool:
        """Check, open and unpack a request frame as it arrives (while the batch loop waits
        for the crypto node or the disk); False when it was answered, refused or
        dead-lettered at once and is not for a batch."""
        delivery = inbound.delivery
        try:
            if self.guard is None:
                unpacked = unpack(
                    delivery.body,
                    delivery.routing_key,
                    self.branch_ids,
                    received_at=inbound.received_at,
                    unpacked_at=self._clock(),
                )
            else:
                opened = self.guard.open(delivery.body, delivery.routing_key, _now())
                if opened.answer is not None:  # a sign-on: answered at once, not batched
                    await self._publish([opened.answer])
                    await inbound.ack()
                    return False
                unpacked = unpack_frame(
                    opened.frame,
                    opened.branch_id,
                    received_at=inbound.received_at,
                    unpacked_at=self._clock(),
                    evidence=opened.evidence,
                )
        except FrameRefused as error:
            await self._refuse(inbound, error)
            return False
        except FrameError as error:
            await self._dead_letter(inbound, str(error))
            return False
        except (BranchnetError, OSError):
            raise  # the bus or the disk: the consumer gives the frame back for another try
        except Exception as error:
            # A defect fails this frame alike on every delivery (and once a guard admitted its
            # sequence, a redelivery would be refused as a replay): dead-letter it now.
            _log.error(
                "request frame failed on a defect",
                routing_key=delivery.routing_key[:40],
                error_type=type(error).__name__,
                raised_at=defect_site(error),
            )
            await self._dead_letter(inbound, defect_reason(error))
            return False
        self._counts["frames"] += 1
        self._counts["records"] += unpacked.size
        inbound.branch_id = unpacked.branch_id
        inbound.sequence = unpacked.frame.header.sequence
        inbound.outstanding = unpacked.size
        inbound.items, inbound.dead = unpacked.items, unpacked.dead
        return True

    async def _dead_letter(self, inbound: _Inbound, reason: str) -> None:
        """Dead-letter a frame that will never be batched, with ``reason``, and raise an alert."""
        self._counts["dead_frames"] += 1
        key = inbound.delivery.routing_key[:40]
        _log.warning("request frame dead-lettered", routing_key=key, reason=reason)
        self.events.emit(frame_alert(reason, key, at=_now()))
        await self.bus.dead_letter(inbound.delivery, reason)
        inbound.settled = True

    async def _refuse(self, inbound: _Inbound, error: FrameRefused) -> None:
        """A security alert, a dead-lettered copy, and a re-key notice for a stale epoch."""
        assert self.guard is not None
        delivery = inbound.delivery
        self._counts["dead_frames"] += 1
        alert = self.guard.report(error, delivery.routing_key, _now())
        _log.warning(
            "request frame refused",
            routing_key=alert.routing_key[:40],
            refusal=alert.refusal.value,
            reason=alert.reason,
        )
        self.events.emit(
            refusal_alert(alert.refusal.value, alert.reason, alert.routing_key[:40], at=_now())
        )
        await self.bus.dead_letter(delivery, str(error))
        inbound.settled = True
        if error.refusal is Refusal.STALE_EPOCH and error.sender is not None:
            notice = self.guard.rekey_notice(error.sender, "stale epoch", _now())
            if notice is not None:
                await self._publish([notice])

    async def _process(self, batch: _Batch) -> _Decided:
        """Decide and commit ``batch``; :meth:`_answer` answers it."""
        started = time.perf_counter()
        replies: Sequence[Reply | None] = ()
        if batch.items:
            await self._close_books()
            items = [pending.item for pending in batch.items]
            snapshot = await self.store.snapshot(
                {item.request_id for item in items}, accounts_to_load(items)
            )
            # deadlines are the branches' wall clock, whatever clock the host's rules run on
            planned = plan(
                items, snapshot, self._command_ids, self.config.pin_method, taken_at=_now()
            )
            with STAGE_SECONDS.labels("crypto").time():
                responses = await self._pins.execute(planned.commands)
            settlement = settle(
                items,
                planned,
                snapshot,
                responses,
                self.store.head,
                self._clock,
                self.config.policy,
            )
            with STAGE_SECONDS.labels("journal_commit").time():
                tier_changes = await self.store.commit(settlement)
            self._tiers_changed(tier_changes)
            self._segment.extend([entry.hash for entry in settlement.entries])
            if self.replicator is not None:
                await self.replicator.ship(settlement)
            replies = settlement.replies
            # Before any reply leaves: every answered personal-information query has a trace.
            await self.audit.record(records_of(items, replies, _now()))
        self._counts["batches"] += 1
        answered = [(p, r) for p, r in zip(batch.items, replies, strict=True) if r is not None]
        self._carried = [p for p, r in zip(batch.items, replies, strict=True) if r is None]
        self._counts["deferred"] += len(self._carried)
        return _Decided(batch, answered, self.store.head.seq, started)

    async def _answer(self, decided: _Decided) -> None:
        """Answer a committed batch: once the standby holds it (sync replication), publish
        its reply frames and dead records, then ack every frame it answered completely.

        A failure gives the batch's frames back (their stored replies answer them again)."""
        try:
            await self._send_answers(decided)
        except (BranchnetError, OSError) as error:
            _log.error("answers failed; frames given back", error=str(error))
            await self._recover(decided.batch, carried=False)
        except Exception:
            _log.exception("answers failed on a defect; frames given back")
            await self._recover(decided.batch, carried=False)

    async def _send_answers(self, decided: _Decided) -> None:
        batch, answered = decided.batch, decided.answered
        if self.replicator is not None:
            await self.replicator.held(decided.journal_seq)
        await self._publish(self._reply_messages(answered) + self._dead_messages(batch.dead))
        STAGE_SECONDS.labels("host_processing").observe(time.perf_counter() - decided.started)
        self.events.on_batch([(pending.item, reply) for pending, reply in answered])
        for pending, reply in answered:
            self._by_result[reply.result.value] += 1
            pending.inbound.results[reply.result.value] += 1
            pending.inbound.outstanding -= 1
        for _, inbound in batch.dead:
            self._counts["dead_records"] += 1
            inbound.results["dead"] += 1
            inbound.outstanding -= 1
        for inbound in batch.inbounds.values():
            if inbound.outstanding == 0:
                await inbound.ack()
                _log.info(
                    "request frame handled",
                    branch=inbound.branch_id,
                    frame_sequence=inbound.sequence,
                    records=sum(inbound.results.values()),
                    redelivered=inbound.delivery.redelivered,
                    results=dict(inbound.results),
                )

    async def _close_books(self) -> None:
        """Close the bank days before today (interest), once per new bank day; the standby
        closes them too, before the batch that follows."""
        rate = self.config.policy.interest_rate_bp
        if not rate:
            return
        now = self._clock()
        yesterday = bank_day(now) - dt.timedelta(days=1)
        if self._closed_through is not None and yesterday <= self._closed_through:
            return
        closed = await self.store.close_books(yesterday, rate, now)
        self._segment.extend([entry.hash for entry in closed.entries])
        if self.replicator is not None:
            await self.replicator.ship_close(closed)
        self._tiers_changed(closed.tier_changes)
        self._closed_through = yesterday

    def _tiers_changed(self, changes: Sequence[TierChange]) -> None:
        hook = self.on_tier_change
        for change in changes:
            self.events.emit(change.as_event(SENDER))
            if hook is None:
                continue
            try:
                hook(change)
            except Exception:
                _log.exception("tier change hook failed")

    def _reply_messages(self, answered: Sequence[tuple[_Pending, Reply]]) -> list[Message]:
        by_branch: dict[str, list[bytes]] = {}
        for pending, reply in answered:
            by_branch.setdefault(pending.item.branch_id, []).append(encode_reply(reply))
        messages = []
        for branch_id, records in by_branch.items():
            for start in range(0, len(records), MAX_RECORDS):
                sequence, chunk = next(self._reply_sequence), records[start : start + MAX_RECORDS]
                if self.guard is None:
                    body: bytes | None = encode_frame(
                        build_frame(FrameKind.REPLY, SENDER, sequence, chunk)
                    )
                else:
                    body = self.guard.seal_reply(branch_id, sequence, chunk)
                if body is not None:
                    messages.append(Message(REPLIES_EXCHANGE, branch_key(branch_id), body))
        return messages

    def _dead_messages(self, dead: Sequence[tuple[DeadRecord, _Inbound]]) -> list[Message]:
        return [
            Message(
                DEAD_EXCHANGE,
                inbound.delivery.routing_key,
                record.raw,
                {REASON_HEADER: record.reason, ORIGIN_HEADER: HOST_REQUESTS},
            )
            for record, inbound in dead
        ]

    async def _publish(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        try:
            await self.bus.publish(messages)
        except UnroutableError as error:
            # The rest went out; a branch without a reply queue gets its stored reply on retry.
            _log.warning("replies unroutable", error=str(error))

    async def _recover(self, batch: _Batch, *, carried: bool = True) -> None:
        """Give back every frame of a failed batch (and the ``carried`` records'), then pause."""
        in_hand = list(batch.inbounds.values())
        if carried:
            in_hand += [p.inbound for p in self._carried]
            self._carried = []
        try:
            await self._give_back(in_hand)
        except BranchnetError as error:
            _log.error("frames not given back", error=str(error))
        if not self._stopping:
            await asyncio.sleep(RETRY_DELAY_S)

    async def _give_back(self, inbounds: Sequence[_Inbound]) -> None:
        for inbound in inbounds:
            if self.guard is not None and inbound.branch_id and not inbound.settled:
                self.guard.forget(inbound.branch_id, inbound.sequence)
            await inbound.give_back()
