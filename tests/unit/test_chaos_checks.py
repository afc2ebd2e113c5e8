"""bench/chaos_check.py: reading the ConnectWise write log for invariant 2 (no write applied twice)."""
from bench.chaos_check import connectwise_applied


def patch(agreement, addition, quantity, tenant):
    return {"method": "PATCH", "path": f"/v4_6_release/apis/3.0/finance/agreements/{agreement}/additions/{addition}",
            "body": [{"op": "replace", "path": "quantity", "value": quantity}], "tenant": tenant}


def test_another_companys_writes_to_an_agreement_with_the_same_id_are_not_this_runs():
    log = [patch(1004, 27, 29, "c3012-cw0"),
           patch(1004, 27, 29, "c3011-cw0"),   # last run's backlog, posted late: same agreement id
           patch(1004, 28, 5, None),          # a log without tenants (older simulator): counted
           patch(2000, 1, 3, "c3012-cw0")]    # not one of this run's agreements
    applied = connectwise_applied(log, {1004}, {"C3012-CW0"})
    assert applied == {("quantity", 1004, 27, 29): 1, ("quantity", 1004, 28, 5): 1}
    assert sum(connectwise_applied(log, {1004}).values()) == 3   # no companies: the old reading
