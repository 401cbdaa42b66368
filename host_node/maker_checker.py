"""Maker-checker: the host verifies a supervisor's signed authorisation (pure).

The teller who keys a request is its maker; where a teller alone may not act, a supervisor is
the checker and signs the request (:mod:`common.authorisation`). The host accepts the
authorisation only when the signer is on its staff table as a **supervisor of the request's
branch**, is **not the maker**, has a **registered public key**, and the **signature verifies**
over this very request. Which requests need one: freeze, unfreeze, deduct, PIN unlock
(:mod:`host_node.legal_orders`), large-cash exceptions (:func:`host_node.large_cash.exception`)
and a teller's customer query (:mod:`host_node.permissions`).

Every refusal is ``63``; the rule says why: ``supervisor_authorisation`` (none given),
``authorisation_refused`` (the signer may not authorise it) or ``authorisation_signature`` (the
signature does not verify: forged or altered). The last two raise a security alert
(host_node.event_rules).
"""

from __future__ import annotations

from collections.abc import Mapping

from common.authorisation import signature_valid
from common.requests import Request
from common.results import ResultCode
from host_node.ledger import Decision, decline
from host_node.staff import StaffMember, with_article

MISSING_RULE = "supervisor_authorisation"
REFUSED_RULE = "authorisation_refused"
SIGNATURE_RULE = "authorisation_signature"


def signer_problem(
    staff: Mapping[str, StaffMember], supervisor: str, *, maker: str, branch_id: str
) -> str | None:
    """Why ``supervisor`` cannot authorise a request made by ``maker`` at ``branch_id``."""
    member = staff.get(supervisor)
    if member is None:
        return "the authorising staff id is not on the staff table"
    if member.role != "supervisor":
        return f"the authorising staff member is {with_article(member.role)}, not a supervisor"
    if member.branch_id != branch_id:
        return "the supervisor belongs to another branch"
    if supervisor == maker:
        return "a supervisor cannot authorise their own request"
    if member.public_key is None:
        return "the supervisor has no registered key"
    return None


def check(request: Request, staff: Mapping[str, StaffMember], needed: str) -> Decision | None:
    """The ``63`` refusal when ``request`` lacks a valid supervisor authorisation, else None.

    Args:
        request: a request that needs a checker.
        staff: the host's staff table with registered keys.
        needed: what needs the authorisation, for the refusal's reason.
    """
    authorisation = request.authorisation
    if authorisation is None:
        return decline(
            ResultCode.SUPERVISOR_REQUIRED,
            f"{needed} needs a supervisor's signed authorisation",
            rule=MISSING_RULE,
        )
    supervisor = authorisation.supervisor_id
    problem = signer_problem(
        staff, supervisor, maker=request.teller_id, branch_id=request.branch_id
    )
    if problem is not None:
        return decline(ResultCode.SUPERVISOR_REQUIRED, problem, rule=REFUSED_RULE)
    key = staff[supervisor].verifying_key()
    if key is None or not signature_valid(request, key):
        return decline(
            ResultCode.SUPERVISOR_REQUIRED,
            f"the authorisation by {supervisor} does not verify for this request",
            rule=SIGNATURE_RULE,
        )
    return None


def checker(request: Request) -> str:
    """The staff id that authorised ``request`` (for reasons and events), or ``""``."""
    return request.authorisation.supervisor_id if request.authorisation else ""
