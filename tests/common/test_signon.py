from __future__ import annotations

import datetime as dt

import pytest

from common.signon import (
    SIGN_ON_ADAPTER,
    Hello,
    Welcome,
    derive_key,
    encode,
    new_ephemeral,
    new_nonce,
    next_epoch,
)


def test_both_sides_derive_the_same_key_bound_to_branch_and_epoch() -> None:
    branch_private, branch_public = new_ephemeral()
    host_private, host_public = new_ephemeral()
    names = {"branch_ephemeral": branch_public, "host_ephemeral": host_public}
    at_branch = derive_key(branch_private, host_public, branch_id="0001", epoch=5, **names)
    at_host = derive_key(host_private, branch_public, branch_id="0001", epoch=5, **names)
    assert at_branch == at_host and at_branch.epoch == 5
    other_epoch = derive_key(host_private, branch_public, branch_id="0001", epoch=6, **names)
    other_branch = derive_key(host_private, branch_public, branch_id="0002", epoch=5, **names)
    assert len({at_host.key, other_epoch.key, other_branch.key}) == 3
    assert "key=" not in repr(at_host)


def test_records_round_trip_and_refuse_strangers() -> None:
    _, public = new_ephemeral()
    hello = Hello(branch_id="0001", ephemeral=public, nonce=new_nonce(), at=dt.datetime.now(dt.UTC))
    assert SIGN_ON_ADAPTER.validate_json(encode(hello)) == hello
    welcome = Welcome(
        branch_id="0001",
        epoch=3,
        ephemeral=public,
        nonce=hello.nonce,
        expires_at=dt.datetime.now(dt.UTC),
    )
    assert SIGN_ON_ADAPTER.validate_json(encode(welcome)) == welcome
    with pytest.raises(ValueError):
        SIGN_ON_ADAPTER.validate_json(b'{"type":"hello","branch_id":"0001"}')


def test_epochs_only_grow() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    first = next_epoch(0, now)
    assert next_epoch(first, now) == first + 1
    assert next_epoch(5, now) == first
