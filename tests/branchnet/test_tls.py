"""AMQP and MQTT over TLS, on a private node whose certificate a throwaway CA signed."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from branchnet.broker import BrokerInfo, TlsFiles, start_broker, stop_broker
from common.amqp_bus import AmqpBus
from common.bus import Delivery, Message
from common.errors import BusError
from common.topology import EVENTS_EXCHANGE, QueueSpec, Topology, event_key

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca_and_server_cert(directory: Path) -> TlsFiles:
    """A throwaway CA and a certificate for 127.0.0.1/localhost signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("branchnet test CA"))
        .issuer_name(_name("branchnet test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(_pem_key(server_key))
    return files


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerInfo, TlsFiles]]:
    base_dir = tmp_path_factory.mktemp("tls-node")
    base_dir.chmod(0o755)
    files = make_ca_and_server_cert(tmp_path_factory.mktemp("tls-ca"))
    info = start_broker(base_dir, tls=files)
    try:
        yield info, files
    finally:
        stop_broker(base_dir)


async def test_amqp_over_tls_carries_messages_and_refuses_an_unknown_ca(
    tls_node: tuple[BrokerInfo, TlsFiles], tmp_path: Path
) -> None:
    info, files = tls_node
    assert info.amqps_url is not None
    bus = AmqpBus(f"{info.amqps_url}?cafile={files.ca}", name="tls-test")
    await bus.connect()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def take(delivery: Delivery) -> None:
        await got.put(delivery.body)
        await delivery.ack()

    try:
        await bus.declare(Topology(queues=(QueueSpec("tls.test"),)))
        await bus.consume("tls.test", take, prefetch=8)
        await bus.publish([Message("", "tls.test", b"over tls")])
        assert await asyncio.wait_for(got.get(), 20) == b"over tls"
    finally:
        await bus.close()
    stranger = make_ca_and_server_cert(tmp_path)  # another CA: the node must not be trusted
    untrusting = AmqpBus(f"{info.amqps_url}?cafile={stranger.ca}", name="tls-untrusted")
    with pytest.raises(BusError):
        await untrusting.connect()


async def test_mqtt_over_tls_sees_events(tls_node: tuple[BrokerInfo, TlsFiles]) -> None:
    info, files = tls_node
    assert info.mqtts_port is not None
    context = ssl.create_default_context(cafile=str(files.ca))
    bus = AmqpBus(info.amqp_url, name="tls-events")
    await bus.connect()
    try:
        async with aiomqtt.Client(
            "127.0.0.1", info.mqtts_port, username="guest", password="guest", tls_context=context
        ) as client:
            await client.subscribe("bank/events/0001/#", qos=1)
            await bus.publish([Message(EVENTS_EXCHANGE, event_key("0001", "security"), b"{}")])
            message = await asyncio.wait_for(anext(aiter(client.messages)), 20)
    finally:
        await bus.close()
    assert str(message.topic) == "bank/events/0001/security"
