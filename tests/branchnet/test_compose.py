"""compose.yaml is for users (no Docker engine runs here): check it by parsing it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from branchnet.access import node_users
from branchnet.cli import _parser
from common.ids import branch_ids

COMPOSE = Path(__file__).parents[2] / "compose.yaml"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    return dict(document["services"])


def _branchnet_commands(services: dict[str, Any]) -> dict[str, list[str]]:
    return {
        name: spec["command"]
        for name, spec in services.items()
        if isinstance(spec.get("command"), list) and spec["command"][0] == "branchnet"
    }


def test_every_branchnet_command_is_a_real_subcommand(services: dict[str, Any]) -> None:
    commands = _branchnet_commands(services)
    assert len(commands) >= 6
    for name, command in commands.items():
        args = _parser().parse_args(command[1:])
        assert hasattr(args, "run"), f"{name}: {command} names no runnable command"


def test_the_network_has_its_nodes(services: dict[str, Any]) -> None:
    commands = _branchnet_commands(services)
    first_words = [c[1] for c in commands.values()]
    assert first_words.count("branch") == 3
    assert {"host", "crypto", "keys"} <= set(first_words)


def test_rabbitmq_has_management_mqtt_and_a_healthcheck(services: dict[str, Any]) -> None:
    rabbit = services["rabbitmq"]
    assert "management" in rabbit["image"]
    assert "rabbitmq_mqtt" in rabbit["command"]
    assert "healthcheck" in rabbit
    assert "1883:1883" in rabbit["ports"]


def test_nodes_wait_for_a_healthy_broker_the_keys_and_their_users(
    services: dict[str, Any],
) -> None:
    for name, command in _branchnet_commands(services).items():
        if command[1] == "keys":
            continue
        depends = services[name]["depends_on"]
        assert depends["rabbitmq"]["condition"] == "service_healthy"
        assert depends["keys"]["condition"] == "service_completed_successfully"
        if command[1:3] != ["broker", "provision"]:
            assert depends["provision"]["condition"] == "service_completed_successfully"


def test_a_provisioning_step_creates_the_node_users(services: dict[str, Any]) -> None:
    commands = _branchnet_commands(services)
    (name,) = [n for n, c in commands.items() if c[1:3] == ["broker", "provision"]]
    spec = services[name]
    command = spec["command"]
    args = _parser().parse_args(command[1:])
    assert args.management_url == "http://rabbitmq:15672"
    rabbit = services["rabbitmq"]["environment"]
    admin = f"amqp://{rabbit['RABBITMQ_DEFAULT_USER']}:{rabbit['RABBITMQ_DEFAULT_PASS']}@rabbitmq"
    assert spec["environment"]["BRANCHNET_AMQP_URL"].startswith(admin)
    branches = [c for c in commands.values() if c[1] == "branch"]
    assert args.branches == len(branches)
    assert spec["environment"]["BRANCHNET_DATA_DIR"] == "/data" and "data:/data" in spec["volumes"]


def test_every_node_connects_as_its_own_provisioned_user(services: dict[str, Any]) -> None:
    """No node holds the administrator's (or guest's) credentials: each reads the URL that
    provisioning wrote for its own user, so the broker enforces what it may touch."""
    users = {user.name for user in node_users(branch_ids(3))}
    for name, command in _branchnet_commands(services).items():
        if command[1] not in ("host", "crypto", "branch"):
            continue
        environment = services[name]["environment"]
        assert "BRANCHNET_AMQP_URL" not in environment and "--amqp-url" not in command
        user = f"branch-{command[command.index('--id') + 1]}" if command[1] == "branch" else name
        assert user in users
        assert environment["BRANCHNET_AMQP_URL_FILE"] == f"/data/keys/broker/{user}.url"
        assert "data:/data" in services[name]["volumes"]


def test_the_dashboard_reads_the_broker_over_mqtt_as_its_own_user(
    services: dict[str, Any],
) -> None:
    dashboard = services["dashboard"]
    command = dashboard["command"]
    assert command[:2] == ["branchnet", "dashboard"]
    assert "--mqtt-url" not in command  # MQTT from its provisioned user's URL, port 1883
    environment = dashboard["environment"]
    assert "BRANCHNET_AMQP_URL" not in environment and "BRANCHNET_MQTT_URL" not in environment
    assert environment["BRANCHNET_AMQP_URL_FILE"] == "/data/keys/broker/dashboard.url"
    assert "dashboard" in {user.name for user in node_users(branch_ids(3))}
    port = command[command.index("--port") + 1]
    assert f"{port}:{port}" in dashboard["ports"]
    assert command[command.index("--host") + 1] == "0.0.0.0"


def test_prometheus_scrapes_every_node(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    (mount,) = prometheus["volumes"]
    source, target = mount.split(":")[:2]
    assert target == "/etc/prometheus/prometheus.yml"
    config = yaml.safe_load((COMPOSE.parent / source).read_text())
    targets = {
        t
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for t in group["targets"]
    }
    nodes = [
        n for n, c in _branchnet_commands(services).items() if c[1] in ("host", "crypto", "branch")
    ]
    assert len(nodes) == 5
    for name in nodes:
        port = services[name]["environment"]["BRANCHNET_METRICS_PORT"]
        assert f"{name}:{port}" in targets
