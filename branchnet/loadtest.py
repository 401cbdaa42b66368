"""``branchnet loadtest``: drive a network at a target rate (or concurrency) and measure it.

Three ways to drive:

- **open model** (:func:`run_open`): request *i* is due at ``start + i / rate`` whatever the
  system does (:mod:`branchnet.loadpace`); latency runs from that intended time, so stalls
  count in full (no coordinated omission). The first ``warmup_s`` seconds are sent but not
  measured. Requests the generator could not send before the end (in-flight bound reached)
  are reported as ``unsent``.
- **closed model** (:func:`run_closed`): ``concurrency`` workers, each sending its next
  request when the previous one is answered.
- **find-max** (:func:`find_max`): short open-model trials, doubling the rate while the p99
  target holds, then bisecting between the last rate that held and the first that did not.

Before the clock runs, the generator opens its accounts and builds every record it will send
(:mod:`branchnet.loadgen`); the run itself only stamps the origin time and hands records to the
branches' batching :class:`~branch_node.RequestClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import importlib.metadata
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from branch_node import RequestClient, RequestTimeout
from branch_node.session import BranchSession
from branchnet.loadgen import LoadMix, LoadWorkload, PreparedRequest, origin_stamp, parse_mix
from branchnet.loadnet import LoadTarget, TargetConfig
from branchnet.loadpace import Pacer
from branchnet.loadstats import Recorder, Tick, by_result_json
from common.errors import BranchnetError
from common.replies import Reply
from common.requests import encode_request

TickCallback = Callable[[Tick], None]
#: Records built per second of a closed-model run when no budget is given.
CLOSED_RATE_HINT = 10_000
#: How long past its end an open-model run may still send requests that fell due in it.
SEND_GRACE_S = 1.0
#: Longest wait between find-max trials for the host to work off a backlog.
QUIESCE_MAX_S = 120.0
#: Threshold failures exit with this status.
THRESHOLD_EXIT = 4


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """What to send and how.

    Args:
        rate: open model: requests per second to send.
        duration_s: measured seconds (after the warm-up).
        warmup_s: seconds sent first and not measured.
        concurrency: closed model: workers (None: open model).
        find_max: search the highest rate whose p99 meets ``p99_target_ms``.
        p99_target_ms: the find-max target.
        trial_s: measured seconds of each find-max trial.
        max_trials: most find-max trials.
        mix: the request kinds to send.
        accounts_per_terminal: accounts opened per terminal before the run.
        seed: seeds the workload.
        timeout_s: a request without a reply this long counts as a timeout (no retries).
        max_in_flight: the generator sends no more while this many await replies.
        client_batch: most records per request frame.
        client_window: request frames each branch has out at once (0: unbounded).
        closed_budget: records built for a closed-model run (default: 10,000 per second).
        max_p99_ms: threshold: fail when the end-to-end p99 exceeds it.
        min_tps: threshold: fail when the achieved rate is below it.
    """

    rate: float = 1000.0
    duration_s: float = 30.0
    warmup_s: float = 5.0
    concurrency: int | None = None
    find_max: bool = False
    p99_target_ms: float = 100.0
    trial_s: float = 10.0
    max_trials: int = 10
    mix: LoadMix = field(default_factory=lambda: parse_mix("simulate"))
    accounts_per_terminal: int = 16
    seed: int = 1
    timeout_s: float = 10.0
    max_in_flight: int = 100_000
    client_batch: int = 256
    client_window: int = 2
    closed_budget: int | None = None
    max_p99_ms: float | None = None
    min_tps: float | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.duration_s <= 0 or self.warmup_s < 0 or self.trial_s <= 0:
            raise ValueError("rate, duration and trial length must be positive, warm-up >= 0")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.accounts_per_terminal < 2:
            raise ValueError("at least 2 accounts per terminal (transfers need two)")

    def as_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["mix"] = self.mix.as_json()
        return document


@dataclass(slots=True)
class RunResult:
    """One measured run."""

    model: str
    recorder: Recorder
    duration_s: float
    warmup_s: float
    target_rate: float | None
    concurrency: int | None = None
    unsent: int = 0
    unanswered: int = 0
    elapsed_s: float = 0.0
    #: CPU the host's process used per answered request (its whole process when embedded).
    host_cpu_us: float | None = None

    @property
    def achieved_rate(self) -> float:
        """Answers per second that arrived within the measured window."""
        return self.recorder.window_answers / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def p99_ms(self) -> float:
        return float(self.recorder.latency_ms()["end_to_end"]["p99"])

    def as_json(self) -> dict[str, Any]:
        recorder = self.recorder
        rss = [t.host_rss_mb for t in recorder.timeline if t.host_rss_mb is not None]
        return {
            "model": self.model,
            "target_rate": self.target_rate,
            "concurrency": self.concurrency,
            "achieved_rate": round(self.achieved_rate, 1),
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "elapsed_s": round(self.elapsed_s, 3),
            "sent": recorder.sent,
            "answered": recorder.answered,
            "measured": {"sent": recorder.measured_sent, "answered": recorder.measured_answered},
            "by_result": by_result_json(recorder.by_result),
            "timeouts": recorder.timeouts,
            "errors": recorder.errors,
            "failures": by_result_json(recorder.failures),
            "unsent": self.unsent,
            "unanswered": self.unanswered,
            "latency_ms": recorder.latency_ms(),
            "spectrum_ms": recorder.spectrum_ms(),
            "host_cpu_us_per_request": (
                round(self.host_cpu_us, 1) if self.host_cpu_us is not None else None
            ),
            "host_rss_mb": (
                {"first": rss[0], "last": rss[-1], "min": min(rss), "max": max(rss)}
                if rss
                else None
            ),
            "timeline": [t.as_json() for t in recorder.timeline],
        }


class _Settled:
    """Records how one request ended (a :data:`~branch_node.client.Outcome`): called by its
    client with the reply or the error, without a future in between."""

    __slots__ = ("driver", "intended", "on_done", "recorder", "sent")

    def __init__(
        self,
        driver: _Driver,
        recorder: Recorder,
        intended: float,
        sent: float,
        on_done: Callable[[], None] | None,
    ) -> None:
        self.driver = driver
        self.recorder = recorder
        self.intended = intended
        self.sent = sent
        self.on_done = on_done

    def __call__(self, outcome: Reply | Exception) -> None:
        driver = self.driver
        driver.in_flight -= 1
        if isinstance(outcome, Reply):
            self.recorder.on_reply(self.intended, self.sent, driver.loop.time(), outcome)
        else:
            timeout = isinstance(outcome, RequestTimeout)
            self.recorder.on_failure(self.intended, outcome, timeout=timeout)
        if self.on_done is not None:
            self.on_done()


class _Driver:
    """The clients of every branch, and the bookkeeping around each request sent."""

    def __init__(
        self, clients: dict[str, RequestClient], target: LoadTarget, on_tick: TickCallback | None
    ) -> None:
        self.clients = clients
        self.target = target
        self.on_tick = on_tick
        self.in_flight = 0
        self.loop = asyncio.get_running_loop()

    def send(
        self,
        recorder: Recorder,
        prepared: PreparedRequest,
        stamp: bytes,
        intended: float,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        """Hand one record to its branch's client; ``on_done`` is called once it ended."""
        sent = self.loop.time()
        settled = _Settled(self, recorder, intended, sent, on_done)
        self.clients[prepared.branch_id].post(prepared.request_id, prepared.record(stamp), settled)
        self.in_flight += 1
        recorder.on_sent(intended)

    async def ticker(self, recorder: Recorder, start: float) -> None:
        """Close a second of the timeline every second."""
        next_at = start + 1.0
        while True:
            await asyncio.sleep(max(0.0, next_at - self.loop.time()))
            point = recorder.tick(
                self.loop.time() - start, self.in_flight, self.target.host_rss_mb()
            )
            if self.on_tick is not None:
                self.on_tick(point)
            next_at += 1.0

    async def quiesce(self, max_wait_s: float) -> None:
        """Wait until the host has caught up: nothing waits in its queue and no late reply
        (to a request that timed out) came in the last second — so one trial's backlog
        does not count against the next."""
        deadline = self.loop.time() + max_wait_s
        seen = -1
        while self.loop.time() < deadline:
            late = sum(
                c.statistics().late_replies + c.statistics().stray_replies
                for c in self.clients.values()
            )
            if late == seen and await self.target.requests_waiting() == 0:
                return
            seen = late
            await asyncio.sleep(1.0)

    async def drain(self, timeout_s: float) -> None:
        """Wait for the requests in flight (their own timeouts end them)."""
        deadline = self.loop.time() + timeout_s
        while self.in_flight > 0 and self.loop.time() < deadline:
            await asyncio.sleep(0.01)


