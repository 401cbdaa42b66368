from __future__ import annotations

from crypto_node import run_bench


def test_bench_verifies_pins_through_the_command_path() -> None:
    result = run_bench(0.05, batch=32, pads=4)
    assert result["failures"] == 0
    assert result["verifications"] >= 32 and result["verifications"] % 32 == 0
    assert result["verifications_per_s"] > 0
    assert result["hsm_seconds"] >= 0.05
