"""The Linked Subscriptions report: lines joined with what the PSA shows, amounts and margins, and
CSV cells a spreadsheet cannot run."""
from decimal import Decimal

from gateway.portal_reports import csv_cell, report_rows


def line(sub, qty, price="12.00", cost="10.00", contract="5001", service="304", desired=None):
    return {"subscription_id": sub, "mpn": "M365", "customer_id": "C1", "quantity": qty, "unit_price": price,
            "unit_cost": cost, "psa_contract_id": contract, "psa_service_id": service, "desired_quantity": desired}


def test_each_line_gets_its_contract_lines_psa_state_amount_and_margin():
    states = {"5001/304": {"status": "in_sync", "psa_quantity": 9, "last_posted_at": "2026-11-25T17:00:00+00:00"},
              "5002/304": {"status": "held", "psa_quantity": 10, "status_message": "edited in the PSA"}}
    rows = report_rows([line("S1", 9, desired=9), line("S2", 3, contract="5002", desired=3),
                        line("S3", 4, contract="5003", price=None)], states)
    first, held, unposted = rows
    assert (first["psa_quantity"], first["sync_label"], first["sync_badge"]) == (9, "In sync", "yes")
    assert first["monthly_amount"] == Decimal("108.00") and first["monthly_margin"] == Decimal("18.00")
    assert first["margin_percent"] == Decimal("16.7")
    assert (held["sync_label"], held["sync_badge"], held["status_message"]) == ("Edited in PSA", "conflict",
                                                                                 "edited in the PSA")
    assert unposted["sync_label"] == "Not posted yet" and unposted["psa_quantity"] is None
    assert unposted["monthly_amount"] is None and unposted["margin_percent"] is None


def test_a_cell_that_looks_like_a_formula_is_written_as_text():
    assert csv_cell("=HYPERLINK(\"http://x\")") == "'=HYPERLINK(\"http://x\")"
    assert csv_cell("+Contoso") == "'+Contoso" and csv_cell("@sum") == "'@sum"
    assert csv_cell("-2") == "-2" and csv_cell(Decimal("-1.50")) == "-1.50"
    assert csv_cell(None) == "" and csv_cell("Contoso Ltd") == "Contoso Ltd"
