"""``branchnet chaos``: run a workload while injecting faults, then check every request."""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from common.settings import Settings


def register(commands: Any) -> None:
    """Add ``chaos`` to the CLI's subcommands."""
    chaos = commands.add_parser(
        "chaos", help="inject faults under load and check nothing is lost or applied twice"
    )
    chaos.add_argument("--list", action="store_true", help="name every scenario and stop")
    chaos.add_argument("--scenario", help="the scenario to run (see --list)")
    chaos.add_argument("--duration", type=float, default=20.0, help="seconds of load (default 20)")
    chaos.add_argument("--seed", type=int, default=1, help="fault and workload seed (default 1)")
    chaos.add_argument("--branches", type=int, default=2)
    chaos.add_argument("--terminals", type=int, default=3)
    chaos.add_argument(
        "--amqp-url", help="RabbitMQ to use (default: a private node started for the run)"
    )
    chaos.add_argument("--management-url", help="its management API (for connection-drop)")
    chaos.add_argument(
        "--standby-lost",
        choices=["stop", "async"],
        default="stop",
        help="standby scenarios: the sync primary's policy when the standby is silent",
    )
    chaos.add_argument(
        "--mqtt-url", help="its MQTT listener (for slow-dashboard; default BRANCHNET_MQTT_URL)"
    )
    chaos.add_argument("--data-dir", type=Path, help="where the nodes keep their files")
    chaos.add_argument("--json-report", type=Path, help="write the report here")
    chaos.set_defaults(run=_chaos)


def _chaos(args: argparse.Namespace, settings: Settings) -> int:
    from branchnet.chaos.scenarios import SCENARIOS

    if args.list or not args.scenario:
        for scenario in SCENARIOS.values():
            print(f"{scenario.name:18} {scenario.description}")
        return 0 if args.list else 2
    if args.scenario not in SCENARIOS:
        print(f"no scenario {args.scenario!r}; `branchnet chaos --list` names them")
        return 2
    report = asyncio.run(_run(args, settings))
    text = json.dumps(report, indent=2)
    if args.json_report:
        args.json_report.write_text(text + "\n")
    print(text)
    return 0 if report["passed"] else 1


async def _run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from branchnet import broker
    from branchnet.chaos.scenarios import SCENARIOS, ChaosConfig, run_scenario

    scenario = SCENARIOS[args.scenario]
    data_dir = settings.data_dir or Path(tempfile.mkdtemp(prefix="branchnet-chaos-"))
    amqp_url = settings.amqp_url.get_secret_value() if settings.amqp_url else None
    management_url = args.management_url
    mqtt_url = args.mqtt_url or settings.mqtt_url
    broker_dir: Path | None = None
    if scenario.injector is not None and (amqp_url is None or scenario.needs_own_broker):
        broker_dir = data_dir / "broker"
        info = await asyncio.to_thread(broker.start_broker, broker_dir)
        amqp_url, management_url, mqtt_url = info.amqp_url, info.management_url, info.mqtt_url
    config = ChaosConfig(
        data_dir=data_dir,
        duration_s=args.duration,
        seed=args.seed,
        branches=args.branches,
        terminals=args.terminals,
        amqp_url=amqp_url,
        management_url=management_url,
        broker_dir=broker_dir,
        standby_lost=args.standby_lost,
        mqtt_url=mqtt_url,
    )
    try:
        return await run_scenario(args.scenario, config)
    finally:
        if broker_dir is not None:
            await asyncio.to_thread(broker.stop_broker, broker_dir)
