"""The host's verification of supervisor authorisations (maker-checker), decided purely."""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.authorisation import StaffKey, authorisation_message, signature_valid
from common.requests import Authorisation, Freeze, RecordError, decode_request, encode_request
from common.results import ResultCode
from host_node import maker_checker
from host_node.maker_checker import MISSING_RULE, REFUSED_RULE, SIGNATURE_RULE, check
from tests.host_node.fakes import STAFF, STAFF_KEYS, SUPERVISOR, Teller, account_no

A = account_no(1)


def freeze(teller: Teller | None = None, **fields: object) -> Freeze:
    base = (teller or Teller())._base()
    return Freeze(**base, account=A, authority_ref="(2026)京0101执7号", **fields)  # type: ignore[arg-type]


def test_a_valid_authorisation_survives_the_wire_and_verifies() -> None:
    signed = SUPERVISOR.authorise(freeze(amount=500))
    decoded = decode_request(encode_request(signed), branch_id="0001")
    assert not isinstance(decoded, RecordError)
    assert decoded == signed and decoded.authorisation is not None
    assert check(decoded, STAFF, "a freeze") is None
    assert maker_checker.checker(decoded) == "S000101"


def test_missing_authorisation_is_63_without_an_alert_rule() -> None:
    decision = check(freeze(), STAFF, "a freeze")
    assert decision is not None
    assert (decision.result, decision.rule) == (ResultCode.SUPERVISOR_REQUIRED, MISSING_RULE)
    assert decision.reason == "a freeze needs a supervisor's signed authorisation"


@pytest.mark.parametrize(
    ("maker", "signer", "why"),
    [
        (Teller(), "S999901", "not on the staff table"),
        (Teller(), "T000102", "is a teller, not a supervisor"),
        (Teller(), "A000101", "is an auditor, not a supervisor"),
        (Teller(), "S000201", "another branch"),
        (Teller(staff_id="S000101", role="supervisor"), "S000101", "their own request"),
    ],
)
def test_a_signer_who_may_not_authorise_is_refused(maker: Teller, signer: str, why: str) -> None:
    key = STAFF_KEYS.get(signer) or StaffKey(signer, Ed25519PrivateKey.generate())
    decision = check(key.authorise(freeze(maker)), STAFF, "a freeze")
    assert decision is not None
    assert (decision.result, decision.rule) == (ResultCode.SUPERVISOR_REQUIRED, REFUSED_RULE)
    assert why in decision.reason


def test_signatures_that_do_not_verify_are_refused() -> None:
    signed = SUPERVISOR.authorise(freeze(amount=500))
    assert signed.authorisation is not None
    other = SUPERVISOR.authorise(freeze(amount=500))  # the same content, another request id
    assert other.authorisation is not None
    flipped = bytes.fromhex(signed.authorisation.signature)
    flipped = bytes([flipped[0] ^ 1]) + flipped[1:]
    forged = [
        StaffKey("S000101", Ed25519PrivateKey.generate()).authorise(freeze()),
        signed.model_copy(update={"amount": 50_000}),
        signed.model_copy(update={"authority_ref": "(2026)京0101执8号"}),
        signed.model_copy(update={"account": account_no(2)}),
        freeze().model_copy(update={"authorisation": other.authorisation}),
        signed.model_copy(
            update={"authorisation": replace_signature(signed.authorisation, flipped.hex())}
        ),
    ]
    for request in forged:
        decision = check(request, STAFF, "a freeze")
        assert decision is not None, request
        assert (decision.result, decision.rule) == (
            ResultCode.SUPERVISOR_REQUIRED,
            SIGNATURE_RULE,
        )


def test_a_signature_from_another_context_does_not_pass() -> None:
    """A staff key's signature over the bare content (no label, id or signer) is not one."""
    request = freeze()
    message = authorisation_message(request, "S000101")
    bare = SUPERVISOR.key.sign(message.split(b"\x00", 3)[3])
    stolen = request.model_copy(
        update={"authorisation": Authorisation(supervisor_id="S000101", signature=bare.hex())}
    )
    assert not signature_valid(stolen, SUPERVISOR.key.public_key())
    assert check(stolen, STAFF, "a freeze") is not None


def test_an_unregistered_key_cannot_authorise() -> None:
    staff = {**STAFF, "S000101": replace(STAFF["S000101"], public_key=None)}
    decision = check(SUPERVISOR.authorise(freeze()), staff, "a freeze")
    assert decision is not None and decision.rule == REFUSED_RULE
    assert "no registered key" in decision.reason


def test_a_malformed_signature_is_a_format_error_on_the_wire() -> None:
    raw = encode_request(freeze()).replace(
        b'"authorisation":null', b'"authorisation":{"supervisor_id":"S000101","signature":"zz"}'
    )
    decoded = decode_request(raw, branch_id="0001")
    assert isinstance(decoded, RecordError) and decoded.code is ResultCode.FORMAT_ERROR


def replace_signature(authorisation: Authorisation, signature: str) -> Authorisation:
    return authorisation.model_copy(update={"signature": signature})


def test_staff_key_repr_does_not_show_the_key() -> None:
    assert "key" not in repr(SUPERVISOR).replace("StaffKey", "")
    assert replace(SUPERVISOR, staff_id="S000101") == SUPERVISOR
