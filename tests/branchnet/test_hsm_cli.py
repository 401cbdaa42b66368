"""``branchnet keys ceremony | list | rotate`` and ``hsm kat`` from the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from branchnet.cli import main
from crypto_node import load_crypto_keys
from crypto_node.lmk import Component, Lmk

pytestmark = pytest.mark.usefixtures("logging_restored")


def test_ceremony_prints_components_with_kcvs_and_the_lmk_kcv(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["keys", "ceremony", "--components", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    parts = [
        re.fullmatch(r"component \d: ([0-9A-F ]+)  KCV ([0-9A-F]{6})", line) for line in lines[:3]
    ]
    components = [Component.entered(m.group(1), m.group(2)) for m in parts if m is not None]
    assert len(components) == 3
    assert lines[3] == f"LMK KCV {Lmk(components).kcv}"
    with pytest.raises(SystemExit):
        main(["keys", "ceremony", "--components", "1"])


def test_ceremony_to_files_prints_only_kcvs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "ceremony", "--out-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    for n in (1, 2):
        document = json.loads((tmp_path / "c" / f"component-{n}.json").read_text())
        assert document["component"] not in out and document["kcv"] in out


def test_list_shows_usage_version_and_kcv_never_a_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path)
    assert main(["keys", "init", "--data-dir", data, "--branches", "1"]) == 0
    assert main(["keys", "rotate", "pvk", "--data-dir", data, "--branches", "1"]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--data-dir", data]) == 0
    out = capsys.readouterr().out
    keys = load_crypto_keys(tmp_path)
    for stored in keys.ring:
        line = next(row for row in out.splitlines() if row.startswith(stored.name + " "))
        assert stored.header.usage in line and stored.kcv in line and stored.version in line
        assert stored.key.hex().upper() not in out
    assert "pvk-ibm/2" in out and re.search(r"pvk-ibm/2 .*current", out)
    assert not re.search(r"pvk-ibm/1 .*current", out)
    assert keys.lmk.key.hex().upper() not in out and f"LMK KCV {keys.lmk.kcv}" in out
