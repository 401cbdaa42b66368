"""The ``branchnet loadtest`` command: flags, the live line, the summary, the exit status."""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from common.heap import settle
from common.ids import branch_ids
from common.settings import Settings

DEFAULTS_EPILOG = """\
targets: the embedded bus in this process (default); --rabbitmq: a private RabbitMQ node with
the host and the crypto node in processes of their own; --amqp-url URL --start-nodes: the same
on a broker of yours; --amqp-url URL alone: a network already running there (give its
--data-dir for the PIN pad keys and its --branches).
exit status: 0 ok, 4 a threshold (--max-p99-ms, --min-tps) failed, 1 an error."""


def register(commands: Any) -> None:
    """Add ``loadtest`` to the CLI's subcommands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "loadtest",
        help="drive a network at a target rate and measure throughput and latency",
        description="Load-test the host: open model (--rate), closed model (--concurrency) "
        "or --find-max; latency from the intended send time into HDR histograms.",
        epilog=DEFAULTS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    drive = parser.add_argument_group("load")
    drive.add_argument("--rate", type=float, default=1000.0, help="requests/s (default 1000)")
    drive.add_argument("--duration", type=float, default=30.0, help="measured seconds (30)")
    drive.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds first (5)")
    drive.add_argument("--concurrency", type=int, help="closed model: this many workers")
    drive.add_argument("--find-max", action="store_true", help="search the highest rate")
    drive.add_argument("--p99-target-ms", type=float, default=100.0, help="find-max target")
    drive.add_argument("--trial-duration", type=float, default=10.0, help="find-max trial s")
    drive.add_argument("--max-trials", type=int, default=10, help="find-max trials at most")
    drive.add_argument(
        "--mix",
        default="simulate",
        help="deposit, withdraw (with PIN), simulate (default), or kind=weight,... "
        "(deposit, withdraw, transfer, balance, change_pin)",
    )
    drive.add_argument("--branches", type=int, default=4, help="branches (default 4)")
    drive.add_argument("--terminals", type=int, default=16, help="PIN pads per branch (16)")
    drive.add_argument("--accounts-per-terminal", type=int, default=16)
    drive.add_argument("--seed", type=int, default=1)
    drive.add_argument("--timeout", type=float, default=10.0, help="reply timeout s (10)")
    drive.add_argument("--max-in-flight", type=int, default=100_000)
    drive.add_argument("--client-batch", type=int, default=256, help="records per frame")
    drive.add_argument(
        "--client-window", type=int, default=2, help="frames out per branch (0: unbounded)"
    )
    drive.add_argument("--closed-budget", type=int, help="records built for --concurrency")
    target = parser.add_argument_group("target")
    target.add_argument("--rabbitmq", action="store_true", help="start a private RabbitMQ")
    target.add_argument("--amqp-url", help="RabbitMQ URL (env BRANCHNET_AMQP_URL)")
    target.add_argument(
        "--start-nodes", action="store_true", help="with --amqp-url: start host and crypto"
    )
    target.add_argument("--data-dir", type=Path, help="keys, counters, store (default: temp)")
    target.add_argument("--host-batch", type=int, default=1024, help="host records per batch")
    target.add_argument("--synchronous", choices=["FULL", "NORMAL", "OFF"], default="FULL")
    target.add_argument(
        "--standby",
        action="store_true",
        help="started networks: a DR standby; the host answers once it holds a batch (sync)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--json-report", type=Path, help="write the JSON report here")
    out.add_argument("--plot", type=Path, help="write latency plots here (PNG; needs matplotlib)")
    out.add_argument("--max-p99-ms", type=float, help="fail when p99 exceeds this")
    out.add_argument("--min-tps", type=float, help="fail when the achieved rate is below this")
    out.add_argument("--quiet", action="store_true", help="no live line or summary")
    parser.set_defaults(run=_loadtest)


def _loadtest(args: argparse.Namespace, settings: Settings) -> int:
    from branchnet.loadgen import parse_mix
    from branchnet.loadnet import TargetConfig, TargetKind
    from branchnet.loadtest import THRESHOLD_EXIT, LoadConfig, loadtest
    from host_node import HostConfig

    try:
        mix = parse_mix(args.mix)
    except ValueError as error:
        raise SystemExit(f"--mix: {error}") from None
    config = LoadConfig(
        rate=args.rate,
        duration_s=args.duration,
        warmup_s=args.warmup,
        concurrency=args.concurrency,
        find_max=args.find_max,
        p99_target_ms=args.p99_target_ms,
        trial_s=args.trial_duration,
        max_trials=args.max_trials,
        mix=mix,
        accounts_per_terminal=args.accounts_per_terminal,
        seed=args.seed,
        timeout_s=args.timeout,
        max_in_flight=args.max_in_flight,
        client_batch=args.client_batch,
        client_window=args.client_window,
        closed_budget=args.closed_budget,
        max_p99_ms=args.max_p99_ms,
        min_tps=args.min_tps,
    )
    amqp_url = settings.amqp_url.get_secret_value() if settings.amqp_url else None
    kind: TargetKind = "embedded"
    if args.rabbitmq:
        kind, amqp_url = "rabbitmq", None
    elif amqp_url is not None:
        kind = "rabbitmq" if args.start_nodes else "external"
    data_dir = settings.data_dir
    if data_dir is None:
        data_dir = Path("var") if kind == "external" else Path(tempfile.mkdtemp(prefix="bn-load-"))
    target = TargetConfig(
        kind=kind,
        data_dir=data_dir,
        branch_ids=tuple(branch_ids(args.branches)),
        terminals=args.terminals,
        amqp_url=amqp_url,
        host_config=HostConfig(max_batch_records=args.host_batch, synchronous=args.synchronous),
        standby=args.standby,
    )
    console = Console()
    quiet = args.quiet
    settle()
    report = asyncio.run(
        loadtest(
            config,
            target,
            on_tick=None
            if quiet
            else lambda tick: console.print(live_line(tick), highlight=False, soft_wrap=True),
            on_stage=None if quiet else lambda text: console.print(f"[dim]{text}[/]"),
        )
    )
    if args.json_report:
        args.json_report.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        from branchnet.loadplot import plot_report

        plot_report(report, args.plot)
    if not quiet:
        print_load_summary(console, report)
    return 0 if report["thresholds"]["passed"] else THRESHOLD_EXIT


def live_line(tick: Any) -> str:
    """One second of a run: totals so far and that second's latency."""
    rss = f"  host {tick.host_rss_mb:.0f} MiB" if tick.host_rss_mb is not None else ""
    return (
        f"{tick.t:6.1f}s  sent {tick.sent:>9,}  answered {tick.answered:>9,}  "
        f"errors {tick.errors:>6,}  p50 {tick.p50_ms:8.2f} ms  p99 {tick.p99_ms:8.2f} ms  "
        f"in flight {tick.in_flight:>7,}{rss}"
    )


