"""``branchnet simulate``: run a whole network for a while, then report and reconcile."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from branch_node import BranchReport
from branchnet.latency import histogram, percentiles_ms
from branchnet.network import Network, NetworkConfig, standby_dir
from branchnet.ops import network_dashboard, network_metrics
from branchnet.reconcile import Reconciliation, reconcile, with_standby
from common.ids import branch_ids

STORE_PATH = Path("host") / "ledger.sqlite"


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    branches: int = 4
    terminals: int = 4
    duration_s: float = 30.0
    seed: int = 1
    amqp_url: str | None = None
    data_dir: Path | None = None
    max_requests: int | None = None
    #: Run a DR standby with sync replication and check it holds what the host holds.
    standby: bool = False
    #: Serve the ops dashboard on this port while the network runs (0: any free port).
    dashboard_port: int | None = None
    #: Where the dashboard subscribes over RabbitMQ (default: the AMQP host's port 1883).
    mqtt_url: str | None = None
    #: Serve /metrics, /livez and /readyz for the whole network on this port.
    metrics_port: int | None = None
    #: Secure envelopes between branches and host (the default); False: plain frames.
    envelopes: bool = True


@dataclass(frozen=True, slots=True)
class Progress:
    """What the live display shows, once or twice a second."""

    elapsed_s: float
    duration_s: float
    sent: int
    answered: int
    timeouts: int
    by_result: Counter[str]


ProgressCallback = Callable[[Progress], None]


async def simulate(
    config: SimulationConfig, *, on_progress: ProgressCallback | None = None
) -> dict[str, Any]:
    """Run the network of ``config`` and return the JSON report (see :func:`build_report`)."""
    data_dir = config.data_dir or Path(tempfile.mkdtemp(prefix="branchnet-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    network_config = NetworkConfig(
        data_dir=data_dir,
        branch_ids=tuple(branch_ids(config.branches)),
        terminals=config.terminals,
        seed=config.seed,
        amqp_url=config.amqp_url,
        standby=config.standby,
        envelopes=config.envelopes,
    )
    per_branch = None
    if config.max_requests is not None:
        per_branch = max(1, -(-config.max_requests // config.branches))
    async with (
        Network(network_config) as network,
        network_dashboard(network, config.dashboard_port, mqtt_url=config.mqtt_url),
        network_metrics(network, config.metrics_port),
    ):
        started = time.monotonic()
        ticker = asyncio.create_task(_tick(network, config.duration_s, started, on_progress))
        try:
            reports = await asyncio.gather(
                *(b.run(config.duration_s, max_requests=per_branch) for b in network.branches)
            )
        finally:
            ticker.cancel()
        elapsed = time.monotonic() - started
    reconciliation = reconcile(data_dir / STORE_PATH, reports)
    if config.standby:
        reconciliation = with_standby(reconciliation, data_dir / STORE_PATH, standby_dir(data_dir))
    return build_report(config, data_dir, reports, elapsed, reconciliation)


async def _tick(
    network: Network, duration_s: float, started: float, on_progress: ProgressCallback | None
) -> None:
    if on_progress is None:
        return
    while True:
        stats = [branch.statistics() for branch in network.branches]
        by_result: Counter[str] = Counter()
        for snapshot in stats:
            by_result.update(snapshot.by_result)
        on_progress(
            Progress(
                elapsed_s=time.monotonic() - started,
                duration_s=duration_s,
                sent=sum(s.sent for s in stats),
                answered=sum(s.answered for s in stats),
                timeouts=sum(s.timeouts for s in stats),
                by_result=by_result,
            )
        )
        await asyncio.sleep(0.5)


def build_report(
    config: SimulationConfig,
    data_dir: Path,
    reports: Sequence[BranchReport],
    elapsed_s: float,
    reconciliation: Reconciliation,
) -> dict[str, Any]:
    """The ``--json-report`` document.

    ``requests`` counts answered requests (timeouts are counted apart); ``tps`` is answered
    requests per second of wall time; latencies are end to end as each terminal saw them.
    """
    outcomes = [o for report in reports for o in report.outcomes]
    answered = [o for o in outcomes if o.result != "timeout"]
    return {
        "requests": len(answered),
        "timeouts": len(outcomes) - len(answered),
        "by_kind": dict(sorted(Counter(o.kind for o in answered).items())),
        "by_result": dict(sorted(Counter(o.result for o in answered).items())),
        "tps": round(len(answered) / elapsed_s, 1) if elapsed_s > 0 else 0.0,
        "latency_ms": percentiles_ms(histogram(o.latency_s for o in answered)),
        "reconciliation": reconciliation.as_json(),
        "elapsed_s": round(elapsed_s, 3),
        "bus": "amqp" if config.amqp_url else "embedded",
        "standby": config.standby,
        "envelopes": config.envelopes,
        "branches": config.branches,
        "terminals": config.terminals,
        "seed": config.seed,
        "data_dir": str(data_dir),
    }
