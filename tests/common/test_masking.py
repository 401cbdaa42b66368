from __future__ import annotations

import json

from common.logs import redact
from common.masking import mask_fields, mask_id_number, mask_name, mask_text

PAN = "6200010100000011"
RESIDENT_ID = "11010119900307123X"


def test_each_kind_of_personal_data_is_masked() -> None:
    assert mask_id_number(RESIDENT_ID) == "110*************3X"
    assert mask_name("张三丰") == "张**"
    assert mask_text(f"card {PAN} id {RESIDENT_ID}.") == (
        "card 620001******0011 id 110*************3X."
    )


def test_an_event_document_is_masked_at_any_depth() -> None:
    event = {
        "kind": "large_cash",
        "account": PAN,
        "amount": 6_000_000,
        "customer_name": "Zhang San",
        "holder": {"id_type": "resident_id", "number": RESIDENT_ID},
        "note": f"paid to {PAN}",
    }
    masked = mask_fields(event)
    text = json.dumps(masked, ensure_ascii=False)
    assert PAN not in text and RESIDENT_ID not in text and "Zhang San" not in text
    assert masked["account"] == "620001******0011" and masked["amount"] == 6_000_000
    assert masked["holder"] == {"id_type": "resident_id", "number": "110*************3X"}
    assert masked["customer_name"] == "Z********"


def test_logs_mask_cards_ids_and_names() -> None:
    event = redact(
        None,
        "warning",
        {
            "event": f"refused {PAN}",
            "customer_name": "李四",
            "id_number": RESIDENT_ID,
            "queue": "branch.0001",
            "pin_block": "0123",
        },
    )
    line = json.dumps(event, ensure_ascii=False)
    assert PAN not in line and RESIDENT_ID not in line and "李四" not in line
    assert event["queue"] == "branch.0001" and event["event"] == "refused 620001******0011"
    assert event["pin_block"] == "[redacted]"