def _stamp() -> bytes:
    return origin_stamp(dt.datetime.now(dt.UTC))


async def run_open(
    driver: _Driver,
    workload: LoadWorkload,
    *,
    rate: float,
    duration_s: float,
    warmup_s: float,
    config: LoadConfig,
) -> RunResult:
    """Send at ``rate`` for ``warmup_s + duration_s``; measure from the intended send times."""
    total = max(1, math.ceil(rate * (warmup_s + duration_s)))
    # Each record is dropped once sent, so the generator's memory shrinks as the run goes.
    prepared = deque(await asyncio.to_thread(workload.build, total))
    cpu_before = driver.target.host_cpu_s()
    loop = driver.loop
    start = loop.time() + 0.05
    # Sends that fall behind may go on a little past the end; then the rest count as unsent.
    end = start + warmup_s + duration_s + SEND_GRACE_S
    recorder = Recorder(
        measure_from=start + warmup_s,
        wall_offset=time.time() - loop.time(),
        measure_until=start + warmup_s + duration_s,
    )
    pacer = Pacer(
        prepared,
        functools.partial(driver.send, recorder),
        lambda: driver.in_flight,
        rate=rate,
        start=start,
        end=end,
        max_in_flight=config.max_in_flight,
    )
    ticker = asyncio.create_task(driver.ticker(recorder, start))
    try:
        sent = await pacer.run()
        prepared.clear()
        await driver.drain(config.timeout_s + 2.0)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    recorder.flush()
    return RunResult(
        "open",
        recorder,
        duration_s,
        warmup_s,
        rate,
        unsent=total - sent,
        unanswered=driver.in_flight,
        elapsed_s=duration_s,
        host_cpu_us=_cpu_per_request(driver, cpu_before, recorder.answered),
    )


