"""The request client on both buses, against a tiny responder playing the host."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import pytest

from branch_node.client import RequestClient
from branch_node.errors import BranchNotRegistered, ClientClosed, RequestTimeout
from common.bus import Bus, Delivery, Message
from common.frames import MAX_FRAME_BYTES, FrameKind, build_frame, encode_frame
from common.ids import card_number, request_id
from common.replies import Reply, encode_reply
from common.requests import Deposit, RecordError, Request, decode_request, encode_request
from common.results import ResultCode
from common.topology import (
    CORE,
    DEAD_QUEUE,
    REASON_HEADER,
    REPLIES_EXCHANGE,
    branch_key,
    host_topology,
)
from tests.branch_node.fakes import Responder, reply_to

if TYPE_CHECKING:
    from tests.conftest import BusFactory

BRANCH = "0001"
ClientFactory = Callable[..., Awaitable[RequestClient]]


def deposit(sequence: int, *, branch: str = BRANCH, terminal: str = "01") -> Deposit:
    return Deposit(
        request_id=request_id(branch, terminal, sequence),
        branch_id=branch,
        teller_id="T1",
        terminal_id=terminal,
        origin_time=dt.datetime.now(dt.UTC),
        account=card_number(branch, terminal, 1),
        amount=100 * sequence,
    )


def echo_sequence(request: Request) -> Reply:
    """Approve, putting the request's sequence in ``balance`` so correlation can be checked."""
    return reply_to(request.request_id, balance=int(request.request_id.rsplit("-", 1)[1]))


@pytest.fixture
async def host_bus(bus_factory: BusFactory) -> Bus:
    """The host's connection, with branch 0001 registered (on either bus)."""
    bus = await bus_factory("host")
    await bus.declare(CORE + host_topology([BRANCH]))
    return bus


@pytest.fixture
async def dead_letters(host_bus: Bus) -> list[Delivery]:
    seen: list[Delivery] = []

    async def keep(delivery: Delivery) -> None:
        seen.append(delivery)
        await delivery.ack()

    await host_bus.consume(DEAD_QUEUE, keep, prefetch=100)
    return seen


@pytest.fixture
async def make_client(bus_factory: BusFactory, host_bus: Bus) -> AsyncIterator[ClientFactory]:
    started: list[RequestClient] = []

    async def make(branch: str = BRANCH, **options: object) -> RequestClient:
        client = RequestClient(await bus_factory(f"branch-{branch}"), branch, **options)  # type: ignore[arg-type]
        await client.start()
        started.append(client)
        return client

    yield make
    for client in started:
        await client.stop()


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_many_concurrent_requests_travel_in_few_frames(
    host_bus: Bus, make_client: ClientFactory
) -> None:
    responder = Responder(host_bus, echo_sequence)
    await responder.start()
    client = await make_client(max_batch=64)
    replies = await asyncio.wait_for(
        asyncio.gather(*(client.submit(deposit(n)) for n in range(1, 301))), 10
    )
    assert [r.balance for r in replies] == list(range(1, 301))
    assert sum(responder.frame_sizes) == 300
    assert len(responder.frame_sizes) <= 10
    assert max(responder.frame_sizes) == 64  # frames fill up to max_batch, no further
    stats = client.statistics()
    assert stats.frames_sent == len(responder.frame_sizes) and stats.mean_batch >= 30
    assert stats.answered == 300 and stats.in_flight == 0


async def test_a_trickle_of_requests_over_a_few_loop_turns_shares_frames(
    host_bus: Bus, make_client: ClientFactory
) -> None:
    responder = Responder(host_bus)
    await responder.start()
    client = await make_client(linger_s=0.5)  # long enough never to be what stops it

    async def customer(n: int) -> Reply:
        for _ in range(n % 4):  # arrive over several turns of the event loop
            await asyncio.sleep(0)
        return await client.submit(deposit(n))

    replies = await asyncio.wait_for(asyncio.gather(*(customer(n) for n in range(1, 101))), 10)
    assert len(replies) == 100
    assert len(responder.frame_sizes) <= 2  # without lingering: one frame per loop turn


