"""The request client: every terminal's requests, batched into frames, correlated with replies.

Terminals call :meth:`RequestClient.submit` and await the host's :class:`~common.replies.Reply`.
One sender task puts whatever is waiting (up to ``max_batch`` records) into ONE request frame
and publishes it. Batching adapts to load: a lone record leaves at once; while records keep
arriving the sender collects them (for at most ``linger_s``); and while ``window`` frames are
out (sent, some record of theirs not yet answered) the next frame fills up by itself — so under
light load frames are small and leave at once, under heavy load they grow with the host's
round trip, and the per-frame costs (signature, broker message, ack) are paid once for many
records. Each record is encoded once, so a retry (after
``timeout_s`` without a reply, at most ``retries`` times) resends the very same bytes: same
request id, origin time and PIN block, which the host's idempotency answers with the stored
reply.

A request submitted without a ``deadline`` gets one: the first send plus the whole
timeout budget (``timeout_s * (retries + 1)``), after which nobody waits for the answer; the
host declines a request it takes later with ``68`` and applies nothing.

Replies are matched by request id, in any order. A duplicate reply for an answered id is
counted and ignored. A reply frame that cannot be decoded is dead-lettered; an undecodable
record inside a good frame is dead-lettered on its own and the rest are used. The number of
requests in flight is bounded: ``submit`` waits for a slot (back-pressure).

With a :class:`~branch_node.session.BranchSession` (secure envelopes) the client signs on
before the first frame leaves, seals every request frame and opens every reply with the
session, signs on again every ``rekey_s`` and whenever the host asks (a host restart, a stale
epoch), and after such a re-key resends whatever is still unanswered. Frame sequence numbers
come from ``frame_sequence`` (the branch's durable state), so the host's replay window holds
across branch restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from pydantic import ValidationError

from branch_node.errors import BranchNotRegistered, ClientClosed, RequestTimeout
from branch_node.session import BranchSession
from common.bus import Bus, Delivery, Message, Subscription
from common.errors import BusClosedError, FrameError, UnroutableError
from common.frames import (
    MAX_FRAME_BYTES,
    MAX_RECORDS,
    Frame,
    FrameKind,
    build_frame,
    decode_frame,
    encode_frame,
)
from common.logs import get_logger
from common.replies import Reply, decode_reply
from common.requests import RequestBase, encode_request
from common.signon import Rekey, Welcome
from common.topology import (
    CORE,
    DEAD_EXCHANGE,
    ORIGIN_HEADER,
    REASON_HEADER,
    REQUESTS_EXCHANGE,
    branch_key,
    branch_reply_queue,
    branch_topology,
)

_log = get_logger(__name__)
#: Room left in a frame for its header line.
_HEADER_ROOM = 4096
#: How many finished request ids are remembered to tell duplicates from strays.
_REMEMBERED = 100_000

#: Told how a request ended: with its reply, or with the error that ended the wait.
Outcome = Callable[[Reply | Exception], None]


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """How the request client batches, waits and retries.

    Args:
        max_batch: most records in one frame.
        linger_s: how long the sender waits for more records when several are queued.
        window: request frames out at once (sent, not every record answered); 0: unbounded.
        timeout_s: how long to wait for a reply after each send.
        retries: resends after the first send before giving up.
        max_in_flight: requests submitted but not yet answered; more submits wait.
        prefetch: reply frames delivered to the client before it acks.
        rekey_s: with a secure session, sign on again after this long.
    """

    max_batch: int = 256
    linger_s: float = 0.002
    window: int = 2
    timeout_s: float = 10.0
    retries: int = 3
    max_in_flight: int = 4096
    prefetch: int = 32
    rekey_s: float = 600.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch <= MAX_RECORDS:
            raise ValueError(f"max_batch must lie in 1..{MAX_RECORDS}")
        if self.linger_s < 0 or self.timeout_s <= 0 or self.retries < 0 or self.window < 0:
            raise ValueError(
                "linger_s >= 0, window >= 0, timeout_s > 0 and retries >= 0 are required"
            )
        if self.max_in_flight < 1 or self.prefetch < 1:
            raise ValueError("max_in_flight and prefetch must be at least 1")
        if self.rekey_s <= 0:
            raise ValueError("rekey_s must be positive")

    @property
    def budget_s(self) -> float:
        """How long a request is waited for over all its sends: its deadline from the first."""
        return self.timeout_s * (self.retries + 1)


_DEFAULT = ClientConfig()


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    """A snapshot of the client's counters."""

    submitted: int
    answered: int
    timeouts: int
    resends: int
    in_flight: int
    queued: int
    max_in_flight: int
    frames_sent: int
    records_sent: int
    frames_received: int
    replies_received: int
    duplicate_replies: int
    late_replies: int
    stray_replies: int
    bad_frames: int
    bad_records: int
    sign_ons: int

    @property
    def mean_batch(self) -> float:
        """Records per request frame so far."""
        return self.records_sent / self.frames_sent if self.frames_sent else 0.0