def _cpu_per_request(driver: _Driver, before: float | None, answered: int) -> float | None:
    after = driver.target.host_cpu_s()
    if before is None or after is None or answered == 0:
        return None
    return (after - before) / answered * 1_000_000


async def run_closed(driver: _Driver, workload: LoadWorkload, config: LoadConfig) -> RunResult:
    """``concurrency`` workers, each with one request outstanding, for the run's length."""
    assert config.concurrency is not None
    span = config.warmup_s + config.duration_s
    budget = config.closed_budget or math.ceil(CLOSED_RATE_HINT * span)
    prepared = deque(await asyncio.to_thread(workload.build, budget))
    cpu_before = driver.target.host_cpu_s()
    loop = driver.loop
    start = loop.time()
    end = start + span
    recorder = Recorder(
        measure_from=start + config.warmup_s, wall_offset=time.time() - start, measure_until=end
    )
    exhausted = False

    async def worker() -> None:
        nonlocal exhausted
        answered = asyncio.Event()
        while loop.time() < end:
            if not prepared:
                exhausted = True
                return
            request = prepared.popleft()
            answered.clear()
            try:
                driver.send(recorder, request, _stamp(), loop.time(), answered.set)
            except Exception:
                continue
            await answered.wait()

    ticker = asyncio.create_task(driver.ticker(recorder, start))
    try:
        await asyncio.gather(*(worker() for _ in range(config.concurrency)))
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    stopped = loop.time()
    recorder.flush()
    result = RunResult(
        "closed",
        recorder,
        config.duration_s,
        config.warmup_s,
        None,
        concurrency=config.concurrency,
        unanswered=driver.in_flight,
        elapsed_s=max(1e-9, min(stopped, end) - (start + config.warmup_s)),
        host_cpu_us=_cpu_per_request(driver, cpu_before, recorder.answered),
    )
    if exhausted:
        result.duration_s = round(stopped - start - config.warmup_s, 3)
    return result