async def test_while_the_window_is_full_the_next_frame_fills_up(
    host_bus: Bus, make_client: ClientFactory
) -> None:
    # The responder holds its answers until 11 are due: the first frame's lone record, then
    # the ten that arrive while that frame is out must wait and leave together.
    responder = Responder(host_bus, hold=11)
    await responder.start()
    client = await make_client(window=1)
    first = asyncio.ensure_future(client.submit(deposit(1)))
    await eventually(lambda: responder.frame_sizes == [1])
    rest = [asyncio.ensure_future(client.submit(deposit(n))) for n in range(2, 12)]
    await asyncio.sleep(0.05)
    assert responder.frame_sizes == [1]  # nothing leaves while the one frame is out
    assert client.statistics().queued == 10
    responder.hold = 1
    await responder.send(BRANCH, [reply_to(deposit(1).request_id)])
    await asyncio.wait_for(first, 5)
    await eventually(lambda: len(responder.frame_sizes) == 2)
    assert responder.frame_sizes == [1, 10]
    replies = await asyncio.wait_for(asyncio.gather(*rest), 5)
    assert len(replies) == 10 and client.statistics().in_flight == 0


async def test_a_timed_out_frame_leaves_the_window(
    host_bus: Bus, make_client: ClientFactory
) -> None:
    responder = Responder(host_bus, drop_first=True)  # the first copy of each goes unanswered
    await responder.start()
    client = await make_client(window=1, timeout_s=0.2, retries=1)
    replies = await asyncio.wait_for(
        asyncio.gather(*(client.submit(deposit(n)) for n in range(1, 4))), 5
    )
    assert [r.approved for r in replies] == [True] * 3
    assert sum(responder.copies.values()) == 6


async def test_under_light_load_a_request_leaves_at_once(
    host_bus: Bus, make_client: ClientFactory
) -> None:
    responder = Responder(host_bus)
    await responder.start()
    client = await make_client(linger_s=0.5)  # a linger this long would show
    started = time.perf_counter()
    for n in range(1, 11):
        await asyncio.wait_for(client.submit(deposit(n)), 5)
    assert time.perf_counter() - started < 0.5 * 2
    assert responder.frame_sizes == [1] * 10


async def test_replies_in_any_order_reach_the_right_caller(
    host_bus: Bus, make_client: ClientFactory
) -> None:
    # The responder holds 40 replies and answers them in reverse, in one frame.
    responder = Responder(host_bus, echo_sequence, hold=40)
    await responder.start()
    client = await make_client(max_batch=8, window=0)  # no frame window: all 40 go at once
    replies = await asyncio.wait_for(
        asyncio.gather(*(client.submit(deposit(n)) for n in range(1, 41))), 10
    )
    assert len(responder.frame_sizes) >= 5  # the requests came in several frames
    assert [r.request_id for r in replies] == [request_id(BRANCH, "01", n) for n in range(1, 41)]
    assert [r.balance for r in replies] == list(range(1, 41))


async def test_a_lost_request_is_resent_with_identical_bytes(
    host_bus: Bus, make_client: ClientFactory
) -> None:
    responder = Responder(host_bus, drop_first=True)
    await responder.start()
    client = await make_client(timeout_s=0.1, retries=2)
    request = deposit(7)
    reply = await asyncio.wait_for(client.submit(request), 5)
    assert reply.request_id == request.request_id and reply.approved
    assert responder.copies[request.request_id] == 2
    first, second = responder.records
    assert first == second  # same id, same origin time, same deadline, same everything
    assert client.statistics().resends == 1 and client.statistics().timeouts == 0


async def test_a_request_carries_the_deadline_of_its_whole_timeout_budget(
    host_bus: Bus, make_client: ClientFactory
) -> None:
    responder = Responder(host_bus)
    await responder.start()
    client = await make_client(timeout_s=2.0, retries=4)
    before = dt.datetime.now(dt.UTC)
    await asyncio.wait_for(client.submit(deposit(1)), 5)
    after = dt.datetime.now(dt.UTC)
    sent = decode_request(responder.records[0])
    assert not isinstance(sent, RecordError) and sent.deadline is not None
    budget = dt.timedelta(seconds=10)  # 2 s x (4 retries + 1 send)
    assert before + budget <= sent.deadline <= after + budget
    # a deadline the caller set is kept as it is
    own = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    await asyncio.wait_for(client.submit(deposit(2).model_copy(update={"deadline": own})), 5)
    kept = decode_request(responder.records[1])
    assert not isinstance(kept, RecordError) and kept.deadline == own


async def test_no_reply_after_every_retry_raises_request_timeout(
    host_bus: Bus, make_client: ClientFactory
) -> None:
    responder = Responder(host_bus, silent=True)
    await responder.start()
    client = await make_client(timeout_s=0.05, retries=2)
    request = deposit(3)
    with pytest.raises(RequestTimeout) as caught:
        await asyncio.wait_for(client.submit(request), 5)
    assert caught.value.request_id == request.request_id and caught.value.attempts == 3
    assert responder.copies[request.request_id] == 3
    assert len(set(responder.records)) == 1
    stats = client.statistics()
    assert stats.timeouts == 1 and stats.in_flight == 0
    # A reply that arrives after the caller gave up is counted, not delivered.
    await responder.send(BRANCH, [reply_to(request.request_id)])
    await eventually(lambda: client.statistics().late_replies == 1)


