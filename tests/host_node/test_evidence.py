"""A journal entry's request proven signed by its branch, without the frame's other records."""

from __future__ import annotations

from common.requests import encode_request
from common.results import ResultCode
from host_node.evidence import prove_entry
from host_node.intake import unpack_frame
from host_node.journal import ChainHead, seal
from tests.host_node.fakes import T0, Teller, account_no
from tests.host_node.test_guard import BRANCHES, KEY, Harness


def test_each_journalled_request_is_proven_signed_by_its_branch_alone() -> None:
    harness = Harness()
    harness.sign_on("0001")
    teller = Teller()
    requests = [teller.deposit(account_no(n), 100 * n) for n in range(1, 6)]
    raws = [encode_request(r) for r in requests]
    opened = harness.guard.open(harness.request(records=raws), KEY["0001"], T0)
    unpacked = unpack_frame(
        opened.frame, opened.branch_id, received_at=T0, unpacked_at=T0, evidence=opened.evidence
    )
    head = ChainHead()
    for item in unpacked.items:
        entry = seal(
            head,
            item.origin(),
            kind=item.kind,
            subject="",
            processed_at=T0,
            postings=(),
            result=ResultCode.APPROVED,
            reason="approved",
        )
        head = ChainHead(entry.seq, entry.hash)
        proof = item.proof()
        assert proof is not None
        # The proof travels as JSON and names nothing of the other records.
        assert all(raw not in proof.to_json() for raw in raws)
        public = BRANCHES["0001"].public_key()
        assert prove_entry(entry, item.raw, proof, public) is None
        other = raws[(item.index + 1) % len(raws)]
        assert prove_entry(entry, other, proof, public) == (
            "the record is not the one the entry journals"
        )
        wrong_key = BRANCHES["0002"].public_key()
        assert prove_entry(entry, item.raw, proof, wrong_key) is not None
    assert [item.index for item in unpacked.items] == list(range(5))
