"""A private local RabbitMQ node: its own node name, ports and data directory.

Tests and local runs use it instead of the machine's own RabbitMQ (which keeps 5672, 1883,
15672 and 25672). The node is started from the distribution's ``rabbitmq-server`` with the
management and MQTT plugins, listens on 127.0.0.1 only, and lives on after the process that
started it: what is needed to find it again is kept in ``<base_dir>/broker.json``.

As root, the Debian wrappers run the server and ``rabbitmqctl`` as user ``rabbitmq`` (so
both use that user's Erlang cookie), and the node's data directory must be reachable by that
user: it is ``<base_dir>/rabbitmq`` when it is, else under ``/var/lib/rabbitmq/branchnet``.
Vhosts are managed through the management HTTP API.

TLS: given :class:`TlsFiles` (a CA certificate, and the node's certificate and key, PEM),
the node also listens for AMQP over TLS (``amqps_port``) and MQTT over TLS (``mqtts_port``),
verifying client certificates when offered (``verify_peer``, a client certificate optional).
Clients connect with ``amqps://user:password@127.0.0.1:<port>/<vhost>?cafile=<ca.pem>`` (aio-pika
reads ``cafile``, ``certfile``, ``keyfile`` from the URL) and MQTT clients with TLS parameters
naming the same CA.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from common.errors import BusError

STATE_FILE = "broker.json"
USER = "rabbitmq"
GUEST = "guest"
HOST = "127.0.0.1"
#: Ports of the machine's own RabbitMQ and MQTT broker, and epmd: never ours.
RESERVED_PORTS = frozenset({1883, 4369, 5672, 15672, 25672})
#: Where free ports are looked for: below the kernel's ephemeral range, so an outgoing
#: connection cannot take one between the pick and the node's bind.
PORT_RANGE = range(20_000, 32_000)
SYSTEM_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
SHARED_DATA_ROOT = Path("/var/lib/rabbitmq/branchnet")
INSTALL_COMMAND = "apt-get update && apt-get install -y rabbitmq-server"


class BrokerError(BusError):
    """The private node could not be installed, started, stopped or administered."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for a node's TLS listeners: the CA that signs certificates, the node's own."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """Where a private node listens and keeps its data."""

    node_name: str
    amqp_port: int
    mqtt_port: int
    management_port: int
    dist_port: int
    data_dir: Path
    amqps_port: int | None = None
    mqtts_port: int | None = None

    @property
    def amqp_url(self) -> str:
        return f"amqp://{GUEST}:{GUEST}@{HOST}:{self.amqp_port}/"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{GUEST}:{GUEST}@{HOST}:{self.mqtt_port}"

    @property
    def management_url(self) -> str:
        return f"http://{HOST}:{self.management_port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "rabbitmq.pid"

    @property
    def amqps_url(self) -> str | None:
        """AMQP over TLS (add ``?cafile=...`` for the client to verify the node)."""
        if self.amqps_port is None:
            return None
        return f"amqps://{GUEST}:{GUEST}@{HOST}:{self.amqps_port}/"

    def mqtt_url_for(self, vhost: str) -> str:
        """The MQTT URL whose clients see ``vhost``'s ``amq.topic`` (user ``vhost:guest``)."""
        user = urllib.parse.quote(f"{vhost}:{GUEST}", safe="")
        return f"mqtt://{user}:{GUEST}@{HOST}:{self.mqtt_port}"

    def to_json(self) -> str:
        fields = asdict(self)
        fields["data_dir"] = str(self.data_dir)
        return json.dumps(fields, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BrokerInfo:
        fields = json.loads(text)
        fields["data_dir"] = Path(fields["data_dir"])
        return cls(**fields)


def vhost_url(amqp_url: str, vhost: str) -> str:
    """``amqp_url`` pointed at ``vhost``."""
    parts = urllib.parse.urlsplit(amqp_url)
    path = "/" + urllib.parse.quote(vhost, safe="")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


# -- installation ------------------------------------------------------------------------------


def ensure_rabbitmq_installed() -> None:
    """Install the distribution's ``rabbitmq-server`` when it is missing and we are root.

    Raises:
        BrokerError: it is missing and cannot be installed from here; the text says how.
    """
    if _find("rabbitmq-server") is not None:
        return
    if os.geteuid() != 0:
        raise BrokerError(f"rabbitmq-server is not installed; run as root: {INSTALL_COMMAND}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "rabbitmq-server"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BrokerError(
                f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}"
            )
    if _find("rabbitmq-server") is None:
        raise BrokerError(f"rabbitmq-server still missing after: {INSTALL_COMMAND}")


