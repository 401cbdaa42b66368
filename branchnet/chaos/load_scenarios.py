"""Message and load faults for ``branchnet chaos``: poison, deadlines, a slow dashboard, overload.

Each injector runs beside the terminals' workload (see :mod:`branchnet.chaos.scenarios`) and
adds what it observed (``run.observed``) and its own checks (``run.checks``: each must hold
for the run to pass) to the report:

- ``poison-message``: undecodable, unsigned, forged, misrouted and unusable frames go onto
  ``host.requests`` beside the good traffic; each must reach ``bn.dead`` once, with a reason,
  and the host must go on answering. No input is known that crashes the host process (the
  one that failed a batch, a signed hello with a small-order X25519 key, is refused now), so
  there is no crash loop to stop: ``x-delivery-limit`` stays the last resort and the report
  shows each poison's delivery count.
- ``deadline``: SIGSTOP the host for longer than the branches' timeout budget, then SIGCONT:
  requests that expired in the queue are declined ``68`` with no postings.
- ``slow-dashboard``: an MQTT subscriber (QoS 1, acking slowly) on ``bank/events/#`` through
  RabbitMQ's MQTT plugin, its queue bounded by policy (the broker drops its oldest events):
  transactions see no timeout, other subscribers are not held up.
- ``overload``: measure the rate the host sustains, then offer twice that (open model): the
  host's memory stays bounded and nothing is lost or applied twice (timeouts may happen).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import os
import random
import signal
import time
import urllib.parse
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from branch_node import TIMEOUT, Branch, ClientConfig, Outcome
from branchnet import broker
from branchnet.chaos.instruments import DepositLoad, HostRss, host_pid
from common.amqp_bus import AmqpBus
from common.bus import Bus, Delivery, Message
from common.envelope import sign_header
from common.events import StatsSummary, decode_events, decode_stats
from common.frames import Frame, FrameKind, build_frame, encode_frame
from common.identity import branch_identity, load_identity
from common.ids import card_number
from common.requests import Deposit
from common.results import ResultCode
from common.topology import (
    CORE,
    DEAD_QUEUE,
    EVENTS_EXCHANGE,
    HOST_REQUESTS,
    REASON_HEADER,
    REQUESTS_EXCHANGE,
    Binding,
    QueueSpec,
    Topology,
    branch_key,
    stats_key,
)
from dashboard.sources import MqttEndpoint
from host_node import JournalSummary, journal_index, ledger_path

if TYPE_CHECKING:  # scenarios.py registers these: no import of it at run time
    from branchnet.chaos.scenarios import Injector, _Run

#: ``host.requests``' delivery limit: a message handed back this often goes to ``bn.dead``.
DELIVERY_LIMIT = next(q.delivery_limit for q in CORE.queues if q.name == HOST_REQUESTS)

# -- shared instruments ------------------------------------------------------------------------


async def _bus(run: _Run, name: str) -> AmqpBus:
    assert run.config.amqp_url is not None
    bus = AmqpBus(run.config.amqp_url, name=name)
    await bus.connect()
    return bus


async def _journal_when_drained(run: _Run) -> Mapping[str, JournalSummary]:
    """The journal by request id, once the host has taken every request queued."""
    from branchnet.chaos.scenarios import _drained

    bus = await _bus(run, "chaos-drain")
    try:
        await _drained(bus, timeout_s=120, store=ledger_path(run.config.data_dir))
    finally:
        await bus.close()
    return journal_index(ledger_path(run.config.data_dir))


def _outcomes(run: _Run) -> list[Outcome]:
    return [o for report in run.finished.result() for o in report.outcomes]


# -- poison-message ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Poison:
    label: str
    message: Message
    #: The body that reaches bn.dead (the frame; for a bad record in a good frame, the record).
    dead_body: bytes


def _signed_hello(
    identity: Ed25519PrivateKey, branch_id: str, sequence: int, ephemeral: str
) -> bytes:
    record = b'{"branch_id":"%s","type":"hello","ephemeral":"%s","nonce":"%s","at":"%s"}' % (
        branch_id.encode(),
        ephemeral.encode(),
        os.urandom(16).hex().encode(),
        dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode(),
    )
    frame = build_frame(FrameKind.SIGN_ON, branch_id, sequence, [record])
    return encode_frame(Frame(sign_header(frame.header, identity), frame.records))


def _poisons(run: _Run, branch: Branch, other: str, round_: int) -> list[_Poison]:
    """One of each poison, as ``branch`` (or its key holder) might send it."""
    branch_id = branch.branch_id
    key = branch_key(branch_id)
    identity = load_identity(run.config.data_dir, branch_identity(branch_id))
    garbage = b"\x00poison-%d\xff" % round_ + os.urandom(32)
    record = b'{"request_id":"%s-01-%d","kind":"deposit"' % (branch_id.encode(), 900 + round_)
    plain = encode_frame(build_frame(FrameKind.REQUEST, branch_id, 10**9 + round_, [record]))
    # taken from the branch's own frame counter, so its replay window is not disturbed
    sequence = branch._next_frame_sequence()
    unusable = _signed_hello(identity, branch_id, sequence, "00" * 32)
    others = load_identity(run.config.data_dir, branch_identity(other))
    stranger = _signed_hello(others, branch_id, 10**9 + round_, "11" * 32)
    misrouted = _signed_hello(identity, branch_id, 10**9 + round_, "22" * 32)
    poisons = [
        _Poison("not_a_frame", Message(REQUESTS_EXCHANGE, key, garbage), garbage),
        _Poison("unsealed_frame", Message(REQUESTS_EXCHANGE, key, plain), plain),
        _Poison("signed_by_another_branch", Message(REQUESTS_EXCHANGE, key, stranger), stranger),
        _Poison("wrong_route", Message(REQUESTS_EXCHANGE, branch_key(other), misrouted), misrouted),
        _Poison("small_order_key_hello", Message(REQUESTS_EXCHANGE, key, unusable), unusable),
    ]
    session = branch.client.session
    if session is not None and session.ready:
        bad_record = b'{"poison":%d,"kind":"deposit"' % round_  # not JSON: no request id
        sealed = session.seal(branch._next_frame_sequence(), [bad_record])
        poisons.append(
            _Poison("undecodable_record", Message(REQUESTS_EXCHANGE, key, sealed), bad_record)
        )
    return poisons


async def _poison_messages(run: _Run) -> None:
    bus = await _bus(run, "chaos-poison")
    dead: list[Delivery] = []

    async def keep(delivery: Delivery) -> None:
        dead.append(delivery)
        await delivery.ack()

    subscription = await bus.consume(DEAD_QUEUE, keep, prefetch=200)
    sent: list[_Poison] = []
    ids = [b.branch_id for b in run.branches]
    try:
        for round_ in itertools.count():
            if not await run.pause(0.5, 1.5):
                break
            branch = run.branches[round_ % len(run.branches)]
            other = ids[(round_ + 1) % len(ids)]
            poisons = _poisons(run, branch, other, round_)
            await bus.publish([p.message for p in poisons])
            sent.extend(poisons)
            run.faults["poison_messages"] += len(poisons)
        await asyncio.wait({run.finished})
        expected = Counter(p.dead_body for p in sent)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not expected <= Counter(d.body for d in dead):
            await asyncio.sleep(0.2)
        host_answering = await _probe(run)
    finally:
        await subscription.cancel()
        await bus.close()
    _judge_poison(run, sent, dead, host_answering)


async def _probe(run: _Run) -> bool:
    """After every poison: a deposit into an account that does not exist gets its ``14``."""
    probe = DepositLoad(run)
    branch = run.branches[0]
    account = card_number(branch.branch_id, "98", 1)
    request = Deposit(**probe.base(branch, "98", 30.0), account=account, amount=100)
    probe.send(branch, request, account, 100, expected=ResultCode.NO_SUCH_ACCOUNT)
    await probe.settle(60)
    run.outcomes.extend(probe.outcomes)
    return [o.result for o in probe.outcomes] == [ResultCode.NO_SUCH_ACCOUNT.value]


def _judge_poison(
    run: _Run, sent: list[_Poison], dead: list[Delivery], host_answering: bool
) -> None:
    by_body = {p.dead_body: p.label for p in sent}
    arrived = Counter(d.body for d in dead if d.body in by_body)
    reasons: dict[str, Counter[str]] = {}
    deliveries: Counter[str] = Counter()
    for delivery in dead:
        label = by_body.get(delivery.body)
        if label is None:
            continue
        reason = str(delivery.headers.get(REASON_HEADER, ""))
        reasons.setdefault(label, Counter())[reason.split(":")[0][:60]] += 1
        deliveries[str(delivery.headers.get("x-delivery-count", "first"))] += 1
    run.observed.update(
        poisons_sent=dict(Counter(p.label for p in sent)),
        dead_lettered=sum(arrived.values()),
        reasons={label: dict(counts) for label, counts in reasons.items()},
        delivery_counts=dict(deliveries),
        delivery_limit=DELIVERY_LIMIT,
        host_crash_path="none known: every poison is refused on its first delivery",
    )
    run.checks.update(
        poison_all_dead_lettered_once=bool(sent) and all(arrived[p.dead_body] == 1 for p in sent),
        poison_every_reason_given=all(
            delivery.headers.get(REASON_HEADER) for delivery in dead if delivery.body in by_body
        ),
        host_still_answering=host_answering,
    )


# -- deadline ----------------------------------------------------------------------------------

#: Short budgets, so that a pause of seconds outlives them: 1 s x (2 retries + 1) = 3 s.
DEADLINE_CLIENT = ClientConfig(timeout_s=1.0, retries=2)


async def _pause_host(run: _Run) -> None:
    budget = DEADLINE_CLIENT.budget_s
    paused_s: list[float] = []
    while await run.pause(1.0, 2.0):
        pid = host_pid(run)
        if pid is None:
            continue
        os.kill(pid, signal.SIGSTOP)
        run.faults["host_paused"] += 1
        stopped_at, answered = time.monotonic(), run.answered()
        try:
            await asyncio.sleep(run.rng.uniform(budget + 1.0, budget + 2.5))
        finally:
            os.kill(pid, signal.SIGCONT)
        paused_s.append(time.monotonic() - stopped_at)
        await run.measure_recovery(stopped_at, answered)
    await asyncio.wait({run.finished})
    journal = await _journal_when_drained(run)
    late = [s for s in journal.values() if s.result is ResultCode.TOO_LATE]
    timed_out = {o.request_id for o in _outcomes(run) if o.result == TIMEOUT}
    run.observed.update(
        budget_s=budget,
        paused_s=[round(s, 2) for s in paused_s],
        declined_68=len(late),
        declined_68_of_timeouts=sum(s.request_id in timed_out for s in late),
        timeouts=len(timed_out),
    )
    run.checks.update(
        requests_expired_in_the_queue=bool(late),
        expired_moved_no_money=all(not s.postings for s in late),
    )


# -- slow-dashboard ----------------------------------------------------------------------------

#: A stuck dashboard's queue holds this many messages at most (broker policy). A message is a
#: batch of answers' events of one key, so a short run at this scenario's rate fills 100 (it
#: filled 500 when there was a message per event).
DASHBOARD_BOUND = 100
_SLOW_DASHBOARD = "branchnet-chaos-slow-dashboard"
_STATS_QUEUE = "chaos.host-stats"


async def _slow_mqtt_subscriber(url: str, subscribed: asyncio.Event, seen: Counter[str]) -> None:
    """Subscribe to every event with QoS 1 and acknowledge one message every 0.2 s.

    Counts the messages and the events in them (``seen``: received, events, undecodable).
    """
    endpoint = MqttEndpoint.parse(url)
    async with aiomqtt.Client(
        endpoint.hostname,
        endpoint.port,
        username=endpoint.username,
        password=endpoint.password,
        identifier=_SLOW_DASHBOARD,
        clean_session=True,
    ) as client:
        # paho acknowledges QoS 1 messages itself unless told not to: the ack is the slowness
        client._client.manual_ack_set(True)
        await client.subscribe("bank/events/#", qos=1)
        subscribed.set()
        async for message in client.messages:
            seen["received"] += 1
            try:
                seen["events"] += len(decode_events(message.payload))
            except ValidationError:
                seen["undecodable"] += 1
            await asyncio.sleep(0.2)
            client._client.ack(message.mid, message.qos)


async def _host_stats(bus: Bus, latest: list[StatsSummary]) -> None:
    """Keep the host's latest stats summary (its event publisher's counts are in it)."""
    await bus.declare(
        Topology(
            queues=(QueueSpec(_STATS_QUEUE, durable=False),),
            bindings=(Binding(_STATS_QUEUE, EVENTS_EXCHANGE, stats_key("host")),),
        )
    )

    async def keep(delivery: Delivery) -> None:
        with contextlib.suppress(ValidationError):
            latest[:] = [decode_stats(delivery.body)]
        await delivery.ack()

    await bus.consume(_STATS_QUEUE, keep, prefetch=10)


async def _slow_dashboard(run: _Run) -> None:
    config = run.config
    assert config.amqp_url and config.management_url and config.mqtt_url
    vhost = urllib.parse.unquote(urllib.parse.urlsplit(config.amqp_url).path[1:]) or "/"
    await asyncio.to_thread(
        broker.bound_mqtt_subscriptions,
        config.management_url,
        config.amqp_url,
        vhost,
        max_length=DASHBOARD_BOUND,
    )
    bus = await _bus(run, "chaos-dashboard-watch")
    seen: Counter[str] = Counter()
    subscribed = asyncio.Event()
    latest: list[StatsSummary] = []
    rss = HostRss()
    dashboard = asyncio.create_task(_slow_mqtt_subscriber(config.mqtt_url, subscribed, seen))
    sampler = asyncio.create_task(rss.sample(run))
    depths: list[int] = []
    try:
        await _host_stats(bus, latest)
        ready = asyncio.create_task(subscribed.wait())
        await asyncio.wait({dashboard, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if not subscribed.is_set():
            if dashboard.done():
                dashboard.result()  # its own error says why
            raise RuntimeError("the slow dashboard did not subscribe over MQTT")
        run.faults["slow_dashboards"] += 1
        queue = f"mqtt-subscription-{_SLOW_DASHBOARD}qos1"
        while not run.finished.done():
            depths.append((await bus.queue_stats(queue)).messages)
            await asyncio.wait({run.finished}, timeout=0.5)
        await asyncio.sleep(1.5)  # one more stats summary from the host
    finally:
        dashboard.cancel()
        await asyncio.gather(dashboard, sampler, return_exceptions=True)
        await bus.close()
        # nobody reads it any more: it must not collect the host's stats until the broker stops
        path = f"/api/queues/{urllib.parse.quote(vhost, safe='')}/{_STATS_QUEUE}"
        with contextlib.suppress(broker.BrokerError):
            await asyncio.to_thread(
                broker.management_call, config.management_url, config.amqp_url, "DELETE", path, None
            )
    outcomes = _outcomes(run)
    events = latest[0].events if latest else None
    run.observed.update(
        dashboard_received=seen["received"],
        dashboard_events_received=seen["events"],
        dashboard_queue_max=max(depths, default=0),
        dashboard_queue_bound=DASHBOARD_BOUND,
        host_events_published=events.published if events else None,
        host_events_dropped=events.dropped if events else None,
        host_events_buffered=events.buffered if events else None,
        host_rss=rss.summary(),
    )
    run.checks.update(
        no_transaction_timed_out=bool(outcomes) and all(o.result != TIMEOUT for o in outcomes),
        dashboard_fell_behind_to_its_bound=max(depths, default=0) >= DASHBOARD_BOUND * 0.9,
        dashboard_queue_stayed_bounded=max(depths, default=0) <= DASHBOARD_BOUND,
        host_reported_its_event_counts=events is not None,
        dashboard_read_every_message=seen["received"] > 0 and seen["undecodable"] == 0,
    )


# -- overload ----------------------------------------------------------------------------------

#: Requests the overload generator keeps in flight at most: the client-side bound, set above
#: what twice the host's rate puts in flight over a timeout budget, so the host sees it all.
OVERLOAD_IN_FLIGHT = 50_000
#: Overload may time out: 5 s x (1 retry + 1) = 10 s, after which the host sheds with 68.
OVERLOAD_CLIENT = ClientConfig(timeout_s=5.0, retries=1, max_in_flight=OVERLOAD_IN_FLIGHT)


async def _overload(run: _Run) -> None:
    load = DepositLoad(run)
    rng = random.Random(run.config.seed)
    rss = HostRss()
    sampler = asyncio.create_task(rss.sample(run))
    try:
        await load.open_accounts()
        if not load.accounts:
            raise RuntimeError("the overload generator could not open its accounts")
        # The most the host sustains: answers per second with the generator always ahead.
        probe_s = max(2.0, min(5.0, run.config.duration_s / 5))
        before, started = run.answered() + len(load.outcomes), time.monotonic()
        while time.monotonic() - started < probe_s and not run.finished.done():
            while load.in_flight < 512:
                load.deposit(rng)
            await asyncio.sleep(0.005)
        max_rate = (run.answered() + len(load.outcomes) - before) / probe_s
        rate = 2 * max_rate
        sent = unsent = 0
        started = time.monotonic()
        while not run.finished.done():
            due = int((time.monotonic() - started) * rate) - sent - unsent
            if due > 0:
                now = min(due, max(0, OVERLOAD_IN_FLIGHT - load.in_flight))
                for _ in range(now):
                    load.deposit(rng)
                sent += now
                unsent += due - now  # the client-side in-flight bound pushed back
            await asyncio.sleep(0.01)
        offered_s = time.monotonic() - started
        run.faults["overload_requests"] = sent
        await load.settle(OVERLOAD_CLIENT.budget_s + 30)
        journal = await _journal_when_drained(run)
    finally:
        await asyncio.gather(sampler, return_exceptions=True)
    run.outcomes.extend(load.outcomes)
    results = Counter(o.result for o in load.outcomes)
    # what became of the requests nobody waited for any more: shed (68), applied late, ...
    fates = Counter(
        str(journal[o.request_id].result) if o.request_id in journal else "not journaled"
        for o in load.outcomes
        if o.result == TIMEOUT
    )
    run.observed.update(
        max_rate_rps=round(max_rate, 1),
        offered_rate_rps=round(rate, 1),
        offered_s=round(offered_s, 1),
        sent=sent,
        unsent_at_in_flight_bound=unsent,
        generator_results=dict(sorted(results.items())),
        timeouts_in_journal=dict(sorted(fates.items())),
        host_rss=rss.summary(),
    )
    run.checks.update(
        overloaded=sent >= 1.5 * max_rate * offered_s,
        generator_all_settled=load.in_flight == 0,
    )


#: (name, description, injector, further Scenario fields), registered in SCENARIOS.
LOAD_SCENARIOS: tuple[tuple[str, str, Injector, dict[str, Any]], ...] = (
    (
        "poison-message",
        "undecodable, unsigned, forged and misrouted frames beside good traffic: bn.dead, once",
        _poison_messages,
        {},
    ),
    (
        "deadline",
        "SIGSTOP the host past the timeout budget: expired requests are declined 68, unapplied",
        _pause_host,
        {"client": DEADLINE_CLIENT},
    ),
    (
        "slow-dashboard",
        "a slow MQTT subscriber on every event: no transaction waits, its queue stays bounded",
        _slow_dashboard,
        {"needs_management": True},
    ),
    (
        "overload",
        "offer twice the rate the host sustains: bounded memory, nothing lost or applied twice",
        _overload,
        {"client": OVERLOAD_CLIENT},
    ),
)
