"""The bus's own AMQP frames (common/amqp_wire.py) are byte for byte pamqp's."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp import frame as pamqp_frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from common.amqp_wire import PublishEncoder, ack_frame, nack_frame

_short = st.text(st.characters(codec="ascii"), max_size=40)
_exchange = st.text(st.sampled_from("abz09-_.:"), max_size=40)  # AMQP's exchange-name
_headers = st.dictionaries(_short, _short, max_size=3)


def _pamqp_publish(
    channel: int,
    max_body: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    headers: dict[str, str],
    transient: bool,
    mandatory: bool,
    message_id: str | None,
) -> bytes:
    properties = spec.Basic.Properties(
        delivery_mode=1 if transient else 2,
        headers=dict(headers) if headers else None,
        message_id=message_id,
    )
    frames: list[spec.Basic.Publish | ContentHeader | ContentBody] = [
        spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory),
        ContentHeader(properties=properties, body_size=len(body)),
    ]
    frames += [ContentBody(body[i : i + max_body]) for i in range(0, len(body), max_body)]
    return b"".join(pamqp_frame.marshal(frame, channel) for frame in frames)


@given(
    channel=st.integers(1, 65535),
    max_body=st.integers(1, 64),
    exchange=_exchange,
    routing_key=_short,
    body=st.binary(max_size=200),
    headers=_headers,
    transient=st.booleans(),
    mandatory=st.booleans(),
    message_id=st.none() | st.integers(1, 2**40).map(str),
)
def test_a_publish_is_framed_as_pamqp_frames_it(
    channel: int,
    max_body: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    headers: dict[str, str],
    transient: bool,
    mandatory: bool,
    message_id: str | None,
) -> None:
    encoder = PublishEncoder()
    expected = _pamqp_publish(
        channel, max_body, exchange, routing_key, body, headers, transient, mandatory, message_id
    )
    for _ in range(2):  # the second time from the caches
        parts: list[bytes] = []
        encoder.encode(
            parts,
            channel,
            max_body,
            exchange=exchange,
            routing_key=routing_key,
            body=body,
            headers=headers,
            transient=transient,
            mandatory=mandatory,
            message_id=message_id,
        )
        assert b"".join(parts) == expected


def test_cached_frames_follow_the_channel_and_the_message() -> None:
    encoder = PublishEncoder()
    cases = [(1, "a", {}), (2, "a", {}), (1, "b", {"k": "v"}), (1, "b", {"k": "w"})]
    for channel, routing_key, headers in cases * 2:
        parts: list[bytes] = []
        encoder.encode(
            parts,
            channel,
            1000,
            exchange="x",
            routing_key=routing_key,
            body=b"body",
            headers=headers,
            transient=False,
            mandatory=True,
        )
        assert b"".join(parts) == _pamqp_publish(
            channel, 1000, "x", routing_key, b"body", headers, False, True, None
        )


@given(
    channel=st.integers(0, 65535),
    delivery_tag=st.integers(1, 2**63 - 1),
    flag=st.booleans(),
)
def test_acks_and_nacks_are_framed_as_pamqp_frames_them(
    channel: int, delivery_tag: int, flag: bool
) -> None:
    assert ack_frame(channel, delivery_tag, multiple=flag) == pamqp_frame.marshal(
        spec.Basic.Ack(delivery_tag=delivery_tag, multiple=flag), channel
    )
    assert nack_frame(channel, delivery_tag, requeue=flag) == pamqp_frame.marshal(
        spec.Basic.Nack(delivery_tag=delivery_tag, requeue=flag), channel
    )
