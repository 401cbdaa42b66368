"""Commands for showing the rules: ``scenarios``, ``simulate --scenario`` (and the teller).

``branchnet scenarios`` lists the scenario library; ``branchnet scenarios run NAME...`` (or
``branchnet simulate --scenario NAME``) runs scenarios through a real network and exits
non-zero when a step's result or rule is not the expected one or the books do not reconcile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from branchnet.teller import register_teller
from common.money import format_fen
from common.settings import Settings

#: Exit status when a scenario's expectations are not met.
EXPECTATIONS_NOT_MET = 4


def register(commands: Any) -> None:
    """Add the training commands to the ``branchnet`` subcommands (and ``simulate``)."""
    scenarios = commands.add_parser("scenarios", help="list (or run) the rule scenarios")
    actions = scenarios.add_subparsers(title="actions", metavar="ACTION")
    scenarios.set_defaults(run=_list)
    run = actions.add_parser("run", help="run scenarios through a real network")
    run.add_argument("names", nargs="*", help="scenario names (default: all)")
    run.add_argument("--amqp-url", help="RabbitMQ URL; default: the embedded in-process bus")
    run.add_argument("--json-report", type=Path, help="write the JSON report to this file")
    run.add_argument("--quiet", action="store_true")
    run.set_defaults(run=_run)
    register_teller(commands)
    tiers = commands.add_parser("tiers", help="customer tiers")
    tier_actions = tiers.add_subparsers(title="actions", metavar="ACTION", required=True)
    tier_report = tier_actions.add_parser(
        "report", help="per branch, the five quarterly indicators (churn, upgrade, ...)"
    )
    tier_report.add_argument("--data-dir", help="the network's data directory")
    tier_report.add_argument("--json", action="store_true", help="print one JSON document")
    tier_report.set_defaults(run=_tiers_report)
    simulate = commands.choices.get("simulate")
    if simulate is not None:
        simulate.add_argument(
            "--scenario", help="run this named scenario instead (see `branchnet scenarios`)"
        )
        plain = simulate.get_default("run")

        def simulate_or_scenario(args: argparse.Namespace, settings: Settings) -> int:
            if args.scenario:
                args.names = [args.scenario]
                return _run(args, settings)
            return int(plain(args, settings) or 0)

        simulate.set_defaults(run=simulate_or_scenario)


def _tiers_report(args: argparse.Namespace, settings: Settings) -> int:
    from branchnet.tiers_report import read_report
    from host_node import ledger_path

    data_dir = settings.data_dir or Path("var")
    document = read_report(ledger_path(data_dir))
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    console = Console()
    for branch_id, quarters in document.items():
        table = Table(
            "quarter", "customers", "growth 抢", "assets (CNY)", "growth 培", "churn 保",
            "upgrade 争", "coverage 挖", title=f"branch {branch_id}",
        )  # fmt: skip
        for q in quarters:
            table.add_row(
                q["quarter"],
                str(q["customers_end"]),
                _percent(q["customer_growth"]),
                format_fen(q["assets_end"]),
                _percent(q["asset_growth"]),
                _percent(q["churn"]),
                _percent(q["upgrade"]),
                _percent(q["coverage"]),
            )
        console.print(table)
    return 0


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from branchnet.scenarios import SCENARIOS

    table = Table("scenario", "what it shows", title="branchnet scenarios")
    for scenario in SCENARIOS.values():
        table.add_row(scenario.name, scenario.summary)
    Console().print(table)
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from branchnet.scenario_runner import run_scenario
    from branchnet.scenarios import SCENARIOS

    names = args.names or list(SCENARIOS)
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario {unknown[0]!r}; `branchnet scenarios` lists them")
    amqp_url = settings.amqp_url.get_secret_value() if settings.amqp_url else None

    async def run_all() -> list[dict[str, Any]]:
        return [await run_scenario(SCENARIOS[name], amqp_url=amqp_url) for name in names]

    reports = asyncio.run(run_all())
    document: dict[str, Any] = (
        reports[0]
        if len(reports) == 1
        else {
            "ok": all(r["ok"] for r in reports),
            "scenarios": reports,
        }
    )
    if args.json_report:
        args.json_report.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    if not args.quiet:
        _print(Console(), reports)
    return 0 if all(r["ok"] for r in reports) else EXPECTATIONS_NOT_MET


def _print(console: Console, reports: list[dict[str, Any]]) -> None:
    for report in reports:
        verdict = "[green]met" if report["ok"] else "[bold red]NOT MET"
        table = Table(
            "day",
            "step",
            "kind",
            "expected",
            "result",
            "rule",
            title=f"{report['scenario']}: {verdict}",
        )
        for step in report["steps"]:
            mark = "" if step["ok"] else "[bold red]"
            table.add_row(
                step["day"],
                step["label"],
                step["kind"],
                step["expected"],
                f"{mark}{step['result']}",
                step["rule"] or "",
            )
        console.print(table)
        if report["error"]:
            console.print(f"[bold red]{report['error']}")
        if not report["reconciliation"]["ok"]:
            console.print("[bold red]the books do not reconcile")