def print_load_summary(console: Console, report: dict[str, Any]) -> None:
    target = report["target_rate"]
    wanted = f"{target:,.0f}/s" if target else f"closed, {report['concurrency']} workers"
    console.print(
        f"\n[bold]{report['model']} model[/]  target {wanted}  achieved "
        f"[bold]{report['achieved_rate']:,.1f}/s[/]  over {report['elapsed_s']:.1f} s measured"
        f" ({report['warmup_s']} s warm-up)"
    )
    console.print(
        f"sent {report['sent']:,}  answered {report['answered']:,}  timeouts "
        f"{report['timeouts']:,}  errors {report['errors']:,}  unsent {report['unsent']:,}  "
        f"unanswered {report['unanswered']:,}"
    )
    codes = "  ".join(f"{code}: {count:,}" for code, count in report["by_result"].items())
    console.print(f"answers by result code  {codes or '-'}")
    table = Table(title="latency (ms)", title_justify="left")
    table.add_column("stage")
    points = ("p50", "p90", "p99", "p99.9", "max")
    for point in points:
        table.add_column(point, justify="right")
    latency = report["latency_ms"]
    rows = [("end to end", latency["end_to_end"]), *latency["stages"].items()]
    for name, values in rows:
        table.add_row(name, *(f"{values[p]:.2f}" for p in points))
    console.print(table)
    if report.get("host_cpu_us_per_request") is not None:
        console.print(f"host CPU per request: {report['host_cpu_us_per_request']} µs")
    if report.get("host_rss_mb"):
        rss = report["host_rss_mb"]
        console.print(f"host RSS MiB: first {rss['first']} last {rss['last']} max {rss['max']}")
    if "find_max" in report:
        found = report["find_max"]
        console.print(
            f"find-max: highest rate with p99 <= {found['p99_target_ms']} ms: "
            f"[bold]{found['max_rate']}[/] /s over {len(found['trials'])} trials"
        )
    for failure in report["thresholds"]["failures"]:
        console.print(f"[bold red]threshold failed:[/] {failure}")
