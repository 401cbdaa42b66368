"""``branchnet broker provision --management-url``: compose's provisioning step, against the
test broker; a node then connects with its own user through ``BRANCHNET_AMQP_URL_FILE``."""

from __future__ import annotations

import asyncio
import urllib.parse
from pathlib import Path

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused

from branchnet.access import credentials_dir
from branchnet.broker import management_call, vhost_url
from common.errors import ConfigError
from common.settings import load_settings
from common.topology import branch_reply_queue
from tests.branchnet.cli_run import run_cli
from tests.conftest import RabbitMQ

pytestmark = pytest.mark.rabbitmq


async def _ack(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    await message.ack()


async def test_provisioning_a_broker_by_its_management_api_gives_nodes_their_users(
    rabbitmq: RabbitMQ, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if rabbitmq.management_url is None:
        pytest.skip("needs the broker's management API")
    vhost = f"{rabbitmq.run_id}-provision"
    argv = [
        "broker", "provision", "--management-url", rabbitmq.management_url,
        "--amqp-url", rabbitmq.amqp_url, "--vhost", vhost, "--branches", "2",
        "--data-dir", str(tmp_path),
    ]  # fmt: skip
    status = await asyncio.to_thread(run_cli, *argv)
    users = ["host", "crypto", "standby", "dashboard", "branch-0001", "branch-0002"]
    try:
        assert status == 0
        files = {u: credentials_dir(tmp_path) / f"{u}.url" for u in users}
        assert all(f.stat().st_mode & 0o077 == 0 for f in files.values())
        monkeypatch.delenv("BRANCHNET_AMQP_URL", raising=False)
        monkeypatch.setenv("BRANCHNET_AMQP_URL_FILE", str(files["branch-0001"]))
        settings = load_settings()
        assert settings.amqp_url is not None
        url = settings.amqp_url.get_secret_value()
        assert urllib.parse.urlsplit(url).username == "branch-0001"
        assert url not in repr(settings)
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            await channel.get_queue(branch_reply_queue("0001"), ensure=True)  # its own: fine
            with pytest.raises(ChannelAccessRefused):
                queue = await channel.get_queue(branch_reply_queue("0002"), ensure=False)
                await queue.consume(_ack)
        flagged = load_settings(amqp_url="amqp://flag@x/").amqp_url
        assert flagged is not None and flagged.get_secret_value() == "amqp://flag@x/"
        monkeypatch.setenv("BRANCHNET_AMQP_URL_FILE", str(tmp_path / "missing.url"))
        with pytest.raises(ConfigError, match="cannot read the AMQP URL file"):
            load_settings()
    finally:
        await asyncio.to_thread(rabbitmq.drop_vhost, vhost_url(rabbitmq.amqp_url, vhost))
        for user in users:
            management_call(
                rabbitmq.management_url, rabbitmq.amqp_url, "DELETE", f"/api/users/{user}", None
            )
