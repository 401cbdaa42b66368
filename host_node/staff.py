"""Bank staff as the host knows them: staff id, role, branch and (for supervisors and
auditors) the public key their authorisations verify with.

The host enrols a simulated network's staff (:func:`default_staff`) and registers the public
keys ``branchnet keys init`` made for them (:func:`with_keys`); the rules check every request's
claimed role against this table (host_node.permissions) and every supervisor authorisation
against the keys (host_node.maker_checker).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

Role = Literal["teller", "supervisor", "auditor"]
ROLES: tuple[Role, ...] = ("teller", "supervisor", "auditor")


@dataclass(frozen=True, slots=True)
class StaffMember:
    staff_id: str
    role: Role
    branch_id: str
    #: The Ed25519 public key (raw 32 bytes) of a staff member who signs; None: none registered.
    public_key: bytes | None = field(default=None, repr=False)

    def verifying_key(self) -> Ed25519PublicKey | None:
        if self.public_key is None:
            return None
        return Ed25519PublicKey.from_public_bytes(self.public_key)


def supervisor_id(branch_id: str) -> str:
    """The staff id of a branch's duty supervisor in a simulated network."""
    return f"S{branch_id}01"


def auditor_id(branch_id: str) -> str:
    return f"A{branch_id}01"


def default_staff(branch_ids: Iterable[str], terminals: int = 99) -> list[StaffMember]:
    """The staff a simulated network starts with: per branch its tellers (``T`` + branch +
    terminal, as terminals name them), one supervisor and one auditor."""
    staff: list[StaffMember] = []
    for branch_id in branch_ids:
        staff.extend(
            StaffMember(f"T{branch_id}{n:02d}", "teller", branch_id)
            for n in range(1, terminals + 1)
        )
        staff.append(StaffMember(supervisor_id(branch_id), "supervisor", branch_id))
        staff.append(StaffMember(auditor_id(branch_id), "auditor", branch_id))
    return staff


def with_article(role: str) -> str:
    """``a teller``, ``an auditor``."""
    return f"{'an' if role[:1] in 'aeiou' else 'a'} {role}"


#: Roles that hold a signing key.
SIGNING_ROLES: frozenset[Role] = frozenset({"supervisor", "auditor"})


def signing_staff(staff: Iterable[StaffMember]) -> list[str]:
    """The staff ids that get a key pair (supervisors and auditors)."""
    return [m.staff_id for m in staff if m.role in SIGNING_ROLES]


def with_keys(
    staff: Iterable[StaffMember], keys: Mapping[str, Ed25519PublicKey]
) -> list[StaffMember]:
    """``staff`` with the public keys of ``keys`` registered (signing roles only)."""
    return [
        replace(m, public_key=keys[m.staff_id].public_bytes_raw())
        if m.role in SIGNING_ROLES and m.staff_id in keys
        else m
        for m in staff
    ]
