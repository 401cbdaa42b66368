"""Micro-benchmarks of the per-record CPU on the request path, outside the host's batch loop.

Prints one JSON object: microseconds per operation (the best of ``--repeat`` runs, so a busy
shared machine inflates the figures less), for frames of ``--records`` records. Run::

    .venv/bin/python bench/microbench.py [--records 64] [--repeat 5]

Nothing here asserts a time; the figures are for before/after comparisons on one machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.dukpt import KeyDerivation, Ksn, next_counter
from common.envelope import SessionKey, open_records, read_sealed, seal, verify_header
from common.frames import FrameKind, build_frame, decode_frame, encode_frame
from common.pin_commands import PIN_RESPONSE_ADAPTER, HsmError, VerifyPin
from common.pinblock import encipher_format4
from common.replies import Reply, decode_reply, encode_reply
from common.requests import EncryptedPin, Withdraw, decode_request, encode_request
from common.results import ResultCode
from crypto_node import ibm3624
from crypto_node.hsm import Hsm
from crypto_node.keys import CryptoKeys
from crypto_node.pvk import Pvk
from crypto_node.service import read_command

CARD = "6200010100000018"
PIN = "123456"
PADS = 16


def _best(run: Callable[[], object], per: int, repeat: int, minimum: float = 0.2) -> float:
    """Microseconds per item: the best of ``repeat`` timed loops of at least ``minimum`` s."""
    best = float("inf")
    for _ in range(repeat):
        loops, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < minimum:
            run()
            loops += 1
        best = min(best, elapsed / (loops * per) * 1e6)
    return round(best, 2)


def _pin_blocks(keys: CryptoKeys) -> itertools.cycle[EncryptedPin] | Any:
    derivations = [
        KeyDerivation(*reversed(keys.pinpad_key("0001", f"{n:02d}"))) for n in range(1, PADS + 1)
    ]
    counters = [0] * PADS
    for pad in itertools.cycle(range(PADS)):
        counters[pad] = counter = next_counter(counters[pad])
        block = encipher_format4(derivations[pad].pin_key(counter), PIN, CARD)
        ksn = Ksn(keys.initial_key_id("0001", f"{pad + 1:02d}"), counter)
        yield EncryptedPin(pin_block=block.hex().upper(), ksn=str(ksn))


def _withdraw(n: int, pin: EncryptedPin) -> Withdraw:
    return Withdraw(
        request_id=f"0001-01-{n + 1}",
        branch_id="0001",
        teller_id="T0001",
        terminal_id="01",
        origin_time=dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC),
        account="6200010100000018",
        amount=10_000,
        pin=pin,
    )


def run(records: int, repeat: int) -> dict[str, Any]:
    """Microseconds per operation; ``/rec`` figures are per record of a ``records`` frame."""
    keys = CryptoKeys.generate()
    blocks = _pin_blocks(keys)
    requests = [_withdraw(n, next(blocks)) for n in range(records)]
    wire = [encode_request(r) for r in requests]
    now = dt.datetime.now(dt.UTC)
    reply = Reply(
        request_id=requests[0].request_id,
        result=ResultCode.APPROVED,
        reason="approved",
        balance=123_400,
        available=123_400,
        amount=10_000,
        received_at=now,
        processed_at=now,
        journal_seq=42,
    )
    reply_wire = encode_reply(reply)
    identity = Ed25519PrivateKey.generate()
    public = identity.public_key()
    session = SessionKey(1, os.urandom(32))
    body = seal(FrameKind.REQUEST, "0001", 1, wire, session, identity)
    header = read_sealed(body).header
    message = os.urandom(200)
    signature = identity.sign(message)

    def open_frame() -> None:
        sealed = read_sealed(body)
        assert verify_header(sealed.header, public)
        open_records(sealed, session)

    # HSM: one VP per record; fresh counters every batch (made before timing each batch).
    offset = ibm3624.generate_offset(
        Pvk(keys.pvk), keys.decimalization_table, ibm3624.validation_data(CARD), PIN
    )
    ids = itertools.count()

    def commands() -> list[VerifyPin]:
        return [
            VerifyPin(
                command_id=f"c-{next(ids)}",
                pan=CARD,
                pin=next(blocks),
                verification_value=offset,
                binding=f"0001-01-{next(ids)}",
            )
            for _ in range(records)
        ]

    def hsm_figure(hsm: Hsm) -> float:
        best = float("inf")
        for _ in range(repeat):
            spent, done = 0.0, 0
            while spent < 0.2:
                batch = commands()
                started = time.perf_counter()
                responses = hsm.execute_batch(batch)
                spent += time.perf_counter() - started
                done += len(batch)
                assert all(r.error is HsmError.OK for r in responses), responses[0]
            best = min(best, spent / done * 1e6)
        return round(best, 2)

    command_frame = encode_frame(
        build_frame(
            FrameKind.PIN_COMMAND, "host", 1, [c.model_dump_json().encode() for c in commands()]
        )
    )
    responses = [
        PIN_RESPONSE_ADAPTER.validate_python({"command_id": f"c-{i}", "error": "00"})
        for i in range(records)
    ]

    def crypto_frame_io() -> None:
        frame = decode_frame(command_frame, expect=FrameKind.PIN_COMMAND)
        [read_command(r) for r in frame.records]
        out = [PIN_RESPONSE_ADAPTER.dump_json(r) for r in responses]
        encode_frame(build_frame(FrameKind.PIN_RESPONSE, "crypto", 1, out))

    with tempfile.TemporaryDirectory() as home:
        persisted = Hsm(keys, replay_file=Path(home) / "marks.json")
        figures = {
            "ed25519_sign": _best(lambda: identity.sign(message), 1, repeat),
            "ed25519_verify": _best(lambda: public.verify(signature, message), 1, repeat),
            "verify_header/frame": _best(lambda: verify_header(header, public), 1, repeat),
            "seal/rec": _best(
                lambda: seal(FrameKind.REQUEST, "0001", 1, wire, session, identity), records, repeat
            ),
            "open(read+verify+decrypt)/rec": _best(open_frame, records, repeat),
            "encode_request/rec": _best(
                lambda: [encode_request(r) for r in requests], records, repeat
            ),
            "decode_request/rec": _best(
                lambda: [decode_request(w, branch_id="0001") for w in wire], records, repeat
            ),
            "encode_reply/rec": _best(lambda: encode_reply(reply), 1, repeat),
            "decode_reply/rec": _best(lambda: decode_reply(reply_wire), 1, repeat),
            "crypto_frame_io/rec": _best(crypto_frame_io, records, repeat),
            "hsm_vp_memory/rec": hsm_figure(Hsm(keys, persist=False)),
            "hsm_vp_persisted/rec": hsm_figure(persisted),
        }
    return {"records_per_frame": records, "repeat": repeat, "us_per_op": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    arguments = parser.parse_args()
    result = run(arguments.records, arguments.repeat)
    result["loadavg"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
