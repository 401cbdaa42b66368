"""Who may do what: the acting staff member's role, checked per request kind (pure).

Every request names its maker (``teller_id``) and the role they act in. The host believes the
role only when its staff table agrees: the maker is on it, at the request's branch, in that
role (else ``58``, rule ``staff_role``). A maker acting as a supervisor or auditor must also
prove it: the request carries a signature (``authorisation``) that verifies, by the maker's own
staff key or by a supervisor of the branch who vouches for it (else ``58``, rule
``staff_signature``, or ``staff_signature_invalid`` when it does not verify). A teller's claim
needs no key: tellers have none, and a teller can do nothing a teller may not. Then the role
must be allowed the kind:

| role | may key |
| --- | --- |
| teller | every kind; a customer query only with a supervisor's signed authorisation |
| supervisor | every kind, signed (maker-checker still needs *another* supervisor) |
| auditor | customer queries only, signed: an auditor never moves money or changes an account |

A kind the role may not key is ``58``, rule ``role_permission``.

Customer queries (DOMAIN.md "Deposit principles and confidentiality": querying personal
financial information must be permissioned and leave a trace) also need a stated purpose
(``58``, rule ``query_purpose``). Every answered query, refused or not, is written to the audit
trail (host_node.query_trail). Refusals for role or signature raise security alerts.
"""

from __future__ import annotations

from collections.abc import Mapping

from common.authorisation import signature_valid
from common.requests import KINDS, CustomerQuery, Request
from common.results import ResultCode
from host_node import maker_checker
from host_node.ledger import Decision, Ledger, decline
from host_node.staff import SIGNING_ROLES, Role, StaffMember, with_article

ROLE_RULE = "staff_role"
STAFF_SIGNATURE_RULE = "staff_signature"
STAFF_FORGED_RULE = "staff_signature_invalid"
PERMISSION_RULE = "role_permission"
PURPOSE_RULE = "query_purpose"
QUERY_RULE = "customer_query"
#: A stated purpose has at least this many non-blank characters (e.g. 对账, "statement").
MIN_PURPOSE = 2

KINDS_BY_ROLE: Mapping[Role, frozenset[str]] = {
    "teller": frozenset(KINDS),
    "supervisor": frozenset(KINDS),
    "auditor": frozenset({"customer_query"}),
}


def role_refusal(request: Request, staff: Mapping[str, StaffMember]) -> Decision | None:
    """The ``58`` refusal when the maker's claimed role or the kind is not permitted."""
    member = staff.get(request.teller_id)
    if member is None:
        return decline(
            ResultCode.ROLE_NOT_PERMITTED,
            "the acting staff id is not on the staff table",
            rule=ROLE_RULE,
        )
    if member.branch_id != request.branch_id:
        return decline(
            ResultCode.ROLE_NOT_PERMITTED,
            "the acting staff member belongs to another branch",
            rule=ROLE_RULE,
        )
    if member.role != request.role:
        return decline(
            ResultCode.ROLE_NOT_PERMITTED,
            f"the staff table has {member.staff_id} as {with_article(member.role)}, "
            f"not {with_article(request.role)}",
            rule=ROLE_RULE,
        )
    if member.role in SIGNING_ROLES:
        unproven = _unproven(request, member, staff)
        if unproven is not None:
            return unproven
    if request.kind not in KINDS_BY_ROLE[member.role]:
        return decline(
            ResultCode.ROLE_NOT_PERMITTED,
            f"{with_article(member.role)} may not {request.kind.replace('_', ' ')}",
            rule=PERMISSION_RULE,
        )
    return None


def _unproven(
    request: Request, maker: StaffMember, staff: Mapping[str, StaffMember]
) -> Decision | None:
    """The refusal when nobody entitled signed a supervisor's or auditor's request."""
    authorisation = request.authorisation
    if authorisation is None:
        return decline(
            ResultCode.ROLE_NOT_PERMITTED,
            f"{with_article(maker.role)} signs their requests with their staff key",
            rule=STAFF_SIGNATURE_RULE,
        )
    signer = staff.get(authorisation.supervisor_id)
    entitled = signer is not None and (
        signer.staff_id == maker.staff_id
        or (signer.role == "supervisor" and signer.branch_id == maker.branch_id)
    )
    key = signer.verifying_key() if signer is not None and entitled else None
    if key is None or not signature_valid(request, key):
        return decline(
            ResultCode.ROLE_NOT_PERMITTED,
            f"the signature on {maker.staff_id}'s request does not verify",
            rule=STAFF_FORGED_RULE,
        )
    return None


def customer_query(request: CustomerQuery, ledger: Ledger) -> Decision:
    """Answer a permitted query with the account's balance; refuse one without a purpose, or a
    teller's without a supervisor's authorisation."""
    if len("".join(request.purpose.split())) < MIN_PURPOSE:
        return decline(
            ResultCode.ROLE_NOT_PERMITTED,
            "a customer query needs a stated purpose",
            rule=PURPOSE_RULE,
        )
    if request.role == "teller":
        refusal = maker_checker.check(request, ledger.staff, "a teller's customer query")
        if refusal is not None:
            return refusal
    account = ledger.get(request.account)
    if account is None or account.kind != "customer":
        return decline(ResultCode.NO_SUCH_ACCOUNT, "no such account", rule="account")
    return Decision(
        ResultCode.APPROVED,
        "approved: the query is recorded in the audit trail",
        report=account.number,
        rule=QUERY_RULE,
    )
