"""The ``branchnet`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from branchnet import audit_cli, dr_cli, hsm_cli, journal_cli, loadtest_cli, ops_cli, training
from branchnet.chaos import cli as chaos_cli
from common.errors import BranchnetError
from common.heap import settle
from common.ids import branch_ids
from common.logs import configure_logging
from common.settings import Settings, load_settings

DEFAULT_BROKER_DIR = Path.home() / ".branchnet" / "broker"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    settings = load_settings(
        amqp_url=getattr(args, "amqp_url", None),
        data_dir=getattr(args, "data_dir", None),
        log_level=args.log_level,
    )
    configure_logging(settings.log_level, json=settings.log_json)
    try:
        return int(args.run(args, settings) or 0)
    except BranchnetError as error:
        Console(stderr=True).print(f"[bold red]error:[/] {error}")
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="branchnet",
        description="A simulated centralised banking network: branches, host, crypto node.",
    )
    parser.add_argument("--log-level", default=None, help="debug, info, warning (default), error")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    sim = commands.add_parser("simulate", help="run a whole network, report and reconcile")
    sim.add_argument("--branches", type=int, default=4, help="number of branches (default 4)")
    sim.add_argument("--terminals", type=int, default=4, help="terminals per branch (default 4)")
    sim.add_argument("--duration", type=float, default=30.0, help="seconds to run (default 30)")
    sim.add_argument("--max-requests", type=int, help="stop after about this many requests")
    sim.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    _bus_flags(sim, required=False)
    _data_dir_flag(sim, "the host's store and key files (default: a fresh temporary directory)")
    sim.add_argument("--json-report", type=Path, help="write the JSON report to this file")
    sim.add_argument("--quiet", action="store_true", help="no live progress or summary")
    sim.add_argument("--standby", action="store_true", help="add a DR standby (sync replication)")
    sim.set_defaults(run=_simulate)

    host = commands.add_parser("host", help="run the central host over RabbitMQ")
    host.add_argument("--role", choices=["primary", "standby"], default="primary")
    dr_cli.add_host_flags(host)
    host.add_argument("--branches", type=int, default=None, help="registered branches (default 4)")
    _bus_flags(host, required=True)
    _data_dir_flag(host, "the host's store (default ./var)")
    host.set_defaults(run=_host)

    crypto = commands.add_parser("crypto", help="run the crypto node (HSM) over RabbitMQ")
    _bus_flags(crypto, required=True)
    _data_dir_flag(crypto, "where the key files are (default ./var)")
    crypto.set_defaults(run=_crypto)

    branch = commands.add_parser("branch", help="run one branch's terminals over RabbitMQ")
    branch.add_argument("--id", required=True, dest="branch_id", help="branch id, e.g. 0001")
    branch.add_argument("--terminals", type=int, default=4)
    branch.add_argument("--duration", type=float, default=30.0)
    branch.add_argument("--max-requests", type=int)
    branch.add_argument("--seed", type=int, default=1)
    branch.add_argument("--json-report", type=Path)
    _bus_flags(branch, required=True)
    _data_dir_flag(branch, "branch state and PIN pad keys (default ./var)")
    branch.set_defaults(run=_branch)

    broker = commands.add_parser("broker", help="a private local RabbitMQ node")
    broker.add_argument("action", choices=["start", "stop", "status", "provision"])
    broker.add_argument("--dir", type=Path, default=DEFAULT_BROKER_DIR, help="node directory")
    broker.add_argument(
        "--management-url",
        help="provision another broker through this management API (e.g. compose's "
        "http://rabbitmq:15672), as the administrator of --amqp-url / BRANCHNET_AMQP_URL",
    )
    broker.add_argument("--amqp-url", help="the administrator's AMQP URL (with --management-url)")
    broker.add_argument("--vhost", default="/", help="vhost to provision (default /)")
    broker.add_argument("--branches", type=int, default=None, help="branches to give users")
    _data_dir_flag(broker, "where node credentials are written (default ./var)")
    broker.set_defaults(run=_broker)

    keys = commands.add_parser("keys", help="key management")
    key_actions = keys.add_subparsers(title="actions", metavar="ACTION", required=True)
    init = key_actions.add_parser(
        "init", help="create the BDK, PVK, PIN pad keys and node identity and staff keys"
    )
    init.add_argument("--branches", type=int, default=4)
    init.add_argument("--terminals", type=int, default=4)
    init.add_argument("--force", action="store_true", help="replace existing keys")
    init.add_argument(
        "--if-missing", action="store_true", help="do nothing when keys already exist"
    )
    _data_dir_flag(init, "where to write the key files (default ./var)")
    init.set_defaults(run=_keys_init)

    hsm = commands.add_parser("hsm", help="crypto node tools")
    hsm_actions = hsm.add_subparsers(title="actions", metavar="ACTION", required=True)
    kat = hsm_actions.add_parser("kat", help="run a branchnet-kat/1 known-answer file")
    kat.add_argument("file", type=Path)
    kat.set_defaults(run=_hsm_kat)
    bench = hsm_actions.add_parser("bench", help="PIN verifications per second, one process")
    bench.add_argument("--seconds", type=float, default=3.0)
    bench.add_argument("--json", action="store_true", help="print one JSON document")
    bench.set_defaults(run=_hsm_bench)
    hsm_cli.register(commands)
    journal_cli.register(commands)
    training.register(commands)
    ops_cli.register(commands)
    audit_cli.register(commands)
    loadtest_cli.register(commands)
    chaos_cli.register(commands)
    return parser


def _bus_flags(parser: argparse.ArgumentParser, *, required: bool) -> None:
    help_text = "RabbitMQ URL (env BRANCHNET_AMQP_URL, or a file named by BRANCHNET_AMQP_URL_FILE)"
    if not required:
        help_text += "; default: the embedded in-process bus"
    parser.add_argument("--amqp-url", help=help_text)


def _data_dir_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--data-dir", type=Path, help=f"{help_text} (env BRANCHNET_DATA_DIR)")


def _amqp_url(settings: Settings) -> str:
    if settings.amqp_url is None:
        raise SystemExit(
            "this node talks over RabbitMQ: give --amqp-url or BRANCHNET_AMQP_URL "
            "(`branchnet broker start` runs a private node and prints its URL)"
        )
    return settings.amqp_url.get_secret_value()


def _data_dir(settings: Settings) -> Path:
    return settings.data_dir or Path("var")


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from branchnet.console import LiveProgress, print_summary
    from branchnet.simulate import SimulationConfig, simulate

    config = SimulationConfig(
        branches=args.branches,
        terminals=args.terminals,
        duration_s=args.duration,
        seed=args.seed,
        amqp_url=settings.amqp_url.get_secret_value() if settings.amqp_url else None,
        data_dir=settings.data_dir,
        max_requests=args.max_requests,
        standby=args.standby,
        dashboard_port=args.dashboard,
        mqtt_url=args.mqtt_url,
        metrics_port=settings.metrics_port,
    )
    console = Console()
    settle()
    if args.quiet or not console.is_terminal:
        report = asyncio.run(simulate(config))
    else:
        with LiveProgress(console) as live:
            report = asyncio.run(simulate(config, on_progress=live.update))
    if args.json_report:
        args.json_report.write_text(json.dumps(report, indent=2) + "\n")
    if not args.quiet:
        print_summary(console, report)
    return 0 if report["reconciliation"]["ok"] else 3


def _host(args: argparse.Namespace, settings: Settings) -> int:
    count = args.branches or settings.branches
    ids = tuple(branch_ids(count))
    return dr_cli.run_host(args, _amqp_url(settings), _data_dir(settings), ids)


def _crypto(args: argparse.Namespace, settings: Settings) -> int:
    from branchnet.nodes import serve_crypto

    asyncio.run(serve_crypto(_amqp_url(settings), _data_dir(settings)))
    return 0


def _branch(args: argparse.Namespace, settings: Settings) -> int:
    from branchnet.latency import histogram, percentiles_ms
    from branchnet.nodes import run_branch

    report = asyncio.run(
        run_branch(
            _amqp_url(settings),
            _data_dir(settings),
            args.branch_id,
            terminals=args.terminals,
            seed=args.seed,
            duration_s=args.duration,
            max_requests=args.max_requests,
        )
    )
    answered = [o for o in report.outcomes if o.result != "timeout"]
    summary: dict[str, Any] = {
        "branch_id": args.branch_id,
        "requests": len(answered),
        "timeouts": len(report.outcomes) - len(answered),
        "by_result": _count(o.result for o in answered),
        "latency_ms": percentiles_ms(histogram(o.latency_s for o in answered)),
    }
    if args.json_report:
        args.json_report.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))


def _broker(args: argparse.Namespace, settings: Settings) -> int:
    from branchnet import broker

    if args.action == "provision" and args.management_url:
        return _provision_remote(args, settings)
    if args.action in ("start", "provision"):
        from branchnet.access import provision_private

        found = broker.start_broker(args.dir) if args.action == "start" else None
        info = found or broker.broker_status(args.dir)
        if info is None:
            print("not running: `branchnet broker start` first")
            return 1
        count = args.branches or settings.branches
        files = provision_private(info, args.vhost, branch_ids(count), _data_dir(settings))
        for user, path in files.items():
            print(f"user {user:<12} credentials {path}")
    elif args.action == "stop":
        broker.stop_broker(args.dir)
        print("stopped")
        return 0
    else:
        found = broker.broker_status(args.dir)
        if found is None:
            print("not running")
            return 1
        info = found
    print(f"node        {info.node_name}")
    print(f"amqp        {info.amqp_url}")
    print(f"mqtt        {info.mqtt_url}")
    print(f"management  {info.management_url}")
    return 0


def _provision_remote(args: argparse.Namespace, settings: Settings) -> int:
    """``broker provision --management-url``: node users on a broker this CLI did not start."""
    from branchnet.access import credentials_dir, provision

    if settings.amqp_url is None:
        raise SystemExit("give the administrator's --amqp-url or BRANCHNET_AMQP_URL")
    data_dir = _data_dir(settings)
    count = args.branches or settings.branches
    users = asyncio.run(
        provision(
            args.management_url,
            settings.amqp_url.get_secret_value(),
            args.vhost,
            branch_ids(count),
            data_dir,
        )
    )
    for user in users:
        print(f"user {user:<12} credentials {credentials_dir(data_dir) / f'{user}.url'}")
    return 0


def _keys_init(args: argparse.Namespace, settings: Settings) -> int:
    from common.authorisation import init_staff_keys
    from common.identity import init_identities
    from crypto_node import init_keys
    from host_node.staff import default_staff, signing_staff

    data_dir = _data_dir(settings)
    branches = branch_ids(args.branches)
    init_identities(data_dir, branches, force=args.force)
    init_staff_keys(data_dir, signing_staff(default_staff(branches)), force=args.force)
    if args.if_missing and (data_dir / "keys" / "crypto.json").exists():
        print(f"keys already present in {data_dir / 'keys'}")
        return 0
    init_keys(data_dir, branch_ids(args.branches), args.terminals, force=args.force)
    print(f"keys written to {data_dir / 'keys'}")
    return 0


def _hsm_kat(args: argparse.Namespace, settings: Settings) -> int:
    from crypto_node import run_kat

    lines, status = run_kat(args.file)
    for line in lines:
        print(line)
    return status


def _hsm_bench(args: argparse.Namespace, settings: Settings) -> int:
    from crypto_node import run_bench

    result = run_bench(args.seconds)
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
