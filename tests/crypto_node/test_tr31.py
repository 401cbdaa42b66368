"""TR-31 / X9.143 version D key blocks: public known answers, round trips, refusals."""

from __future__ import annotations

import pytest

from crypto_node.errors import KeyBlockError
from crypto_node.tr31 import KeyBlockHeader, open_payload, unwrap, wrap

#: (KBPK, key block, clear key): TR-31:2018 A.7.4, and two blocks made by a Thales payShield
#: 10k, as published with the openemv/tr31 test suite.
VECTORS = [
    (
        "88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6",
        "D0112P0AE00E0000B82679114F470F540165EDFBF7E250FCEA43F810D215F8D207E2E417C07156A27E8E31"
        "DA05F7425509593D03A457DC34",
        "3F419E1CB7079442AA37474C2EFBF8B8",
    ),
    (
        "41" * 32,
        "D0112B0TN00N000037DB9B046B7B0048785690759580ABC3B9842AB4BB7717B49E92528E575785D812355937"
        "6A2553B27BE94F054F4E971C",
        "1FA1F7CEC798D91545DA8AE0C7796BD9",
    ),
    (
        "41" * 32,
        "D0144D0AN00N0000127862F945C2DED04530FAF7CDBC8B0BA10C7AA79BD5E0C2C5D6AC173BF588E4B19ACF13"
        "57178D50EA0AB193228E13958304FC6149632DFDCADF3A5B3D57E814",
        "BE19E6A07A760F10EF8E83A226B63AAD141F463FDDD4F47DB244B4023EC3CACC",
    ),
]


@pytest.mark.parametrize(("kbpk", "block", "key"), VECTORS)
def test_public_key_blocks_unwrap_and_rewrap_to_the_same_text(
    kbpk: str, block: str, key: str
) -> None:
    header, clear = unwrap(bytes.fromhex(kbpk), block)
    assert clear.hex().upper() == key
    _, payload = open_payload(bytes.fromhex(kbpk), block)
    padding = payload[2 + len(clear) :]
    assert wrap(bytes.fromhex(kbpk), header, clear, padding) == block


def test_the_header_says_what_the_key_is_for() -> None:
    header, _ = unwrap(bytes.fromhex(VECTORS[0][0]), VECTORS[0][1])
    assert header == KeyBlockHeader("P0", "A", "E", "00", "E")


@pytest.mark.parametrize("size", [16, 24, 32])
def test_round_trip_under_every_aes_kbpk_size(size: int) -> None:
    kbpk = bytes(range(size))
    header = KeyBlockHeader("V1", "T", "C", "02", "N")
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    block = wrap(kbpk, header, key)
    assert block.startswith("D0112V1TC02N0000") and key.hex().upper() not in block
    assert unwrap(kbpk, block) == (header, key)
    assert wrap(kbpk, header, key) != block  # random padding


def test_an_altered_header_or_body_or_another_kbpk_is_refused() -> None:
    kbpk = bytes(32)
    block = wrap(kbpk, KeyBlockHeader("V1", "T", "V", "01", "N"), bytes(range(16)))
    loosened = block[:8] + "C" + block[9:]  # mode of use V -> C
    assert loosened.startswith("D0112V1TC01N")
    with pytest.raises(KeyBlockError, match="MAC"):
        unwrap(kbpk, loosened)
    flipped = block[:20] + ("0" if block[20] != "0" else "1") + block[21:]
    with pytest.raises(KeyBlockError, match="MAC"):
        unwrap(kbpk, flipped)
    with pytest.raises(KeyBlockError, match="MAC"):
        unwrap(bytes(31) + b"\x01", block)


@pytest.mark.parametrize(
    "block",
    [
        "",
        "A0072P0TE00E0000F5161ED902807AF26F1D62263644BD24192FDB3193C730301CEE8701",  # version A
        "D0111P0AE00E0000" + "00" * 47 + "0",
        "D0112P0AE00E0100" + "00" * 48,  # optional blocks
        "D0112Z9AE00E0000" + "00" * 48,  # unknown usage
        "D0112P0AE00E0000" + "zz" * 48,
    ],
)
def test_malformed_blocks_are_refused_without_echoing_them(block: str) -> None:
    with pytest.raises(KeyBlockError) as refused:
        unwrap(bytes(32), block)
    assert block[16:] == "" or block[16:40] not in str(refused.value)
