"""Broker access: one RabbitMQ user per node, with only the permissions that node needs.

``branchnet broker provision`` (and ``broker start``) declares the whole topology up front as
the administrator, then creates the users below; nodes therefore need no ``configure``
permission at all (their own declarations are refused by the broker and skipped by the bus).

- ``branch-<id>``: write ``bn.requests`` (topic permission: routing key ``branch.<id>``
  only) and ``bn.dead``; read ``branch.<id>.replies``.
- ``host``: write ``bn.replies`` (keys ``branch.<4 digits>``), ``bn.dead``, the default
  exchange, ``amq.topic`` (keys ``bank.*``); read ``host.requests``, ``host.crypto-replies``,
  ``dr.acks``.
- ``crypto``: write the default exchange and ``bn.dead``; read ``crypto.commands``.
- ``standby``: write the default exchange, ``bn.dead``, ``amq.topic`` (``bank.*``); read
  ``dr.replication``.
- ``dashboard``: an MQTT subscriber to ``bank/#``: its subscription queues
  (``mqtt-subscription-*``, which RabbitMQ's MQTT plugin declares and binds) and reading
  ``amq.topic`` (keys ``bank.*``); it can publish nothing.

(The default exchange is the resource ``amq.default``.) A branch therefore cannot publish as
another branch, bind another branch's key, or read another branch's replies: the broker
closes its channel with ACCESS_REFUSED. Nodes never use ``guest``; each user's AMQP URL (with
its generated password) is written to ``<data_dir>/keys/broker/<user>.url``, mode 0600. A
standby promoted to primary reconnects with the host's credentials.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from branchnet.broker import BrokerInfo, bound_mqtt_subscriptions, management_call, vhost_url
from common.amqp_bus import AmqpBus
from common.topology import (
    CORE,
    CRYPTO_COMMANDS,
    DEAD_EXCHANGE,
    DR_ACKS,
    DR_REPLICATION,
    EVENTS_EXCHANGE,
    HOST_CRYPTO_REPLIES,
    HOST_REQUESTS,
    REPLIES_EXCHANGE,
    REQUESTS_EXCHANGE,
    branch_key,
    branch_reply_queue,
    branch_topology,
    host_topology,
)

DEFAULT_EXCHANGE_RESOURCE = "amq.default"
NOTHING = "^$"
#: The queues RabbitMQ's MQTT plugin makes for a subscriber.
MQTT_SUBSCRIPTIONS = "^mqtt-subscription-.*$"


@dataclass(frozen=True, slots=True)
class TopicPermission:
    exchange: str
    write: str
    read: str = NOTHING


@dataclass(frozen=True, slots=True)
class NodeUser:
    """A node's broker user: resource permission patterns and topic permissions."""

    name: str
    write: str
    read: str
    topics: tuple[TopicPermission, ...] = ()
    configure: str = NOTHING


def _exactly(*names: str) -> str:
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


def branch_user(branch_id: str) -> NodeUser:
    return NodeUser(
        f"branch-{branch_id}",
        write=_exactly(REQUESTS_EXCHANGE, DEAD_EXCHANGE),
        read=_exactly(branch_reply_queue(branch_id)),
        topics=(TopicPermission(REQUESTS_EXCHANGE, _exactly(branch_key(branch_id))),),
    )


