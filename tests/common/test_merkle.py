from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from common.merkle import leaf_hash, merkle_path, merkle_root, verify_path


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=40), st.data())
def test_every_leaf_proves_into_the_root(records: list[bytes], data: st.DataObject) -> None:
    leaves = [leaf_hash(r) for r in records]
    root = merkle_root(leaves)
    index = data.draw(st.integers(min_value=0, max_value=len(leaves) - 1))
    assert verify_path(leaves[index], merkle_path(leaves, index), root)


@given(st.lists(st.binary(max_size=40), min_size=2, max_size=20, unique=True))
def test_a_foreign_record_does_not_prove(records: list[bytes]) -> None:
    leaves = [leaf_hash(r) for r in records]
    root = merkle_root(leaves)
    path = merkle_path(leaves, 0)
    assert not verify_path(leaf_hash(records[0] + b"x"), path, root)


def test_root_depends_on_order() -> None:
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert merkle_root([a, b]) != merkle_root([b, a])


@given(st.lists(st.binary(max_size=20), min_size=1, max_size=70))
def test_all_paths_at_once_equal_one_at_a_time(records: list[bytes]) -> None:
    from common.merkle import merkle_paths

    leaves = [leaf_hash(r) for r in records]
    assert merkle_paths(leaves) == [merkle_path(leaves, i) for i in range(len(leaves))]


def test_roots_and_paths_are_those_the_journal_and_frames_already_hold() -> None:
    """Known answers, computed before the tree's levels were hashed inline: roots, proofs and
    frame headers already stored must keep verifying."""
    import hashlib

    from common.merkle import merkle_paths

    leaves = [leaf_hash(bytes([i]) * i) for i in range(7)]
    assert merkle_root(leaves).hex() == (
        "b0cc4f00cd89333eef11e629a34d1c746aa6e4d6493bb553e4dac36871ab00e5"
    )
    assert merkle_root(leaves[:1]) == leaves[0]
    assert merkle_root([]) == hashlib.sha256(b"").digest()
    paths = repr([[(side, h.hex()) for side, h in path] for path in merkle_paths(leaves)])
    assert hashlib.sha256(paths.encode()).hexdigest() == (
        "07efedfa1846e3f6ed0336656d14d4a102f33a8be6b6e9a45a14c2184fa647cf"
    )