@dataclass(frozen=True, slots=True)
class Trial:
    rate: float
    achieved_rate: float
    p99_ms: float
    errors: int
    unsent: int
    passed: bool

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def trial_passes(result: RunResult, p99_target_ms: float) -> bool:
    """A rate holds when every request was sent and answered without error, at that rate,
    with the p99 at or under the target."""
    target = result.target_rate or 0.0
    return (
        result.p99_ms() <= p99_target_ms
        and result.recorder.errors == 0
        and result.unsent == 0
        and result.unanswered == 0
        and result.achieved_rate >= 0.95 * target
    )


async def search_rate(
    holds: Callable[[float], Awaitable[bool]], start: float, max_trials: int
) -> list[tuple[float, bool]]:
    """Try rates from ``start``: double while ``holds``, then bisect between the highest rate
    that held and the lowest that did not, until they are within 5 % or trials run out.

    Returns:
        Every (rate, held) in the order tried.
    """
    tried: list[tuple[float, bool]] = []
    low, high = 0.0, math.inf
    rate = start
    for _ in range(max_trials):
        held = await holds(rate)
        tried.append((rate, held))
        if held:
            low = rate
        else:
            high = rate
        if not math.isinf(high) and high - low <= 0.05 * high:
            break
        rate = rate * 2 if math.isinf(high) else (low + high) / 2
    return tried


async def find_max(
    driver: _Driver,
    workload: LoadWorkload,
    config: LoadConfig,
    say: Callable[[str], None] = lambda _text: None,
) -> tuple[RunResult, list[Trial]]:
    """The highest rate meeting the p99 target (see :func:`search_rate`), by open-model trials.

    Returns:
        The best passing trial (or the first, when none passed) and every trial in order.
    """
    results: dict[float, RunResult] = {}

    async def holds(rate: float) -> bool:
        await driver.drain(config.timeout_s)
        await driver.quiesce(QUIESCE_MAX_S)
        result = await run_open(
            driver,
            workload,
            rate=rate,
            duration_s=config.trial_s,
            warmup_s=min(config.warmup_s, config.trial_s / 2),
            config=config,
        )
        results[rate] = result
        passed = trial_passes(result, config.p99_target_ms)
        say(
            f"trial at {rate:,.0f}/s: achieved {result.achieved_rate:,.0f}/s, "
            f"p99 {result.p99_ms()} ms, {'held' if passed else 'did not hold'}"
        )
        return passed

    tried = await search_rate(holds, config.rate, config.max_trials)
    trials = [
        Trial(
            rate,
            round(results[rate].achieved_rate, 1),
            results[rate].p99_ms(),
            results[rate].recorder.errors,
            results[rate].unsent,
            held,
        )
        for rate, held in tried
    ]
    passing = [rate for rate, held in tried if held]
    chosen = results[max(passing)] if passing else results[tried[0][0]]
    return chosen, trials


async def open_accounts(
    clients: dict[str, RequestClient], workload: LoadWorkload, per_terminal: int
) -> int:
    """Open the workload's accounts (untimed); returns how many were opened.

    Raises:
        BranchnetError: none could be opened.
    """
    openings = workload.openings(per_terminal)
    futures = [
        clients[request.branch_id].send(request.request_id, encode_request(request))
        for request, _ in openings
    ]
    replies = await asyncio.gather(*futures, return_exceptions=True)
    opened = [
        account
        for (_, account), reply in zip(openings, replies, strict=True)
        if isinstance(reply, Reply) and reply.approved
    ]
    if not opened:
        seen = sorted(
            {str(r.result) if isinstance(r, Reply) else type(r).__name__ for r in replies}
        )
        raise BranchnetError(f"no load account could be opened (answers: {', '.join(seen)})")
    workload.opened(opened)
    return len(opened)