@dataclass(slots=True)
class _Counters:
    submitted: int = 0
    answered: int = 0
    timeouts: int = 0
    resends: int = 0
    frames_sent: int = 0
    records_sent: int = 0
    frames_received: int = 0
    replies_received: int = 0
    duplicate_replies: int = 0
    late_replies: int = 0
    stray_replies: int = 0
    bad_frames: int = 0
    bad_records: int = 0
    sign_ons: int = 0


@dataclass(slots=True, eq=False)
class _OutFrame:
    """A sent request frame: its records, how many still wait for their answer, and the one
    timer that ends their wait (they were all sent at once)."""

    records: list[_Pending]
    waiting: int = 0
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True, eq=False)
class _Pending:
    request_id: str
    record: bytes = field(repr=False)
    on_outcome: Outcome
    finished: bool = False  # told its outcome, or abandoned by its caller
    attempts: int = 0
    frame: _OutFrame | None = None  # the frame that carried its latest send


def _resolve(future: asyncio.Future[Reply], outcome: Reply | Exception) -> None:
    """Hand ``outcome`` to ``future`` (unless its caller cancelled it meanwhile)."""
    if future.done():
        return
    if isinstance(outcome, Reply):
        future.set_result(outcome)
    else:
        future.set_exception(outcome)


