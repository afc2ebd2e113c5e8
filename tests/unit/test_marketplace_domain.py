from services.marketplace import domain


def test_new_customer_is_a_change():
    assert domain.customer_changed(None, domain.customer_snapshot({"id": "1", "name": "Acme "}))


def test_same_customer_is_not_a_change():
    snap = domain.customer_snapshot({"id": "1", "name": "Acme", "status": "active"})
    assert not domain.customer_changed(dict(snap), snap)


def test_renamed_customer_is_a_change():
    before = domain.customer_snapshot({"id": "1", "name": "Acme"})
    assert domain.customer_changed(before, domain.customer_snapshot({"id": "1", "name": "Acme Ltd"}))