def thresholds(report: dict[str, Any], config: LoadConfig) -> list[str]:
    """Why the run fails its thresholds (empty: it passes)."""
    failures = []
    p99 = report["latency_ms"]["end_to_end"]["p99"]
    if config.max_p99_ms is not None and p99 > config.max_p99_ms:
        failures.append(f"p99 {p99} ms exceeds --max-p99-ms {config.max_p99_ms}")
    achieved = report["achieved_rate"]
    if config.min_tps is not None and achieved < config.min_tps:
        failures.append(f"achieved {achieved}/s is below --min-tps {config.min_tps}")
    return failures


def version() -> str:
    try:
        return importlib.metadata.version("branchnet")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


async def loadtest(
    config: LoadConfig,
    target_config: TargetConfig,
    *,
    on_tick: TickCallback | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Start (or reach) the target, open accounts, drive it, and return the JSON report.

    The report holds the configuration, the tool's version, the run (see
    :meth:`RunResult.as_json`), find-max trials when searched, and the thresholds' verdict.
    """
    say = on_stage or (lambda _text: None)
    say(f"starting the {target_config.kind} network")
    async with LoadTarget(target_config) as target:
        clients: dict[str, RequestClient] = {}
        workload = LoadWorkload(
            target_config.data_dir,
            target_config.branch_ids,
            terminals=target_config.terminals,
            mix=config.mix,
            seed=config.seed,
        )
        try:
            for branch_id in target_config.branch_ids:
                bus = target.open_bus(f"loadtest-{branch_id}")
                await bus.connect()
                client = RequestClient(
                    bus,
                    branch_id,
                    max_batch=config.client_batch,
                    window=config.client_window,
                    timeout_s=config.timeout_s,
                    retries=0,
                    max_in_flight=config.max_in_flight,
                    prefetch=64,
                    # the host opens sealed frames only, from a branch that signed on; the
                    # echo host (the bus's ceiling) answers plain frames. The generator keeps
                    # no evidence: the replies' GCM tags authenticate them, and it spends no
                    # CPU on the host's signatures (see branch_node.session)
                    session=None
                    if target_config.host == "echo"
                    else BranchSession.load(
                        target_config.data_dir, branch_id, check_reply_signatures=False
                    ),
                )
                await client.start()
                clients[branch_id] = client
            say("opening accounts")
            opened = await open_accounts(clients, workload, config.accounts_per_terminal)
            say(f"{opened} accounts open; building requests and driving load")
            driver = _Driver(clients, target, on_tick)
            trials: list[Trial] | None = None
            if config.find_max:
                result, trials = await find_max(driver, workload, config, say)
            elif config.concurrency is not None:
                result = await run_closed(driver, workload, config)
            else:
                result = await run_open(
                    driver,
                    workload,
                    rate=config.rate,
                    duration_s=config.duration_s,
                    warmup_s=config.warmup_s,
                    config=config,
                )
        finally:
            for client in clients.values():
                await client.stop()
            workload.close()
        report: dict[str, Any] = {
            "tool": "branchnet loadtest",
            "version": version(),
            "config": config.as_json(),
            "target": target.describe(),
            "accounts": opened,
            **result.as_json(),
        }
    if trials is not None:
        passing = [t.rate for t in trials if t.passed]
        report["find_max"] = {
            "p99_target_ms": config.p99_target_ms,
            "max_rate": max(passing) if passing else None,
            "trials": [t.as_json() for t in trials],
        }
    failures = thresholds(report, config)
    report["thresholds"] = {
        "max_p99_ms": config.max_p99_ms,
        "min_tps": config.min_tps,
        "passed": not failures,
        "failures": failures,
    }
    return report
