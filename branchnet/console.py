"""What a person sees: the live progress line and the final summary (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from branchnet.simulate import Progress as SimProgress
from common.results import ResultCode


class LiveProgress:
    """A progress bar over the run's duration with answered, rate and result counts."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar = Progress(
            TextColumn("[bold]simulating"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
        )
        self.task = self.bar.add_task("run", total=1.0, status="starting")
        self.live = Live(Group(self.bar), console=console, refresh_per_second=4, transient=True)
        self._last = (0.0, 0)

    def __enter__(self) -> LiveProgress:
        self.live.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.live.__exit__(*exc_info)

    def update(self, progress: SimProgress) -> None:
        last_time, last_answered = self._last
        span = progress.elapsed_s - last_time
        rate = (progress.answered - last_answered) / span if span > 0 else 0.0
        self._last = (progress.elapsed_s, progress.answered)
        codes = " ".join(f"{code}:{n}" for code, n in sorted(progress.by_result.items()))
        status = (
            f"answered {progress.answered:,}  {rate:,.0f}/s  in flight "
            f"{progress.sent - progress.answered - progress.timeouts}  timeouts "
            f"{progress.timeouts}  [{codes}]"
        )
        done = min(1.0, progress.elapsed_s / progress.duration_s) if progress.duration_s else 1.0
        self.bar.update(self.task, completed=done, status=status)


def print_summary(console: Console, report: dict[str, Any]) -> None:
    """The end-of-run summary: throughput, latency, results, reconciliation."""
    head = Table.grid(padding=(0, 2))
    head.add_row("bus", report["bus"])
    head.add_row("branches x terminals", f"{report['branches']} x {report['terminals']}")
    head.add_row("requests answered", f"{report['requests']:,} in {report['elapsed_s']:.1f} s")
    head.add_row("throughput", f"{report['tps']:,.1f} requests/s")
    latency = report["latency_ms"]
    head.add_row(
        "latency (ms)",
        f"p50 {latency['p50']}  p90 {latency['p90']}  p99 {latency['p99']}  max {latency['max']}",
    )
    head.add_row("timeouts", str(report["timeouts"]))
    head.add_row("data dir", report["data_dir"])
    console.print(head)

    results = Table(title="results", title_justify="left")
    results.add_column("code")
    results.add_column("meaning")
    results.add_column("count", justify="right")
    for code, count in report["by_result"].items():
        meaning = ResultCode(code).meaning if code in ResultCode._value2member_map_ else code
        results.add_row(code, meaning, f"{count:,}")
    kinds = Table(title="kinds", title_justify="left")
    kinds.add_column("kind")
    kinds.add_column("count", justify="right")
    for kind, count in report["by_kind"].items():
        kinds.add_row(kind, f"{count:,}")
    console.print(results, kinds)

    recon = report["reconciliation"]
    checks = Table(title="reconciliation", title_justify="left")
    checks.add_column("check")
    checks.add_column("", width=4)
    checks.add_column("detail")
    for name, check in recon["checks"].items():
        mark = "[green]ok" if check["ok"] else "[bold red]FAIL"
        checks.add_row(name, mark, check["detail"])
    console.print(checks)
    verdict = "[bold green]reconciled" if recon["ok"] else "[bold red]RECONCILIATION FAILED"
    console.print(verdict)
