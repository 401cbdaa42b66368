"""``branchnet loadtest``: short runs on the embedded bus and over RabbitMQ; no timing asserts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from branchnet.cli import main
from branchnet.failover import journal_hashes
from branchnet.loadgen import parse_mix
from branchnet.loadnet import TargetConfig
from branchnet.loadtest import THRESHOLD_EXIT, LoadConfig, loadtest, search_rate
from branchnet.network import standby_dir

pytestmark = pytest.mark.usefixtures("logging_restored")  # main configures logging
SMALL = ["--branches", "1", "--terminals", "2", "--accounts-per-terminal", "3"]


def _target(tmp_path: Path, kind: str = "embedded", amqp_url: str | None = None) -> TargetConfig:
    return TargetConfig(
        kind=kind,  # type: ignore[arg-type]
        data_dir=tmp_path / "data",
        branch_ids=("0001", "0002"),
        terminals=2,
        amqp_url=amqp_url,
    )


def _assert_sane(report: dict[str, Any]) -> None:
    """Counts add up, percentiles are ordered, every stage and second is there."""
    assert report["tool"] == "branchnet loadtest" and report["version"]
    assert report["unanswered"] == 0 and report["timeouts"] == 0
    assert report["sent"] == report["answered"] > 0
    measured = report["measured"]
    assert sum(report["by_result"].values()) == measured["answered"] == measured["sent"] > 0
    assert report["by_result"].get("00", 0) > 0
    assert report["achieved_rate"] > 0
    latency = report["latency_ms"]
    for values in (latency["end_to_end"], *latency["stages"].values()):
        assert 0 < values["p50"] <= values["p90"] <= values["p99"] <= values["p99.9"]
        assert values["p99.9"] <= values["max"]
    assert set(latency["stages"]) == {"schedule", "to_host", "host", "from_host"}
    spectrum = report["spectrum_ms"]
    assert [ms for _, ms in spectrum] == sorted(ms for _, ms in spectrum)
    assert report["timeline"] and report["timeline"][-1]["sent"] <= report["sent"]
    assert report["host_rss_mb"]["max"] > 0
    assert report["thresholds"]["passed"]


async def test_an_open_model_run_on_the_embedded_bus_reports_every_answer(
    tmp_path: Path,
) -> None:
    config = LoadConfig(
        rate=300, duration_s=1.5, warmup_s=0.5, mix=parse_mix("simulate"), accounts_per_terminal=3
    )
    report = await loadtest(config, _target(tmp_path))
    _assert_sane(report)
    assert report["model"] == "open" and report["target_rate"] == 300
    assert report["unsent"] == 0
    assert report["accounts"] == 2 * 2 * 3
    assert report["config"]["mix"]["name"] == "simulate"
    assert report["target"]["kind"] == "embedded"
    # The warm-up is sent, answered and left out of the measurement.
    assert report["sent"] > report["measured"]["sent"]


async def test_a_closed_model_run_keeps_its_workers_busy(tmp_path: Path) -> None:
    config = LoadConfig(
        concurrency=8,
        duration_s=1.0,
        warmup_s=0.2,
        mix=parse_mix("deposit"),
        closed_budget=3000,
        accounts_per_terminal=2,
    )
    report = await loadtest(config, _target(tmp_path))
    _assert_sane(report)
    assert report["model"] == "closed" and report["concurrency"] == 8
    assert set(report["by_result"]) == {"00"}  # deposits into open accounts all pass


async def test_the_rate_search_doubles_then_bisects_to_within_five_percent() -> None:
    async def holds(rate: float) -> bool:
        return rate <= 700

    tried = await search_rate(holds, 100, max_trials=20)
    rates = [rate for rate, _ in tried]
    assert rates[:5] == [100, 200, 400, 800, 600]
    assert all(held == (rate <= 700) for rate, held in tried)
    best = max(rate for rate, held in tried if held)
    lowest_failure = min(rate for rate, held in tried if not held)
    assert best <= 700 < lowest_failure <= best * 1.06
    assert len(await search_rate(holds, 100, max_trials=3)) == 3


async def test_find_max_runs_open_model_trials_and_reports_them(tmp_path: Path) -> None:
    config = LoadConfig(
        rate=100,
        find_max=True,
        trial_s=0.6,
        warmup_s=0.2,
        max_trials=2,
        p99_target_ms=60_000,
        mix=parse_mix("withdraw"),
        accounts_per_terminal=2,
    )
    report = await loadtest(config, _target(tmp_path))
    found = report["find_max"]
    trials = found["trials"]
    assert len(trials) == 2 and trials[0]["rate"] == 100
    assert trials[1]["rate"] == (200 if trials[0]["passed"] else 50)
    passing = [t["rate"] for t in trials if t["passed"]]
    assert found["max_rate"] == (max(passing) if passing else None)
    assert report["target_rate"] == (found["max_rate"] or 100)
    assert report["by_result"] == {"00": report["measured"]["answered"]}


def test_the_cli_writes_the_report_and_plot_and_thresholds_set_the_exit_status(
    tmp_path: Path,
) -> None:
    report_path, plot_path = tmp_path / "report.json", tmp_path / "latency.png"
    run = ["loadtest", "--rate", "200", "--duration", "1", "--warmup", "0.3", "--quiet", *SMALL]
    outputs = ["--json-report", str(report_path), "--plot", str(plot_path)]
    limits = ["--max-p99-ms", "60000", "--min-tps", "1"]
    status = main([*run, "--data-dir", str(tmp_path / "a"), *outputs, *limits])
    assert status == 0
    report = json.loads(report_path.read_text())
    _assert_sane(report)
    assert report["config"]["rate"] == 200 and report["config"]["max_p99_ms"] == 60000
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    slow = main([*run, "--data-dir", str(tmp_path / "b"), "--max-p99-ms", "0.001"])
    assert slow == THRESHOLD_EXIT
    few = main([*run, "--data-dir", str(tmp_path / "c"), "--min-tps", "1000000"])
    assert few == THRESHOLD_EXIT


def test_the_cli_refuses_an_unknown_mix(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="mix"):
        main(["loadtest", "--mix", "lottery", "--data-dir", str(tmp_path), "--quiet"])


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_a_run_over_rabbitmq_with_the_nodes_in_their_own_processes(
    tmp_path: Path, amqp_url: str
) -> None:
    report_path = tmp_path / "report.json"
    data_dir = tmp_path / "data"
    run = ["loadtest", "--rate", "200", "--duration", "1.5", "--warmup", "0.5", "--quiet"]
    target = ["--amqp-url", amqp_url, "--start-nodes", "--data-dir", str(data_dir), "--standby"]
    status = main([*run, *SMALL, *target, "--mix", "simulate", "--json-report", str(report_path)])
    assert status == 0
    report = json.loads(report_path.read_text())
    _assert_sane(report)
    assert report["target"]["kind"] == "rabbitmq"
    assert report["target"]["node_processes"] == ["crypto", "standby", "host"]
    assert "guest:guest" not in json.dumps(report)  # no credentials in the report
    # sync replication: the standby holds every entry the host answered from
    assert journal_hashes(standby_dir(data_dir)) == journal_hashes(data_dir)
    assert len(journal_hashes(data_dir)) >= report["answered"]


@pytest.mark.rabbitmq
async def test_an_external_network_is_driven_without_starting_nodes(
    tmp_path: Path, amqp_url: str
) -> None:
    """Nodes started elsewhere (here: by a first target) are driven by a second, external one."""
    from branchnet.loadnet import LoadTarget

    nodes = _target(tmp_path, "rabbitmq", amqp_url)
    async with LoadTarget(nodes):
        external = _target(tmp_path, "external", amqp_url)
        config = LoadConfig(
            rate=200, duration_s=1.0, warmup_s=0.3, mix=parse_mix("deposit"),
            accounts_per_terminal=2,
        )  # fmt: skip
        report = await loadtest(config, external)
    assert report["target"]["kind"] == "external"
    assert report["target"]["node_processes"] == []
    assert report["by_result"] == {"00": report["measured"]["answered"]}


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_the_throughput_benchmark_prints_every_part(
    amqp_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from branchnet.throughput import main as bench_main

    tiny = ["--trial-duration", "0.5", "--warmup", "0.2", "--max-trials", "1"]
    small = ["--branches", "1", "--terminals", "2", "--accounts-per-terminal", "2"]
    assert bench_main([*tiny, *small, "--start-rate", "100", "--amqp-url", amqp_url]) == 0
    document = json.loads(capsys.readouterr().out)
    for part in ("echo", "full", "unbatched", "embedded"):
        assert document[part]["tps"] > 0 and document[part]["p99_ms"] > 0
        assert len(document[part]["trials"]) == 1
    ratios = document["ratios"]
    assert ratios["full_over_echo"] == round(document["full"]["tps"] / document["echo"]["tps"], 3)
    assert ratios["full_over_unbatched"] == round(
        document["full"]["tps"] / document["unbatched"]["tps"], 3
    )
    assert document["unbatched"]["rate"] == 10  # the naive design starts at a tenth
    half = document["full"]["half_rate"]  # the second latency target's trial
    assert half["rate"] == round(document["full"]["tps"] / 2, 1)
    assert half["tps"] > 0 and half["p99_ms"] > 0
