"""Bank staff as the host knows them, and the supervisor's authorisation check.

Until signed supervisor authorisations arrive with the secure envelopes, a request that needs
one (freeze, unfreeze, deduct, PIN unlock) carries the supervisor's staff id, and the host
checks it against its staff table: a supervisor of the request's branch, not the teller who
keyed the request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Role = Literal["teller", "supervisor", "auditor"]
ROLES: tuple[Role, ...] = ("teller", "supervisor", "auditor")


@dataclass(frozen=True, slots=True)
class StaffMember:
    staff_id: str
    role: Role
    branch_id: str


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


def authorisation_problem(
    staff: Mapping[str, StaffMember], supervisor: str, *, teller_id: str, branch_id: str
) -> str | None:
    """Why ``supervisor`` cannot authorise a request keyed by ``teller_id`` at ``branch_id``."""
    member = staff.get(supervisor)
    if member is None:
        return "the authorising staff id is not on the staff table"
    if member.role != "supervisor":
        return f"the authorising staff member is a {member.role}, not a supervisor"
    if member.branch_id != branch_id:
        return "the supervisor belongs to another branch"
    if supervisor == teller_id:
        return "a supervisor cannot authorise their own request"
    return None
