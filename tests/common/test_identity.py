from __future__ import annotations

import stat
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.identity import ensure_identity, load_identity, load_public, verify


def test_keys_are_created_once_and_signatures_verify(tmp_path: Path) -> None:
    key = ensure_identity(tmp_path, "host")
    again = ensure_identity(tmp_path, "host")
    signature = key.sign(b"checkpoint 42")
    public = load_public(tmp_path, "host")
    assert verify(public, again.sign(b"checkpoint 42"), b"checkpoint 42")
    assert verify(public, signature, b"checkpoint 42")
    assert not verify(public, signature, b"checkpoint 43")
    mode = stat.S_IMODE((tmp_path / "keys" / "identity" / "host.key").stat().st_mode)
    assert mode == 0o600


def test_missing_keys_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="branch-0001"):
        load_identity(tmp_path, "branch-0001")
    with pytest.raises(ConfigError):
        load_public(tmp_path, "branch-0001")
