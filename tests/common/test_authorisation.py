"""Staff keys and the canonical content a supervisor signs."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import orjson
import pytest

from common.authorisation import (
    StaffKey,
    authorised_content,
    init_staff_keys,
    signature_valid,
    staff_public_keys,
)
from common.errors import ConfigError
from common.identity import identity_dir
from common.requests import Freeze, UnlockPin

T0 = dt.datetime(2026, 1, 5, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
BASE = {
    "request_id": "0001-01-0000000001",
    "branch_id": "0001",
    "teller_id": "T000101",
    "terminal_id": "01",
    "origin_time": T0,
}


def test_staff_keys_are_made_once_private_to_their_owner(tmp_path: Path) -> None:
    init_staff_keys(tmp_path, ["S000101", "A000101"])
    first = StaffKey.load(tmp_path, "S000101")
    init_staff_keys(tmp_path, ["S000101"])
    assert StaffKey.load(tmp_path, "S000101").key.private_bytes_raw() == (
        first.key.private_bytes_raw()
    )
    for name in ("staff-S000101.key", "staff-A000101.key"):
        assert stat.S_IMODE((identity_dir(tmp_path) / name).stat().st_mode) == 0o600
    public = staff_public_keys(tmp_path)
    assert set(public) == {"S000101", "A000101"}
    assert public["S000101"].public_bytes_raw() == first.key.public_key().public_bytes_raw()
    init_staff_keys(tmp_path, ["S000101"], force=True)
    assert StaffKey.load(tmp_path, "S000101").key.private_bytes_raw() != (
        first.key.private_bytes_raw()
    )


def test_a_missing_staff_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="staff-S000101"):
        StaffKey.load(tmp_path, "S000101")


def test_the_signed_content_is_the_request_without_its_authorisation(tmp_path: Path) -> None:
    init_staff_keys(tmp_path, ["S000101"])
    supervisor = StaffKey.load(tmp_path, "S000101")
    request = UnlockPin(**BASE, account="6200010100000011")  # type: ignore[arg-type]
    signed = supervisor.authorise(request)
    assert authorised_content(signed) == authorised_content(request)
    document = orjson.loads(authorised_content(request))
    assert "authorisation" not in document and document["origin_time"].endswith("+08:00")
    assert list(document) == sorted(document)
    assert signature_valid(signed, supervisor.key.public_key())
    assert not signature_valid(request, supervisor.key.public_key())
    # the branch client adds the deadline when it first sends, after the supervisor signed
    sent = signed.model_copy(update={"deadline": T0 + dt.timedelta(seconds=30)})
    assert signature_valid(sent, supervisor.key.public_key())
    freeze = Freeze(**BASE, account="6200010100000011", authority_ref="x1")  # type: ignore[arg-type]
    assert "amount" not in orjson.loads(authorised_content(freeze))  # absent stays absent
    moved = freeze.model_copy(update={"authorisation": signed.authorisation})
    assert not signature_valid(moved, supervisor.key.public_key())
    assert supervisor.key.private_bytes_raw().hex() not in repr(supervisor) + repr(signed)
