"""The lines screen shows a line purple when its PSA contract line is held as edited in the PSA."""
from gateway.portal_mapping import mark_edited_in_psa

HELD = [{"posting_id": 41, "contract_id": "1001", "service_id": "501", "vendor_message": "edited in the PSA: 15"},
        {"posting_id": 40, "contract_id": "1002", "service_id": "501", "vendor_message": "edited in the PSA: 3"}]


def line(contract, service, status="mapped"):
    return {"subscription_id": "S", "mpn": "M", "status": status, "psa_contract_id": contract, "psa_service_id": service}


def test_only_mapped_lines_of_a_held_contract_line_are_marked():
    items = [line("1001", "501"), line(1001, 501), line("1001", "502"), line("1001", "501", status="suggested"),
             line(None, None, status="unmapped")]
    held = mark_edited_in_psa(items, HELD)
    assert [i.get("psa_edit", {}).get("posting_id") for i in items] == [41, 41, None, None, None]
    assert len(held) == 2


def test_nothing_held_marks_nothing():
    items = [line("1001", "501")]
    assert mark_edited_in_psa(items, []) == [] and "psa_edit" not in items[0]