async def test_a_duplicate_reply_is_ignored_but_counted_and_observed(
    host_bus: Bus, make_client: ClientFactory
) -> None:
    responder = Responder(host_bus, duplicate=True, duplicate_result=ResultCode.WRONG_PIN)
    await responder.start()
    observed: list[Reply] = []
    client = await make_client(on_reply=observed.append)
    reply = await asyncio.wait_for(client.submit(deposit(1)), 5)
    assert reply.result is ResultCode.APPROVED
    await eventually(lambda: client.statistics().duplicate_replies == 1)
    assert [r.result for r in observed] == [ResultCode.APPROVED, ResultCode.WRONG_PIN]


async def test_a_garbage_reply_frame_is_dead_lettered_and_the_client_carries_on(
    host_bus: Bus, make_client: ClientFactory, dead_letters: list[Delivery]
) -> None:
    responder = Responder(host_bus)
    await responder.start()
    client = await make_client()
    await host_bus.publish([Message(REPLIES_EXCHANGE, branch_key(BRANCH), b"\x00garbage")])
    await eventually(lambda: len(dead_letters) == 1)
    assert dead_letters[0].body == b"\x00garbage"
    assert str(dead_letters[0].headers[REASON_HEADER]).startswith("undecodable reply frame")
    reply = await asyncio.wait_for(client.submit(deposit(1)), 5)
    assert reply.approved
    assert client.statistics().bad_frames == 1


def _garbage_frames() -> dict[str, bytes]:
    reply = encode_reply(reply_to(request_id(BRANCH, "01", 1)))
    good = encode_frame(build_frame(FrameKind.REPLY, "host", 1, [reply, reply]))
    return {
        "empty": b"",
        "not json": b"\xff\xfe" * 50,
        "a request frame": encode_frame(build_frame(FrameKind.REQUEST, "0001", 1, [reply])),
        "a record too many": good + b"\n" + reply,
        "a tampered record": good.replace(b'"00"', b'"51"', 1),
        "a header only": good.partition(b"\n")[0],
        "too large": b"x" * (MAX_FRAME_BYTES + 1),
    }


@pytest.mark.parametrize("body", _garbage_frames().values(), ids=_garbage_frames().keys())
async def test_garbage_of_any_shape_never_stops_the_consumer(
    host_bus: Bus, make_client: ClientFactory, dead_letters: list[Delivery], body: bytes
) -> None:
    responder = Responder(host_bus)
    await responder.start()
    client = await make_client()
    await host_bus.publish([Message(REPLIES_EXCHANGE, branch_key(BRANCH), body)] * 3)
    await eventually(lambda: len(dead_letters) == 3)
    assert all(d.body == body for d in dead_letters)
    reply = await asyncio.wait_for(client.submit(deposit(1)), 5)
    assert reply.approved
    assert client.statistics().bad_frames == 3 and client.statistics().answered == 1


async def test_a_bad_record_in_a_good_frame_is_dead_lettered_alone(
    host_bus: Bus, make_client: ClientFactory, dead_letters: list[Delivery]
) -> None:
    responder = Responder(host_bus, silent=True)
    await responder.start()
    client = await make_client()
    request = deposit(5)
    waiting = asyncio.create_task(client.submit(request))
    await eventually(lambda: responder.copies[request.request_id] == 1)
    records = [b'{"request_id": 5}', encode_reply(reply_to(request.request_id, balance=42))]
    frame = build_frame(FrameKind.REPLY, "host", 0, records)
    await host_bus.publish([Message(REPLIES_EXCHANGE, branch_key(BRANCH), encode_frame(frame))])
    reply = await asyncio.wait_for(waiting, 5)
    assert reply.balance == 42
    await eventually(lambda: len(dead_letters) == 1)
    assert dead_letters[0].body == b'{"request_id": 5}'
    assert str(dead_letters[0].headers[REASON_HEADER]).startswith("undecodable reply record")
    assert client.statistics().bad_records == 1


async def test_a_branch_the_host_does_not_know_fails_clearly(
    host_bus: Bus, make_client: ClientFactory
) -> None:
    client = await make_client("0002")
    with pytest.raises(BranchNotRegistered, match="0002 is not registered"):
        await asyncio.wait_for(client.submit(deposit(1, branch="0002")), 5)
    with pytest.raises(BranchNotRegistered):
        await client.submit(deposit(2, branch="0002"))