def _find(program: str) -> str | None:
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/local/sbin")


def _script(program: str) -> str:
    """The RabbitMQ script to run: the Debian wrapper as root (it drops to user rabbitmq),
    else the script itself, run as the current user."""
    if os.geteuid() == 0:
        found = _find(program)
    else:
        plain = SYSTEM_SCRIPTS / program
        found = str(plain) if plain.exists() else _find(program)
    if found is None:
        raise BrokerError(f"{program} is not installed; run as root: {INSTALL_COMMAND}")
    return found


# -- start, status, stop --------------------------------------------------------------------


def start_broker(
    base_dir: Path,
    *,
    node_name: str | None = None,
    amqp_port: int | None = None,
    mqtt_port: int | None = None,
    management_port: int | None = None,
    timeout_s: float = 60,
    tls: TlsFiles | None = None,
) -> BrokerInfo:
    """Start the private node of ``base_dir`` and wait until it serves AMQP, MQTT and HTTP.

    A node already running there is returned as it is. Ports not given are the ones it had
    last time when still free, else free ones. With ``tls`` it also listens for AMQP and MQTT
    over TLS.

    Raises:
        BrokerError: it could not be started; the text ends with its startup log.
    """
    base_dir = base_dir.resolve()
    deadline = time.monotonic() + timeout_s
    previous = _load(base_dir)
    if previous is not None and _node_process(previous) is not None:
        # Running, or still booting from another start: wait for it rather than start twice.
        _await_ready(previous, previous.data_dir / "startup.log", deadline)
        return previous
    server = _script("rabbitmq-server")
    base_dir.mkdir(parents=True, exist_ok=True)
    info = _plan(base_dir, node_name, amqp_port, mqtt_port, management_port, tls=tls is not None)
    _prepare(info, tls)
    (base_dir / STATE_FILE).write_text(info.to_json())
    with contextlib.suppress(FileNotFoundError):
        info.pid_file.unlink()
    log = info.data_dir / "startup.log"
    with log.open("ab") as out:
        # setsid -f: the node gets its own session and outlives us; setsid returns at once.
        subprocess.run(
            ["setsid", "-f", server],
            env=_node_env(info),
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
        )
    try:
        _await_ready(info, log, deadline)
    except BrokerError:
        _stop(info, timeout_s=20)
        raise
    return info


@contextlib.contextmanager
def private_broker(prefix: str) -> Iterator[BrokerInfo]:
    """A private node in a fresh temporary directory (named ``prefix``...) for the ``with``
    block; then stopped and its directory removed. For benchmarks that need a broker of
    their own."""
    ensure_rabbitmq_installed()
    base_dir = Path(tempfile.mkdtemp(prefix=prefix))
    base_dir.chmod(0o755)  # the node runs as user rabbitmq
    try:
        node = start_broker(base_dir)
        try:
            yield node
        finally:
            stop_broker(base_dir)
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)


def broker_status(base_dir: Path) -> BrokerInfo | None:
    """The node of ``base_dir`` when it is running and accepts AMQP connections, else None."""
    info = _load(base_dir)
    if info is None:
        return None
    if _node_process(info) is None or not _amqp_answers(info.amqp_port):
        return None
    return info


def stop_broker(base_dir: Path) -> None:
    """Stop the node of ``base_dir`` and wait until it has exited; nothing if it is not running.

    Its data directory and ``broker.json`` stay, so a later start is the same node again.
    """
    info = _load(base_dir)
    if info is not None:
        _stop(info, timeout_s=60)


def _stop(info: BrokerInfo, *, timeout_s: float) -> None:
    pid = _node_process(info)
    if pid is None:
        if not _amqp_answers(info.amqp_port):
            return
        pid = None  # listening but its pid file is gone: ask it by name
    deadline = time.monotonic() + timeout_s
    _run_ctl(info, ["stop"], timeout_s=timeout_s)
    if pid is not None and not _wait_exit(pid, deadline):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if _wait_exit(pid, time.monotonic() + 10):
                break
    while _amqp_answers(info.amqp_port) and time.monotonic() < deadline:
        time.sleep(0.2)


