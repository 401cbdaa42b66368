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
