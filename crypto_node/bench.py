"""A throughput benchmark of PIN verification through the HSM's command path.

Each verification is what the host asks for at a withdrawal: a ``VP`` command whose format 4
PIN block comes fresh from a PIN pad, so the HSM derives the DUKPT key from the BDK and the
KSN, deciphers the block, checks the KSN is unused and verifies the IBM 3624 offset. Blocks
are made before the clock starts; only :meth:`Hsm.execute_batch` is timed, in one process on
one thread, with in-memory keys and replay marks.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

from common.dukpt import KeyDerivation, Ksn, next_counter
from common.pin_commands import HsmError, VerifyPin
from common.pinblock import encipher_format4
from common.requests import EncryptedPin
from crypto_node import ibm3624
from crypto_node.hsm import Hsm
from crypto_node.keys import CryptoKeys
from crypto_node.pvk import Pvk

BATCH = 256
PADS = 16
CARD = "6200010100000018"
PIN = "123456"


def run_bench(seconds: float, *, batch: int = BATCH, pads: int = PADS) -> dict[str, Any]:
    """Verify PINs for about ``seconds`` of HSM time; the measured rate and what was run.

    Returns:
        ``verifications_per_s`` (verifications divided by the wall-clock time spent in
        ``execute_batch``), ``verifications_per_cpu_s`` (divided by the CPU time of the
        thread running it: the one-core figure on a shared, busy machine),
        ``verifications``, ``hsm_seconds``, ``hsm_cpu_seconds``, ``batch``, ``pads``,
        ``failures`` (responses other than ``00``; 0 unless something is wrong).
    """
    keys = CryptoKeys.generate()
    hsm = Hsm(keys, persist=False)
    offset = ibm3624.generate_offset(
        Pvk(keys.pvk), keys.decimalization_table, ibm3624.validation_data(CARD), PIN
    )
    blocks = pin_blocks(keys, pads)
    ids = itertools.count()
    verified = failures = 0
    spent = cpu_spent = 0.0
    while spent < seconds or verified == 0:
        commands = [
            VerifyPin(
                command_id=f"bench-{next(ids)}",
                pan=CARD,
                pin=next(blocks),
                verification_value=offset,
            )
            for _ in range(batch)
        ]
        started, cpu_started = time.perf_counter(), time.thread_time()
        responses = hsm.execute_batch(commands)
        spent += time.perf_counter() - started
        cpu_spent += time.thread_time() - cpu_started
        verified += len(responses)
        failures += sum(response.error is not HsmError.OK for response in responses)
    return {
        "verifications_per_s": round(verified / spent),
        "verifications_per_cpu_s": round(verified / cpu_spent) if cpu_spent else None,
        "verifications": verified,
        "hsm_seconds": round(spent, 3),
        "hsm_cpu_seconds": round(cpu_spent, 3),
        "batch": batch,
        "pads": pads,
        "failures": failures,
    }


def pin_blocks(keys: CryptoKeys, pads: int) -> Iterator[EncryptedPin]:
    """PIN blocks as ``pads`` PIN pads of branch 0001 make them, taking turns.

    (The branch's PinPad does the same; a node never imports another node.)
    """
    derivations = []
    for number in range(1, pads + 1):
        initial_key_id, initial_key = keys.pinpad_key("0001", f"{number:02d}")
        derivations.append(KeyDerivation(initial_key, initial_key_id))
    counters = [0] * pads
    for pad in itertools.cycle(range(pads)):
        counters[pad] = counter = next_counter(counters[pad])
        derivation = derivations[pad]
        block = encipher_format4(derivation.pin_key(counter), PIN, CARD)
        ksn = Ksn(keys.initial_key_id("0001", f"{pad + 1:02d}"), counter)
        yield EncryptedPin(pin_block=block.hex().upper(), ksn=str(ksn))
