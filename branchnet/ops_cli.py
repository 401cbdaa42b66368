"""Ops commands: ``branchnet dashboard``, ``branchnet asyncapi``, and ``simulate --dashboard``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from common.settings import Settings

DEFAULT_PORT = 8080


def register(commands: Any) -> None:
    """Add the ops commands to the CLI's subcommands (and ``--dashboard`` to ``simulate``)."""
    dash = commands.add_parser("dashboard", help="serve the live ops dashboard (events over MQTT)")
    dash.add_argument(
        "--mqtt-url",
        help="MQTT broker, e.g. mqtt://user:pass@localhost:1883 (env BRANCHNET_MQTT_URL); "
        "a RabbitMQ vhost goes in the user name as vhost:user, percent-encoded (%%3A). "
        "Default: the AMQP URL's broker, user and vhost at port 1883 (BRANCHNET_AMQP_URL_FILE "
        "names the dashboard user that `broker provision` made)",
    )
    dash.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    dash.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 8080)")
    dash.set_defaults(run=_dashboard)

    spec = commands.add_parser("asyncapi", help="write the AsyncAPI 3 document of every channel")
    spec.add_argument("--out", type=Path, help="file to write (default: standard output)")
    spec.set_defaults(run=_asyncapi)

    simulate = commands.choices.get("simulate")
    if simulate is not None:
        simulate.add_argument(
            "--dashboard",
            type=int,
            nargs="?",
            const=DEFAULT_PORT,
            metavar="PORT",
            help="serve the ops dashboard while the network runs (default port 8080)",
        )
        simulate.add_argument(
            "--mqtt-url", help="with --amqp-url: MQTT for the dashboard (default: AMQP host:1883)"
        )


def _dashboard(args: argparse.Namespace, settings: Settings) -> int:
    from branchnet.ops import mqtt_url_from_amqp
    from dashboard.server import DashboardServer
    from dashboard.sources import MqttSource

    url = args.mqtt_url or settings.mqtt_url
    if not url and settings.amqp_url is not None:
        url = mqtt_url_from_amqp(settings.amqp_url.get_secret_value())
    if not url:
        raise SystemExit(
            "the dashboard reads events over MQTT: give --mqtt-url, BRANCHNET_MQTT_URL or "
            "BRANCHNET_AMQP_URL_FILE (`branchnet broker start` prints one)"
        )

    async def serve() -> None:
        async with DashboardServer(MqttSource(url), host=args.host, port=args.port) as server:
            print(f"dashboard: {server.url}", file=sys.stderr, flush=True)
            await asyncio.Event().wait()

    asyncio.run(serve())
    return 0


def _asyncapi(args: argparse.Namespace, settings: Settings) -> int:
    from branchnet.asyncapi import asyncapi_document

    text = json.dumps(asyncapi_document(), indent=2, ensure_ascii=False) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0
