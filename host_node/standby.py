"""The disaster-recovery standby: applies the primary's journal stream and can be promoted.

The standby consumes ``dr.replication`` (single active consumer), checks each frame's host
signature and epoch, checks that each batch continues its own chain (sequence and hashes),
writes it to its own store in one transaction, stores each checkpoint whose signature
verifies, and acks its applied position on ``dr.acks``. A batch it already holds is skipped
(a redelivery); a batch beyond its head means it missed entries (a wiped or new standby): it
is then *out of sync* (remembered in its store), acks nothing and cannot be promoted until
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
from host_node.errors import HostError
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
from host_node.store import Store, ledger_path

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

    async def start(self) -> None:
        await self.store.open()
        self.epoch = await self.store.epoch()
        self.in_sync = await self.store.meta(_MISSED) is None
        self._last_checkpoint, _ = await self.store.checkpoint_tail()
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
        if self._subscription is not None:
            await self._subscription.cancel()
            self._subscription = None
        async with self._lock:
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
            try:
                for record in frame.records:
                    await self._apply(orjson.loads(record))
            except (ValueError, KeyError, TypeError, ValidationError) as error:
                await self.bus.dead_letter(delivery, f"bad replication record: {error}"[:200])
                return
            if self.in_sync:
                await self._ack()
            await delivery.ack()

    async def _apply(self, document: dict[str, object]) -> None:
        head = self.store.head
        if "checkpoint" in document:
            checkpoint = decode_checkpoint_record(document)
            if not signature_valid(self.key.public_key(), checkpoint):
                raise ValueError("checkpoint signature does not verify")
            if self._last_checkpoint < checkpoint.seq <= head.seq:
                await self.store.add_checkpoint(checkpoint)
                self._last_checkpoint = checkpoint.seq
            return
        shipped = decode_batch(document["batch"])  # type: ignore[arg-type]
        if not shipped.entries or shipped.last_seq <= head.seq:
            return
        if shipped.first_seq != head.seq + 1:
            if self.in_sync:
                _log.error(
                    "ALERT standby missed entries; resynchronise it",
                    head=head.seq,
                    next=shipped.first_seq,
                )
            self.in_sync = False
            await self.store.set_meta(_MISSED, f"{head.seq + 1}..{shipped.first_seq - 1}")
            return
        await self.store.apply_replica(verify_batch(shipped, head))
        self.applied_batches += 1

    async def _ack(self) -> None:
        self._ack_sequence += 1
        head = self.store.head
        record = orjson.dumps({"seq": head.seq, "hash": head.hash})
        body = signed_frame(
            self.key, FrameKind.ACK, STANDBY_SENDER, self._ack_sequence, [record], epoch=self.epoch
        )
        await self.bus.publish([Message(DEFAULT_EXCHANGE, DR_ACKS, body)])


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