def node_users(branch_ids: Iterable[str]) -> list[NodeUser]:
    """Every node's user: host, crypto, standby and each branch."""
    events = TopicPermission(EVENTS_EXCHANGE, r"^bank\..+$")
    return [
        NodeUser(
            "host",
            write=_exactly(
                REPLIES_EXCHANGE, DEAD_EXCHANGE, DEFAULT_EXCHANGE_RESOURCE, EVENTS_EXCHANGE
            ),
            read=_exactly(HOST_REQUESTS, HOST_CRYPTO_REPLIES, DR_ACKS),
            topics=(TopicPermission(REPLIES_EXCHANGE, r"^branch\.[0-9]{4}$"), events),
        ),
        NodeUser(
            "crypto",
            write=_exactly(DEFAULT_EXCHANGE_RESOURCE, DEAD_EXCHANGE),
            read=_exactly(CRYPTO_COMMANDS),
        ),
        NodeUser(
            "standby",
            write=_exactly(DEFAULT_EXCHANGE_RESOURCE, DEAD_EXCHANGE, EVENTS_EXCHANGE),
            read=_exactly(DR_REPLICATION),
            topics=(events,),
        ),
        NodeUser(
            "dashboard",
            configure=MQTT_SUBSCRIPTIONS,
            write=MQTT_SUBSCRIPTIONS,
            read=f"^({re.escape(EVENTS_EXCHANGE)}|mqtt-subscription-.*)$",
            topics=(TopicPermission(EVENTS_EXCHANGE, write=NOTHING, read=r"^bank\..+$"),),
        ),
        *(branch_user(b) for b in branch_ids),
    ]


def credentials_dir(data_dir: Path) -> Path:
    return data_dir / "keys" / "broker"


def node_url(data_dir: Path, user: str) -> str | None:
    """The AMQP URL provisioned for ``user`` (``host``, ``branch-0001``...), if any."""
    try:
        return (credentials_dir(data_dir) / f"{user}.url").read_text().strip()
    except FileNotFoundError:
        return None


async def provision(
    management_url: str,
    admin_url: str,
    vhost: str,
    branch_ids: Sequence[str],
    data_dir: Path,
) -> dict[str, str]:
    """Declare the topology in ``vhost``, create every node's user there, and write their URLs.

    Args:
        management_url: the broker's management API.
        admin_url: an administrator's AMQP URL (its credentials also open the API).
        vhost: the virtual host the network lives in (created when missing).
        branch_ids: the registered branches.
        data_dir: where ``keys/broker/<user>.url`` files go.

    Returns:
        Each user's AMQP URL (with its password) by user name.

    Raises:
        BrokerError: the management API refused a step.
    """
    url = vhost_url(admin_url, vhost)
    management_call(management_url, admin_url, "PUT", f"/api/vhosts/{_q(vhost)}", {})
    bound_mqtt_subscriptions(management_url, admin_url, vhost)  # a stuck dashboard cannot grow
    admin = AmqpBus(url, name="branchnet-provision")
    await admin.connect()
    try:
        topology = CORE + host_topology(branch_ids)
        for branch_id in branch_ids:
            topology = topology + branch_topology(branch_id)
        await admin.declare(topology)
    finally:
        await admin.close()
    directory = credentials_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    urls: dict[str, str] = {}
    for user in node_users(branch_ids):
        password = secrets.token_urlsafe(24)
        management_call(
            management_url,
            admin_url,
            "PUT",
            f"/api/users/{_q(user.name)}",
            {"password": password, "tags": ""},
        )
        management_call(
            management_url,
            admin_url,
            "PUT",
            f"/api/permissions/{_q(vhost)}/{_q(user.name)}",
            {"configure": user.configure, "write": user.write, "read": user.read},
        )
        for topic in user.topics:
            management_call(
                management_url,
                admin_url,
                "PUT",
                f"/api/topic-permissions/{_q(vhost)}/{_q(user.name)}",
                {"exchange": topic.exchange, "write": topic.write, "read": topic.read},
            )
        urls[user.name] = _with_user(url, user.name, password)
        path = directory / f"{user.name}.url"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(urls[user.name] + "\n")
    return urls


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _with_user(url: str, user: str, password: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "localhost"
    netloc = f"{_q(user)}:{_q(password)}@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def provision_private(
    info: BrokerInfo, vhost: str, branch_ids: Sequence[str], data_dir: Path
) -> dict[str, Path]:
    """Provision a private node (its administrator is ``guest``, on loopback only).

    Returns:
        The credentials file of each user.
    """
    urls = asyncio.run(provision(info.management_url, info.amqp_url, vhost, branch_ids, data_dir))
    return {user: credentials_dir(data_dir) / f"{user}.url" for user in urls}
