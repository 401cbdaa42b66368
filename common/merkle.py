"""A Merkle tree over record hashes (RFC 6962 shape), so one record can later be proven part of
a signed frame without revealing the others."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_LEAF = b"\x00"
_NODE = b"\x01"
# Each prefix absorbed once: copying a hash state costs less than starting a new hash (and
# than prepending the prefix to the bytes), a quarter of a leaf's or a node's hashing.
_LEAF_STATE = hashlib.sha256(_LEAF)
_NODE_STATE = hashlib.sha256(_NODE)


def leaf_hash(record: bytes) -> bytes:
    """The hash of one record as a leaf."""
    hashed = _LEAF_STATE.copy()
    hashed.update(record)
    return hashed.digest()


def _node(left: bytes, right: bytes) -> bytes:
    hashed = _NODE_STATE.copy()
    hashed.update(left)
    hashed.update(right)
    return hashed.digest()


def _level_up(level: Sequence[bytes]) -> list[bytes]:
    """The level above ``level``: each pair hashed (inline: a call per node costs a sixth of
    its hashing), an odd node at the end carried up unchanged."""
    paired = []
    nodes = iter(level)
    for left, right in zip(nodes, nodes, strict=False):
        hashed = _NODE_STATE.copy()
        hashed.update(left)
        hashed.update(right)
        paired.append(hashed.digest())
    if len(level) % 2:
        paired.append(level[-1])
    return paired


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The root over leaf hashes; an odd node at the end of a level is carried up unchanged."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = leaves
    while len(level) > 1:
        level = _level_up(level)
    return level[0]


def merkle_path(leaves: Sequence[bytes], index: int) -> list[tuple[str, bytes]]:
    """The sibling hashes from leaf ``index`` to the root, each tagged ``"L"`` or ``"R"``."""
    if not 0 <= index < len(leaves):
        raise IndexError("leaf index out of range")
    path: list[tuple[str, bytes]] = []
    level = leaves
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(("L" if sibling < index else "R", level[sibling]))
        level = _level_up(level)
        index //= 2
    return path


def merkle_paths(leaves: Sequence[bytes]) -> list[list[tuple[str, bytes]]]:
    """Every leaf's path at once (same shape as :func:`merkle_path`), in O(n log n)."""
    paths: list[list[tuple[str, bytes]]] = [[] for _ in leaves]
    members = [[i] for i in range(len(leaves))]  # leaves under each node of the level
    level = list(leaves)
    while len(level) > 1:
        paired: list[bytes] = []
        grouped: list[list[int]] = []
        for i in range(0, len(level) - 1, 2):
            for leaf in members[i]:
                paths[leaf].append(("R", level[i + 1]))
            for leaf in members[i + 1]:
                paths[leaf].append(("L", level[i]))
            paired.append(_node(level[i], level[i + 1]))
            grouped.append(members[i] + members[i + 1])
        if len(level) % 2:
            paired.append(level[-1])
            grouped.append(members[-1])
        level, members = paired, grouped
    return paths


def verify_path(leaf: bytes, path: Sequence[tuple[str, bytes]], root: bytes) -> bool:
    """True when ``leaf`` and ``path`` lead to ``root``."""
    node = leaf
    for side, sibling in path:
        node = _node(sibling, node) if side == "L" else _node(node, sibling)
    return node == root