async def test_in_flight_requests_are_bounded(host_bus: Bus, make_client: ClientFactory) -> None:
    responder = Responder(host_bus, hold=1000)  # holds every reply for now
    await responder.start()
    client = await make_client(max_in_flight=3)
    tasks = [asyncio.create_task(client.submit(deposit(n))) for n in range(1, 6)]
    await eventually(lambda: len(responder.records) == 3)
    await asyncio.sleep(0.05)
    stats = client.statistics()
    assert stats.in_flight == 3 and stats.submitted == 3 and len(responder.records) == 3
    responder.hold = 0
    held, responder.held = responder.held, []
    await responder.send(BRANCH, held)
    replies = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert len(replies) == 5 and len(responder.records) == 5


async def test_stop_fails_waiting_callers_and_refuses_new_ones(
    host_bus: Bus, make_client: ClientFactory
) -> None:
    responder = Responder(host_bus, silent=True)
    await responder.start()
    client = await make_client()
    waiting = asyncio.create_task(client.submit(deposit(1)))
    await eventually(lambda: len(responder.records) == 1)
    await client.stop()
    with pytest.raises(ClientClosed):
        await waiting
    with pytest.raises(ClientClosed):
        await client.submit(deposit(2))


async def test_the_same_request_id_twice_in_flight_is_refused(
    host_bus: Bus, make_client: ClientFactory
) -> None:
    responder = Responder(host_bus, silent=True)
    await responder.start()
    client = await make_client()
    waiting = asyncio.create_task(client.submit(deposit(1)))
    await eventually(lambda: client.statistics().in_flight == 1)
    with pytest.raises(ValueError, match="already in flight"):
        await client.submit(deposit(1))
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert client.statistics().in_flight == 0


async def test_post_tells_each_outcome_to_its_callback(
    host_bus: Bus, make_client: ClientFactory
) -> None:
    responder = Responder(host_bus, echo_sequence)
    await responder.start()
    client = await make_client(max_batch=16)
    outcomes: dict[int, Reply | Exception] = {}
    for n in range(1, 41):
        client.post(request_id(BRANCH, "01", n), encode_request(deposit(n)), _keep(outcomes, n))
    with pytest.raises(ValueError, match="already in flight"):
        client.post(request_id(BRANCH, "01", 40), encode_request(deposit(40)), print)
    await eventually(lambda: len(outcomes) == 40)
    assert all(isinstance(o, Reply) and o.balance == n for n, o in outcomes.items())
    stats = client.statistics()
    assert stats.answered == 40 and stats.in_flight == 0 and stats.frames_sent < 40


async def test_post_tells_a_timeout_and_a_failing_callback_stops_nothing(
    host_bus: Bus, make_client: ClientFactory
) -> None:
    responder = Responder(host_bus, drop_first=True)  # every first copy goes unanswered
    await responder.start()
    client = await make_client(timeout_s=0.1, retries=0)
    outcomes: dict[int, Reply | Exception] = {}

    def broken(_: Reply | Exception) -> None:
        raise RuntimeError("observer bug")

    client.post(request_id(BRANCH, "01", 1), encode_request(deposit(1)), broken)
    client.post(request_id(BRANCH, "01", 2), encode_request(deposit(2)), _keep(outcomes, 2))
    await eventually(lambda: 2 in outcomes)
    assert isinstance(outcomes[2], RequestTimeout) and outcomes[2].attempts == 1
    assert client.statistics().timeouts == 2 and client.statistics().in_flight == 0
    responder.drop_first = False
    client.post(request_id(BRANCH, "01", 3), encode_request(deposit(3)), _keep(outcomes, 3))
    await eventually(lambda: 3 in outcomes)
    assert isinstance(outcomes[3], Reply) and outcomes[3].approved


async def test_a_cancelled_send_leaves_its_frame_so_the_window_opens(
    host_bus: Bus, make_client: ClientFactory
) -> None:
    responder = Responder(host_bus, silent=True)
    await responder.start()
    client = await make_client(window=1)
    first = client.send(request_id(BRANCH, "01", 1), encode_request(deposit(1)))
    await eventually(lambda: len(responder.records) == 1)
    second = client.send(request_id(BRANCH, "01", 2), encode_request(deposit(2)))
    await asyncio.sleep(0.05)
    assert len(responder.records) == 1  # the window is full
    first.cancel()
    await eventually(lambda: len(responder.records) == 2)
    assert client.statistics().in_flight == 1
    second.cancel()
    await eventually(lambda: client.statistics().in_flight == 0)


def _keep(outcomes: dict[int, Reply | Exception], n: int) -> Callable[[Reply | Exception], None]:
    def keep(outcome: Reply | Exception) -> None:
        outcomes[n] = outcome

    return keep