def _run_ctl(info: BrokerInfo, args: list[str], *, timeout_s: float) -> bool:
    """Run ``rabbitmqctl -n NODE args``; False when it failed or timed out."""
    command = [_script("rabbitmqctl"), "-n", info.node_name, *args]
    process = subprocess.Popen(
        command,
        env=_node_env(info),
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        return process.wait(timeout=timeout_s) == 0
    except subprocess.TimeoutExpired:
        # The wrapper's su and the CLI's Erlang VM share the session; end them all.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return False


def _load(base_dir: Path) -> BrokerInfo | None:
    try:
        return BrokerInfo.from_json((base_dir.resolve() / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as exc:
        raise BrokerError(f"{base_dir / STATE_FILE} is not a broker state file: {exc}") from exc


def _node_process(info: BrokerInfo) -> int | None:
    """The pid of the node's Erlang VM while it runs."""
    try:
        pid = int(info.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_exit(pid: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


# -- planning a node -------------------------------------------------------------------------


def default_node_name(base_dir: Path) -> str:
    """A node name unique to ``base_dir``: ``branchnet-<hash>@localhost``."""
    digest = hashlib.sha256(str(base_dir.resolve()).encode()).hexdigest()[:10]
    return f"branchnet-{digest}@localhost"


def _plan(
    base_dir: Path,
    node_name: str | None,
    amqp_port: int | None,
    mqtt_port: int | None,
    management_port: int | None,
    *,
    tls: bool = False,
) -> BrokerInfo:
    previous = _load(base_dir)
    name = node_name or (previous.node_name if previous else default_node_name(base_dir))
    wanted = {
        "amqp_port": amqp_port,
        "mqtt_port": mqtt_port,
        "management_port": management_port,
        "dist_port": None,
    }
    if tls:
        wanted |= {"amqps_port": None, "mqtts_port": None}
    taken: set[int] = set()
    ports: dict[str, int] = {}
    for field, given in wanted.items():
        before = getattr(previous, field) if previous else None
        if given is not None:
            port = given
        elif before is not None and before not in taken and _port_free(before):
            port = before
        else:
            port = _free_port(base_dir, field, taken)
        taken.add(port)
        ports[field] = port
    return BrokerInfo(node_name=name, data_dir=_data_dir(base_dir, name), **ports)


def _free_port(base_dir: Path, field: str, taken: set[int]) -> int:
    seed = int(hashlib.sha256(f"{base_dir}:{field}".encode()).hexdigest(), 16)
    span = len(PORT_RANGE)
    for step in range(span):
        port = PORT_RANGE[(seed + step) % span]
        if port not in taken and port not in RESERVED_PORTS and _port_free(port):
            return port
    raise BrokerError(f"no free port in {PORT_RANGE.start}..{PORT_RANGE.stop - 1}")


def _port_free(port: int) -> bool:
    """Nothing listens on ``port``; connections lingering in TIME_WAIT do not count (servers
    bind with SO_REUSEADDR, and so does this probe)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _data_dir(base_dir: Path, node_name: str) -> Path:
    """``<base_dir>/rabbitmq`` when the node's user can reach it, else a directory of its own
    under ``/var/lib/rabbitmq``: the wrapper runs the node as user ``rabbitmq``."""
    if os.geteuid() != 0 or _reachable_by_others(base_dir):
        return base_dir / "rabbitmq"
    return SHARED_DATA_ROOT / node_name.split("@", 1)[0]


def _reachable_by_others(path: Path) -> bool:
    """Every existing directory from ``/`` to ``path`` may be entered by any user."""
    for directory in [*reversed(path.parents), path]:
        try:
            mode = directory.stat().st_mode
        except FileNotFoundError:
            return True  # created by us below, with mode 755
        if not mode & stat.S_IXOTH:
            return False
    return True


def _prepare(info: BrokerInfo, tls: TlsFiles | None = None) -> None:
    """Write the node's config, plugin and environment files into its data directory."""
    data = info.data_dir
    data.mkdir(parents=True, exist_ok=True)
    (data / "log").mkdir(exist_ok=True)
    lines = [
        f"listeners.tcp.local = {HOST}:{info.amqp_port}",
        f"mqtt.listeners.tcp.local = {HOST}:{info.mqtt_port}",
        f"management.tcp.ip = {HOST}",
        f"management.tcp.port = {info.management_port}",
        "loopback_users = none",
    ]
    if tls is not None and info.amqps_port is not None and info.mqtts_port is not None:
        # Copies inside the data directory: the node runs as user rabbitmq.
        (data / "tls").mkdir(exist_ok=True)
        copies = {}
        for name, source in (("ca", tls.ca), ("cert", tls.cert), ("key", tls.key)):
            copies[name] = data / "tls" / f"{name}.pem"
            shutil.copyfile(source, copies[name])
        copies["key"].chmod(0o600)
        lines += [
            f"listeners.ssl.local = {HOST}:{info.amqps_port}",
            f"mqtt.listeners.ssl.local = {HOST}:{info.mqtts_port}",
            f"ssl_options.cacertfile = {copies['ca']}",
            f"ssl_options.certfile = {copies['cert']}",
            f"ssl_options.keyfile = {copies['key']}",
            "ssl_options.verify = verify_peer",
            "ssl_options.fail_if_no_peer_cert = false",
        ]
    (data / "rabbitmq.conf").write_text("\n".join([*lines, ""]))
    (data / "enabled_plugins").write_text("[rabbitmq_management,rabbitmq_mqtt].\n")
    # Our own (empty) env file: /etc/rabbitmq/rabbitmq-env.conf belongs to the system node.
    (data / "rabbitmq-env.conf").write_text("# branchnet private node: settings come from env\n")
    if os.geteuid() == 0:
        _chown_tree(data, USER)


def _chown_tree(root: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for directory, _, files in os.walk(root):
        os.chown(directory, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(os.path.join(directory, name), entry.pw_uid, entry.pw_gid)
    with contextlib.suppress(PermissionError):
        root.chmod(0o755)


def _node_env(info: BrokerInfo) -> dict[str, str]:
    data = info.data_dir
    return {
        **os.environ,
        "RABBITMQ_NODENAME": info.node_name,
        "RABBITMQ_DIST_PORT": str(info.dist_port),
        "RABBITMQ_CONFIG_FILE": str(data / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(data / "enabled_plugins"),
        "RABBITMQ_CONF_ENV_FILE": str(data / "rabbitmq-env.conf"),
        "RABBITMQ_MNESIA_BASE": str(data / "mnesia"),
        "RABBITMQ_LOG_BASE": str(data / "log"),
        "RABBITMQ_PID_FILE": str(info.pid_file),
        # The VM keeps RabbitMQ's defaults (no busy wait, +stbt db, a scheduler per core).
        # Measured with bench/brokerhop.py on 2 vCPUs: +sbwt short cost 1.4-2.3 times the
        # broker's CPU per message for no latency gain; +stbt u, +S 1:1, and in rabbitmq.conf
        # management.rates_mode = none, collect_statistics_interval = 30000 and
        # raft.wal_max_batch_size = 64, moved the hop latencies less than the run-to-run
        # spread (+S 1:1 saved 5-20% of the broker's CPU but would cap it at one core).
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        "ERL_EPMD_ADDRESS": HOST,
    }


# -- readiness -------------------------------------------------------------------------------


def _await_ready(info: BrokerInfo, log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if info.pid_file.exists() and _node_process(info) is None:
            raise BrokerError(f"node {info.node_name} exited while starting:\n{_tail(log)}")
        if (
            _amqp_answers(info.amqp_port)
            and _port_listens(info.mqtt_port)
            and management_reachable(info.management_url, info.amqp_url)
        ):
            return
        time.sleep(0.25)
    raise BrokerError(f"node {info.node_name} did not come up in time:\n{_tail(log)}")


def _amqp_answers(port: int) -> bool:
    """The port speaks AMQP 0-9-1: it answers the protocol header with a method frame."""
    try:
        with socket.create_connection((HOST, port), timeout=2) as connection:
            connection.sendall(b"AMQP\x00\x00\x09\x01")
            return connection.recv(1) == b"\x01"
    except OSError:
        return False


def _port_listens(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=2):
            return True
    except OSError:
        return False


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no startup log)"


# -- vhosts through the management API --------------------------------------------------------


def create_vhost(info: BrokerInfo, vhost: str) -> str:
    """Create ``vhost`` on the private node (idempotent); returns its AMQP URL."""
    return add_vhost(info.management_url, info.amqp_url, vhost)


def delete_vhost(info: BrokerInfo, vhost: str) -> None:
    """Delete ``vhost`` and everything in it; nothing if it does not exist."""
    remove_vhost(info.management_url, info.amqp_url, vhost)


def add_vhost(management_url: str, amqp_url: str, vhost: str) -> str:
    """Create ``vhost`` through the management API at ``management_url`` and give the user of
    ``amqp_url`` every permission in it; returns ``amqp_url`` pointed at the vhost."""
    name = urllib.parse.quote(vhost, safe="")
    user = urllib.parse.urlsplit(amqp_url).username or GUEST
    _management(management_url, amqp_url, "PUT", f"/api/vhosts/{name}", {})
    permissions = {"configure": ".*", "write": ".*", "read": ".*"}
    quoted_user = urllib.parse.quote(urllib.parse.unquote(user), safe="")
    _management(
        management_url, amqp_url, "PUT", f"/api/permissions/{name}/{quoted_user}", permissions
    )
    return vhost_url(amqp_url, vhost)


def remove_vhost(management_url: str, amqp_url: str, vhost: str) -> None:
    """Delete ``vhost`` through the management API; nothing if it does not exist."""
    name = urllib.parse.quote(vhost, safe="")
    _management(management_url, amqp_url, "DELETE", f"/api/vhosts/{name}", None, missing_ok=True)


def management_reachable(management_url: str, amqp_url: str) -> bool:
    """The management API answers with ``amqp_url``'s credentials."""
    try:
        _management(management_url, amqp_url, "GET", "/api/overview", None, timeout_s=3)
    except BrokerError:
        return False
    return True


def _management(
    management_url: str,
    amqp_url: str,
    method: str,
    path: str,
    body: object,
    *,
    missing_ok: bool = False,
    timeout_s: float = 30,
) -> bytes:
    parts = urllib.parse.urlsplit(amqp_url)
    user = urllib.parse.unquote(parts.username or GUEST)
    password = urllib.parse.unquote(parts.password or GUEST)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        management_url.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        exc.close()
        if missing_ok and exc.code == 404:
            return b""
        raise BrokerError(f"management API {method} {path}: HTTP {exc.code}") from exc
    except (OSError, urllib.error.URLError) as exc:
        raise BrokerError(f"management API at {management_url} unreachable: {exc}") from exc


def close_connections(management_url: str, amqp_url: str, vhost: str) -> int:
    """Close every client connection to ``vhost`` (as a network fault would); returns how many."""
    name = urllib.parse.quote(vhost, safe="")
    listing = json.loads(
        _management(management_url, amqp_url, "GET", f"/api/vhosts/{name}/connections", None)
    )
    for connection in listing:
        quoted = urllib.parse.quote(connection["name"], safe="")
        _management(
            management_url, amqp_url, "DELETE", f"/api/connections/{quoted}", None, missing_ok=True
        )
    return len(listing)


def management_call(
    management_url: str, amqp_url: str, method: str, path: str, body: object
) -> bytes:
    """One management API request with ``amqp_url``'s credentials (for branchnet.access).

    Raises:
        BrokerError: the API answered with an error or is unreachable.
    """
    return _management(management_url, amqp_url, method, path, body)


#: The policy that bounds the MQTT plugin's subscription queues (see bound_mqtt_subscriptions).
MQTT_BOUND_POLICY = "branchnet-mqtt-bound"


def bound_mqtt_subscriptions(
    management_url: str, amqp_url: str, vhost: str, *, max_length: int = 10_000
) -> None:
    """Bound every MQTT subscription queue of ``vhost`` with a policy.

    RabbitMQ's MQTT plugin keeps a queue per subscriber (``mqtt-subscription-<client>qos<n>``)
    with no bound: a dashboard that stops reading would let it grow in the broker until the
    memory alarm blocks every publisher, transactions included. A full one drops its oldest
    events (``drop-head``): only the subscriber that fell behind loses any, and it keeps the
    newest. (``reject-publish`` would refuse the host's events for every subscriber while one
    is stuck; the host's publisher would then drop and count them, host_node/events.py.)
    """
    name = urllib.parse.quote(vhost, safe="")
    policy = {
        "pattern": "^mqtt-subscription-",
        "apply-to": "queues",
        "priority": 10,
        "definition": {"max-length": max_length, "overflow": "drop-head"},
    }
    path = f"/api/policies/{name}/{MQTT_BOUND_POLICY}"
    _management(management_url, amqp_url, "PUT", path, policy)
