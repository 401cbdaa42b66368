"""The disaster-recovery standby: applies the primary's journal stream and can be promoted.

The standby consumes ``dr.replication`` (single active consumer), checks each frame's host
signature and epoch, checks that each batch continues its own chain (sequence and hashes),
writes it to its own store, stores each checkpoint whose signature verifies, and acks its
applied position on ``dr.acks``. Batches are written as they are checked, one transaction per
write: the batches checked while the previous write was under way are written together (group
commit), then their frames are acked, and the position once, by an acker task the next write
does not wait for (it publishes the latest position when several wait; a position ack is
transient, as the next one supersedes it). A batch it already holds is skipped (a
redelivery); a batch beyond its head means it missed entries (a wiped or new standby): it is
then *out of sync* (remembered in its store), acks nothing and cannot be promoted until
resynchronised from a snapshot of the primary's store (:func:`~host_node.store.copy_store`)
plus the stream's tail.

:func:`promote` applies everything still queued, then gives the store an epoch above every
epoch seen and announces it on ``dr.epoch``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from pydantic import ValidationError

from common.bus import Bus, Delivery, Message, Subscription
from common.errors import FrameError
from common.frames import FrameKind
from common.identity import load_identity
from common.logs import get_logger
from common.topology import CORE, DEFAULT_EXCHANGE, DR_ACKS, DR_REPLICATION
from host_node.checkpoint import SIGNER, signature_valid
from host_node.errors import HostError, StoreError
from host_node.journal import ChainHead
from host_node.replication import (
    STANDBY_SENDER,
    decode_batch,
    decode_checkpoint_record,
    epoch_message,
    open_signed_frame,
    read_fence,
    signed_frame,
    verify_batch,
)
from host_node.store import ReplicaRows, Store, ledger_path

_log = get_logger(__name__)
#: Store meta key set when a replica missed entries; a snapshot copy clears it.
_MISSED = "missed"


class StandbyService:
    """A standby host over ``data_dir``; it holds a copy of the host identity key."""

    def __init__(self, bus: Bus, data_dir: Path, *, prefetch: int = 32) -> None:
        self.bus = bus
        self.store = Store(ledger_path(data_dir))
        self.key = load_identity(data_dir, SIGNER)
        self.prefetch = prefetch
        self.epoch = 0
        self.in_sync = True
        self.applied_batches = 0
        self._last_checkpoint = 0
        self._lock = asyncio.Lock()
        self._subscription: Subscription | None = None
        self._ack_sequence = 0
        #: Frames checked and waiting for the writer with their batches; the head after them.
        self._pending: list[tuple[Delivery, list[ReplicaRows]]] = []
        self._tail = ChainHead()
        self._writer: asyncio.Task[None] | None = None
        #: Publishes the position when ``_unacked`` is set (see :meth:`_ack`).
        self._acker: asyncio.Task[None] | None = None
        self._unacked = False
        self._stopping = False

    async def start(self) -> None:
        self._stopping = False
        await self.store.open()
        self.epoch = await self.store.epoch()
        self.in_sync = await self.store.meta(_MISSED) is None
        self._last_checkpoint, _ = await self.store.checkpoint_tail()
        self._tail = self.store.head
        await self.bus.declare(CORE)
        self._subscription = await self.bus.consume(
            DR_REPLICATION, self._on_frame, prefetch=self.prefetch
        )
        _log.warning("standby consuming", head=self.store.head.seq, epoch=self.epoch)

    @property
    def signed_to(self) -> int:
        """The last entry a stored checkpoint covers."""
        return self._last_checkpoint

    async def stop(self) -> None:
        """Stop consuming; what was checked is written and acked first."""
        self._stopping = True
        async with self._lock:
            await self._drain()
        if self._subscription is not None:
            await self._subscription.cancel()
            self._subscription = None
        async with self._lock:
            await self._drain()
            await self.store.close()

    async def _on_frame(self, delivery: Delivery) -> None:
        async with self._lock:
            try:
                frame = open_signed_frame(delivery.body, self.key.public_key(), FrameKind.JOURNAL)
            except FrameError as error:
                _log.error("ALERT replication frame refused", reason=str(error))
                await self.bus.dead_letter(delivery, str(error))
                return
            if frame.header.epoch < self.epoch:
                await self.bus.dead_letter(delivery, f"stale epoch {frame.header.epoch}")
                return
            if frame.header.epoch > self.epoch:
                self.epoch = frame.header.epoch
                await self.store.set_epoch(self.epoch)
            tail, batches = self._tail, []
            try:
                for record in frame.records:
                    rows = await self._apply(orjson.loads(record), tail)
                    if rows is not None:
                        batches.append(rows)
                        tail = rows.head
            except (ValueError, KeyError, TypeError, ValidationError) as error:
                await self.bus.dead_letter(delivery, f"bad replication record: {error}"[:200])
                return
            if not batches:  # a checkpoint, a batch already held or one beyond a gap
                if self.in_sync and not self._pending:
                    self._ack()
                await delivery.ack()
                return
            self._tail = tail
            self._pending.append((delivery, batches))
            if self._writer is None or self._writer.done():
                self._writer = asyncio.create_task(self._write(), name="standby-writer")

    async def _write(self) -> None:
        """Write the checked frames' batches, and those checked meanwhile in one transaction
        each time round; then ack their frames and the position."""
        while self._pending:
            group, self._pending = self._pending, []
            try:
                await self.store.apply_replicas([rows for _, batches in group for rows in batches])
            except Exception as error:
                # as when a handler fails: the frames go back to the queue, to be checked again
                if isinstance(error, StoreError):
                    _log.error("ALERT replicated batches not written", reason=str(error))
                else:
                    _log.exception("ALERT replicated batches not written on a defect")
                returned, self._pending = [*group, *self._pending], []
                self._tail = self.store.head
                for delivery, _ in returned:
                    await delivery.nack(requeue=True)
                return
            self.applied_batches += sum(len(batches) for _, batches in group)
            if self.in_sync:
                self._ack()
            for delivery, _ in group:
                await delivery.ack()

    async def _drain(self) -> None:
        """Return once every checked frame is written (or given back) and its position acked."""
        if self._writer is not None:
            await asyncio.shield(self._writer)  # a cancelled waiter leaves the write be
        if self._acker is not None:
            await asyncio.shield(self._acker)

    async def _apply(self, document: dict[str, object], head: ChainHead) -> ReplicaRows | None:
        """Store a checkpoint, or check a batch (or a closing of the books) against the chain
        at ``head``: its rows to write (None: a batch already held, or one beyond a gap)."""
        if "checkpoint" in document:
            checkpoint = decode_checkpoint_record(document)
            if not signature_valid(self.key.public_key(), checkpoint):
                raise ValueError("checkpoint signature does not verify")
            await self._drain()  # a checkpoint covers written entries only
            if self._last_checkpoint < checkpoint.seq <= self.store.head.seq:
                await self.store.add_checkpoint(checkpoint)
                self._last_checkpoint = checkpoint.seq
            return None
        shipped = decode_batch(document["batch"])  # type: ignore[arg-type]
        if not shipped.entries and "close" not in shipped.record:
            return None
        # a closing of the books without entries is held once the chain is past it; on the
        # head it is closed again, which changes nothing when this store already closed it
        known = shipped.last_seq <= head.seq if shipped.entries else shipped.after < head.seq
        if known:
            return None
        if shipped.after != head.seq:
            await self._drain()  # what came before the gap is written and acked first
            held = self.store.head.seq
            if self.in_sync:
                _log.error(
                    "ALERT standby missed entries; resynchronise it",
                    head=held,
                    next=shipped.after + 1,
                )
            self.in_sync = False
            await self.store.set_meta(_MISSED, f"{held + 1}..{shipped.after}")
            return None
        return verify_batch(shipped, head)

    def _ack(self) -> None:
        """Have the acker publish the applied position; the write goes on meanwhile."""
        self._unacked = True
        if self._acker is None or self._acker.done():
            self._acker = asyncio.create_task(self._publish_acks(), name="standby-acks")

    async def _publish_acks(self) -> None:
        """Publish the latest position while one is wanted; retry one the bus refused
        (unless stopping)."""
        pause = 0.05
        while self._unacked:
            self._unacked = False
            self._ack_sequence += 1
            head = self.store.head
            record = orjson.dumps({"seq": head.seq, "hash": head.hash})
            body = signed_frame(
                self.key,
                FrameKind.ACK,
                STANDBY_SENDER,
                self._ack_sequence,
                [record],
                epoch=self.epoch,
            )
            try:
                await self.bus.publish([Message(DEFAULT_EXCHANGE, DR_ACKS, body, transient=True)])
            except Exception as error:
                _log.error("ALERT position ack not published", error=str(error)[:200])
                if self._stopping:
                    return
                self._unacked = True
                await asyncio.sleep(pause)
                pause = min(2 * pause, 1.0)


async def promote(bus: Bus, data_dir: Path, *, settle_s: float = 0.5) -> int:
    """Make the standby at ``data_dir`` the primary: returns its new epoch.

    Run it after the standby process stopped. It applies every replication frame still
    queued, refuses when the store is out of sync, then writes and announces an epoch above
    every epoch seen.

    Raises:
        HostError: the standby is out of sync (resynchronise it first).
    """
    standby = StandbyService(bus, data_dir)
    await standby.start()
    try:
        while True:
            await asyncio.sleep(settle_s)
            stats = await bus.queue_stats(DR_REPLICATION)
            before = standby.applied_batches
            if stats.messages == 0:
                await asyncio.sleep(settle_s)
                if standby.applied_batches == before:
                    break
        async with standby._lock:
            await standby._drain()
        if not standby.in_sync:
            raise HostError("the standby is out of sync: resynchronise it before promoting")
        fence = await read_fence(bus, standby.key.public_key())
        epoch = max(standby.epoch, fence, await standby.store.epoch()) + 1
        await standby.store.set_epoch(epoch)
        await bus.publish([epoch_message(standby.key, epoch)])
        _log.warning("standby promoted", epoch=epoch, head=standby.store.head.seq)
        return epoch
    finally:
        await standby.stop()