class RequestClient:
    """Sends a branch's requests to the host in frames and hands back the replies.

    Args:
        bus: a connected bus.
        branch_id: the branch this client speaks for.
        on_reply: called with every decoded reply, duplicates included (for audit).
        session: seal requests and open replies with this secure session (None: plain).
        frame_sequence: hands out frame sequence numbers (default: from 0 in memory).
    """

    def __init__(
        self,
        bus: Bus,
        branch_id: str,
        *,
        max_batch: int = _DEFAULT.max_batch,
        linger_s: float = _DEFAULT.linger_s,
        window: int = _DEFAULT.window,
        timeout_s: float = _DEFAULT.timeout_s,
        retries: int = _DEFAULT.retries,
        max_in_flight: int = _DEFAULT.max_in_flight,
        prefetch: int = _DEFAULT.prefetch,
        on_reply: Callable[[Reply], None] | None = None,
        session: BranchSession | None = None,
        frame_sequence: Callable[[], int] | None = None,
        rekey_s: float = _DEFAULT.rekey_s,
    ) -> None:
        self.config = ClientConfig(
            max_batch, linger_s, window, timeout_s, retries, max_in_flight, prefetch, rekey_s
        )
        self.branch_id = branch_id
        self._bus = bus
        self._on_reply = on_reply
        self.session = session
        self._ready = asyncio.Event()
        self._welcomed = asyncio.Event()
        self._rekey = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(max_in_flight)
        self._pending: dict[str, _Pending] = {}
        self._outbox: deque[_Pending] = deque()
        self._has_work = asyncio.Event()
        self._frames_out: set[_OutFrame] = set()
        self._window_open = asyncio.Event()
        self._window_open.set()
        # request id -> answered (True) / timed out, oldest first. An OrderedDict: a plain
        # dict's oldest key, once many were deleted before it, costs a scan of their holes
        # (50 us a request at the bound), and the bound is reached in a long run.
        self._finished: OrderedDict[str, bool] = OrderedDict()
        self._frame_sequence = frame_sequence or itertools.count().__next__
        self._sender: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None
        self._failure: BranchNotRegistered | None = None
        self._counts = _Counters()

    @classmethod
    def from_config(
        cls,
        bus: Bus,
        branch_id: str,
        config: ClientConfig,
        *,
        on_reply: Callable[[Reply], None] | None = None,
        session: BranchSession | None = None,
        frame_sequence: Callable[[], int] | None = None,
    ) -> RequestClient:
        return cls(
            bus,
            branch_id,
            max_batch=config.max_batch,
            linger_s=config.linger_s,
            window=config.window,
            timeout_s=config.timeout_s,
            retries=config.retries,
            max_in_flight=config.max_in_flight,
            prefetch=config.prefetch,
            on_reply=on_reply,
            session=session,
            frame_sequence=frame_sequence,
            rekey_s=config.rekey_s,
        )

    @property
    def running(self) -> bool:
        return self._sender is not None

    async def start(self) -> None:
        """Declare the branch's topology, consume its reply queue, start the sender."""
        if self.running:
            return
        await self._bus.declare(CORE + branch_topology(self.branch_id))
        self._subscription = await self._bus.consume(
            branch_reply_queue(self.branch_id), self._on_frame, prefetch=self.config.prefetch
        )
        self._sender = asyncio.create_task(self._send_loop(), name=f"send:{self.branch_id}")
        if self.session is not None:
            self._keeper = asyncio.create_task(
                self._keep_session(), name=f"session:{self.branch_id}"
            )

    async def stop(self) -> None:
        """Stop sending and consuming; requests still waiting fail with :class:`ClientClosed`."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await subscription.cancel()
        self._fail_all(ClientClosed(f"request client of branch {self.branch_id} stopped"))

    async def submit(self, request: RequestBase) -> Reply:
        """Send ``request`` and return the host's reply.

        Raises:
            RequestTimeout: no reply after the first send and every retry.
            BranchNotRegistered: the host does not know this branch.
            ClientClosed: the client is not running (or stopped meanwhile).
            ValueError: a request with this id is already in flight.
        """
        request_id = request.request_id
        self._check_usable(request_id)
        async with self._slots:
            self._check_usable(request_id)
            if request.deadline is None:  # encoded once: every retry carries the same deadline
                deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.config.budget_s)
                request = request.model_copy(update={"deadline": deadline})
            future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
            pending = self._add(
                request_id, encode_request(request), functools.partial(_resolve, future)
            )
            try:
                return await future
            finally:
                self._abandon(pending)

    def send(self, request_id: str, record: bytes) -> asyncio.Future[Reply]:
        """Queue an encoded request record at once and return the future of its reply.

        For load generators that build their records in advance and bound what is in flight
        themselves: no slot is taken. The future fails as :meth:`submit` raises; cancelling
        it abandons the request.

        Raises:
            BranchNotRegistered, ClientClosed, ValueError: as :meth:`submit`.
        """
        self._check_usable(request_id)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        pending = self._add(request_id, record, functools.partial(_resolve, future))
        future.add_done_callback(lambda _: self._abandon(pending))
        return future

    def post(self, request_id: str, record: bytes, on_outcome: Outcome) -> None:
        """:meth:`send` without a future: ``on_outcome`` is called once, with the reply or with
        the error the future would hold (:class:`RequestTimeout`, ...).

        For a load generator at thousands of requests a second, where a future and its done
        callbacks per request cost more than the rest of the request's way through the client.
        ``on_outcome`` runs inside the client (while it reads a reply frame, or a timer) and
        must be quick; what it raises is logged and ignored.

        Raises:
            BranchNotRegistered, ClientClosed, ValueError: as :meth:`submit`.
        """
        self._check_usable(request_id)
        self._add(request_id, record, on_outcome)

    def _add(self, request_id: str, record: bytes, on_outcome: Outcome) -> _Pending:
        pending = _Pending(request_id, record, on_outcome)
        self._pending[request_id] = pending
        self._counts.submitted += 1
        self._enqueue(pending)
        return pending

    def _abandon(self, pending: _Pending) -> None:
        """Its caller no longer waits (answered, failed or cancelled): let it go."""
        if not pending.finished:
            pending.finished = True
            self._leave_frame(pending)
        if self._pending.get(pending.request_id) is pending:
            del self._pending[pending.request_id]

    def _finish(self, pending: _Pending, outcome: Reply | Exception) -> None:
        """Tell ``pending``'s caller its outcome, once."""
        self._abandon(pending)
        try:
            pending.on_outcome(outcome)
        except Exception as error:  # the caller's bug must not stop the client
            _log.error("request outcome observer failed", branch=self.branch_id, error=repr(error))

    def statistics(self) -> ClientStatistics:
        """A snapshot of the counters."""
        return ClientStatistics(
            in_flight=len(self._pending),
            queued=len(self._outbox),
            max_in_flight=self.config.max_in_flight,
            **asdict(self._counts),
        )

    # -- sending ----------------------------------------------------------------------------

    def _check_usable(self, request_id: str) -> None:
        if self._failure is not None:
            raise BranchNotRegistered(self.branch_id)
        if not self.running:
            raise ClientClosed(f"request client of branch {self.branch_id} is not running")
        if request_id in self._pending:
            raise ValueError(f"request {request_id} is already in flight")

    def _enqueue(self, pending: _Pending) -> None:
        self._outbox.append(pending)
        self._has_work.set()

    def _leave_frame(self, pending: _Pending) -> None:
        """``pending`` no longer waits on the frame that carried it (answered, failed, resent)."""
        frame, pending.frame = pending.frame, None
        if frame is None:
            return
        frame.waiting -= 1
        if frame.waiting == 0:
            self._frames_out.discard(frame)
            if frame.timer is not None:
                frame.timer.cancel()
                frame.timer = None
            self._window_open.set()

    async def _send_loop(self) -> None:
        window = self.config.window
        while True:
            await self._has_work.wait()
            if self.session is not None:
                await self._ready.wait()
            while window and len(self._frames_out) >= window:
                self._window_open.clear()
                await self._window_open.wait()
            await self._linger()
            batch = self._take_batch()
            if not self._outbox:
                self._has_work.clear()
            if batch:
                await self._publish(batch)

    async def _linger(self) -> None:
        """Collect records while they keep arriving, for at most ``linger_s``.

        Each pass yields to the event loop once, so terminals that are ready (typically woken
        by the same reply frame) can add their records; as soon as a pass brings nothing new
        the frame goes. A lone request under light load therefore leaves at once, while a burst
        fills the frame up to ``max_batch``.
        """
        if self.config.linger_s <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.linger_s
        waiting = len(self._outbox)
        while waiting < self.config.max_batch and loop.time() < deadline:
            await asyncio.sleep(0)
            if len(self._outbox) == waiting:
                return
            waiting = len(self._outbox)

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        size = _HEADER_ROOM
        while self._outbox and len(batch) < self.config.max_batch:
            pending = self._outbox[0]
            if pending.finished:  # answered late or abandoned by its caller
                self._outbox.popleft()
                continue
            if batch and size + len(pending.record) + 1 > MAX_FRAME_BYTES:
                break
            self._outbox.popleft()
            batch.append(pending)
            size += len(pending.record) + 1
        return batch

    async def _publish(self, batch: list[_Pending]) -> None:
        sequence = self._frame_sequence()
        records = [p.record for p in batch]
        if self.session is None:
            body = encode_frame(build_frame(FrameKind.REQUEST, self.branch_id, sequence, records))
        else:
            body = self.session.seal(sequence, records)
        message = Message(REQUESTS_EXCHANGE, branch_key(self.branch_id), body)
        try:
            await self._bus.publish([message])
        except UnroutableError:
            _log.error("branch not registered with the host", branch=self.branch_id)
            self._failure = BranchNotRegistered(self.branch_id)
            self._fail_all(self._failure)
            return
        except BusClosedError:
            self._fail_all(ClientClosed(f"the bus of branch {self.branch_id} is closed"))
            return
        except Exception as error:  # a transient bus failure: the timers resend the records
            _log.warning(
                "request frame not published; will resend",
                branch=self.branch_id,
                sequence=sequence,
                error=type(error).__name__,
            )
        else:
            self._counts.frames_sent += 1
            self._counts.records_sent += len(batch)
            _log.debug(
                "request frame sent", branch=self.branch_id, sequence=sequence, count=len(batch)
            )
        frame = _OutFrame(batch)
        for pending in batch:
            if not pending.finished:
                pending.attempts += 1
                self._leave_frame(pending)
                pending.frame = frame
                frame.waiting += 1
        if frame.waiting:
            self._frames_out.add(frame)
            frame.timer = asyncio.get_running_loop().call_later(
                self.config.timeout_s, self._expire, frame
            )

    def _expire(self, frame: _OutFrame) -> None:
        """``timeout_s`` after ``frame`` left: resend its unanswered records, or give up."""
        frame.timer = None
        for pending in frame.records:
            if pending.frame is not frame or pending.finished:
                continue  # answered, abandoned, or resent meanwhile
            self._leave_frame(pending)
            if pending.attempts <= self.config.retries:
                self._counts.resends += 1
                self._enqueue(pending)
                continue
            self._counts.timeouts += 1
            self._remember(pending.request_id, answered=False)
            self._finish(pending, RequestTimeout(pending.request_id, pending.attempts))

    # -- the secure session -------------------------------------------------------------------

    async def _keep_session(self) -> None:
        """Sign on, then again every ``rekey_s`` or when the host asks."""
        while True:
            if not await self._sign_on():
                return
            if self._rekey.is_set():  # asked by the host: what it refused must go again
                self._rekey.clear()
                self._resend_unanswered()
            self._ready.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rekey.wait(), self.config.rekey_s)

    async def _sign_on(self) -> bool:
        """Send hellos until a welcome comes back; False when the host does not know us."""
        assert self.session is not None
        while True:
            self._welcomed.clear()
            sequence = self._frame_sequence()
            hello = self.session.hello(sequence, dt.datetime.now(dt.UTC))
            try:
                await self._bus.publish(
                    [Message(REQUESTS_EXCHANGE, branch_key(self.branch_id), hello)]
                )
            except UnroutableError:
                _log.error("branch not registered with the host", branch=self.branch_id)
                self._failure = BranchNotRegistered(self.branch_id)
                self._fail_all(self._failure)
                return False
            except BusClosedError:
                self._fail_all(ClientClosed(f"the bus of branch {self.branch_id} is closed"))
                return False
            except Exception as error:
                _log.warning("sign-on not sent", branch=self.branch_id, error=type(error).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._welcomed.wait(), self.config.timeout_s)
                self._counts.sign_ons += 1
                return True
            _log.warning("no answer to sign-on; trying again", branch=self.branch_id)

    def _resend_unanswered(self) -> None:
        queued = {id(p) for p in self._outbox}
        for pending in self._pending.values():
            if pending.finished or id(pending) in queued:
                continue
            self._counts.resends += 1
            self._leave_frame(pending)
            self._enqueue(pending)

    def _on_sign_on(self, frame: Frame) -> None:
        assert self.session is not None
        record = self.session.accept(frame)
        if isinstance(record, Welcome):
            self._welcomed.set()
        elif isinstance(record, Rekey):
            _log.info("host asks to sign on again", branch=self.branch_id, reason=record.reason)
            self._ready.clear()
            self._rekey.set()

    def _fail_all(self, error: Exception) -> None:
        self._outbox.clear()
        for pending in list(self._pending.values()):
            if not pending.finished:
                self._finish(pending, error)

    def _remember(self, request_id: str, *, answered: bool) -> None:
        self._finished[request_id] = answered
        if len(self._finished) > _REMEMBERED:
            self._finished.popitem(last=False)

    # -- receiving --------------------------------------------------------------------------

    async def _on_frame(self, delivery: Delivery) -> None:
        """Consume one reply frame; nothing in it may stop the consumer."""
        try:
            await self._handle_frame(delivery)
        except Exception as error:
            _log.error(
                "reply frame handling failed", branch=self.branch_id, error=type(error).__name__
            )
            with contextlib.suppress(Exception):
                await delivery.nack(requeue=False)

    async def _handle_frame(self, delivery: Delivery) -> None:
        try:
            if self.session is None:
                frame = decode_frame(delivery.body, expect=FrameKind.REPLY)
            else:
                frame = self.session.open(delivery.body)
                if frame.header.kind is FrameKind.SIGN_ON:
                    self._on_sign_on(frame)
                    await delivery.ack()
                    return
        except FrameError as error:
            self._counts.bad_frames += 1
            _log.warning("reply frame rejected", branch=self.branch_id, reason=str(error))
            await self._bus.dead_letter(delivery, f"undecodable reply frame: {error}")
            return
        self._counts.frames_received += 1
        bad: list[tuple[bytes, str]] = []
        for record in frame.records:
            try:
                reply = decode_reply(record)
            except ValidationError as error:
                problem = error.errors(include_input=False, include_url=False)[0]
                bad.append((record, f"undecodable reply record: {problem['type']}"))
                continue
            self._settle(reply)
        if bad:
            await self._dead_letter_records(delivery, frame.header.sequence, bad)
        await delivery.ack()

    def _settle(self, reply: Reply) -> None:
        self._counts.replies_received += 1
        if self._on_reply is not None:
            try:
                self._on_reply(reply)
            except Exception as error:  # an observer's bug must not lose the reply
                _log.error("reply observer failed", branch=self.branch_id, error=repr(error))
        pending = self._pending.get(reply.request_id)
        if pending is None or pending.finished:
            answered = self._finished.get(reply.request_id)
            if answered is None:
                self._counts.stray_replies += 1
            elif answered:
                self._counts.duplicate_replies += 1
            else:
                self._counts.late_replies += 1
            return
        self._counts.answered += 1
        self._remember(reply.request_id, answered=True)
        self._finish(pending, reply)

    async def _dead_letter_records(
        self, delivery: Delivery, sequence: int, bad: list[tuple[bytes, str]]
    ) -> None:
        self._counts.bad_records += len(bad)
        _log.warning(
            "reply records rejected",
            branch=self.branch_id,
            sequence=sequence,
            count=len(bad),
            reason=bad[0][1],
        )
        messages = [
            Message(
                DEAD_EXCHANGE,
                delivery.routing_key,
                record,
                {REASON_HEADER: reason, ORIGIN_HEADER: delivery.queue},
            )
            for record, reason in bad
        ]
        try:
            await self._bus.publish(messages)
        except Exception as error:  # keep consuming; the log above says what was lost
            _log.warning(
                "rejected reply records not dead-lettered",
                branch=self.branch_id,
                error=type(error).__name__,
            )
