"""Supervisor authorisations (maker-checker) and the staff keys that sign them.

Where a teller alone may not act (freeze, unfreeze, deduct, PIN unlock, large-cash
exceptions, a teller's customer query), the request carries an
:class:`~common.requests.Authorisation`: the supervisor's staff id and their Ed25519
signature over :func:`authorisation_message` — a domain-separation label, the request id, the
supervisor id and the canonical encoding of the request's content without the authorisation
(sorted-key JSON of its fields, absent optional fields left out). Changing any field after the
supervisor signed, or moving the signature to another request, makes it fail to verify.

Staff keys: every supervisor and auditor has a key pair made by ``branchnet keys init``, kept
beside the node identity keys as ``staff-<staff id>.key`` (mode 0600) and ``.pub``
(:mod:`common.identity`); the host registers the public keys on its staff table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.identity import ensure_identity, identity_dir, load_identity, load_public, verify
from common.requests import Authorisation, RequestBase

#: Signed first, so that no other signature in branchnet can pass for an authorisation.
CONTEXT = b"branchnet supervisor authorisation v1\x00"
_STAFF_PREFIX = "staff-"

RequestT = TypeVar("RequestT", bound=RequestBase)


def staff_identity(staff_id: str) -> str:
    """The key file name (without suffix) of a staff member's key pair."""
    return f"{_STAFF_PREFIX}{staff_id}"


#: Left out of what a supervisor signs: the signature itself, and the deadline, which the
#: branch client adds when it first sends (it bounds the wait, not what is authorised).
UNSIGNED_FIELDS = frozenset({"authorisation", "deadline"})


def authorised_content(request: RequestBase) -> bytes:
    """The canonical encoding of ``request`` without its authorisation and deadline."""
    document = request.model_dump(mode="json", exclude=set(UNSIGNED_FIELDS), exclude_none=True)
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def authorisation_message(request: RequestBase, supervisor_id: str) -> bytes:
    """What a supervisor signs to authorise ``request``, bound to its request id."""
    return b"\x00".join(
        (CONTEXT, request.request_id.encode(), supervisor_id.encode(), authorised_content(request))
    )


def signature_valid(request: RequestBase, key: Ed25519PublicKey) -> bool:
    """True when ``request`` carries an authorisation that ``key`` signed for it."""
    authorisation = request.authorisation
    if authorisation is None:
        return False
    try:
        signature = bytes.fromhex(authorisation.signature)
    except ValueError:
        return False
    return verify(key, signature, authorisation_message(request, authorisation.supervisor_id))


@dataclass(frozen=True, slots=True)
class StaffKey:
    """A staff member's private signing key, as loaded at their desk."""

    staff_id: str
    key: Ed25519PrivateKey = field(repr=False)

    def authorise(self, request: RequestT) -> RequestT:
        """``request`` with this staff member's authorisation attached."""
        signature = self.key.sign(authorisation_message(request, self.staff_id))
        authorisation = Authorisation(supervisor_id=self.staff_id, signature=signature.hex())
        return request.model_copy(update={"authorisation": authorisation})

    @classmethod
    def load(cls, data_dir: Path, staff_id: str) -> StaffKey:
        """The staff member's key from ``data_dir``.

        Raises:
            ConfigError: there is no usable key for ``staff_id``.
        """
        return cls(staff_id, load_identity(data_dir, staff_identity(staff_id)))


def init_staff_keys(data_dir: Path, staff_ids: Iterable[str], *, force: bool = False) -> None:
    """Create a key pair for each of ``staff_ids`` (kept when present, unless ``force``)."""
    for staff_id in staff_ids:
        name = staff_identity(staff_id)
        if force:
            for suffix in (".key", ".pub"):
                (identity_dir(data_dir) / f"{name}{suffix}").unlink(missing_ok=True)
        ensure_identity(data_dir, name)


def staff_public_keys(data_dir: Path) -> dict[str, Ed25519PublicKey]:
    """Every staff public key present in ``data_dir``, by staff id.

    Raises:
        ConfigError: a key file is unusable.
    """
    return {
        path.stem.removeprefix(_STAFF_PREFIX): load_public(data_dir, path.stem)
        for path in sorted(identity_dir(data_dir).glob(f"{_STAFF_PREFIX}*.pub"))
    }
