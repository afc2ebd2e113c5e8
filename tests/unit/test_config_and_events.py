import pytest
from marshmallow import ValidationError

from common.config import load_config, substitute
from common.events import CATALOG, load_event, make_event, UnknownEvent


def test_env_substitution_inside_strings_and_whole_values(monkeypatch, tmp_path):
    monkeypatch.setenv("PW", "s3cr=t")
    monkeypatch.setenv("WORKERS", "7")
    monkeypatch.delenv("UNSET_ONE", raising=False)
    path = tmp_path / "c.yml"
    path.write_text("DB: postgresql://u:${PW}@h/${UNSET_ONE:idsync}\nmax_workers: ${WORKERS:3}\nB: ${UNSET_ONE:[1, 2]}\n")
    config = load_config(path)
    assert config == {"DB": "postgresql://u:s3cr=t@h/idsync", "max_workers": 7, "B": [1, 2]}


def test_fernet_like_values_stay_text(monkeypatch):
    monkeypatch.setenv("K", "-Zm9vYmFy=")
    assert substitute("${K}") == "-Zm9vYmFy="


def test_every_event_carries_the_envelope():
    for (source, event_type), schema in CATALOG.items():
        for name in ("event_id", "tenant_id", "occurred_at", "schema_version"):
            assert name in schema._declared_fields, (source, event_type, name)


def test_make_event_fills_envelope_and_validates():
    e = make_event("marketplace", "customer_changed", "t-1", customer_id="c1", name="Acme")
    assert e["tenant_id"] == "t-1" and e["schema_version"] == 1 and len(e["event_id"]) == 36
    assert load_event("marketplace", "customer_changed", e)["name"] == "Acme"


def test_money_travels_as_exact_strings():
    e = make_event("marketplace", "subscription_line_changed", "t", subscription_id="s", mpn="m", customer_id="c",
                   change="quantity", status="active", quantity=3, unit_price="12.345", seen_at="2026-11-25",
                   line_version=2)
    assert e["unit_price"] == "12.345"


def test_malformed_event_is_refused_with_the_field_named():
    with pytest.raises(ValidationError) as err:
        make_event("marketplace", "subscription_line_changed", "t", subscription_id="s", mpn="m", customer_id="c",
                   change="quantity", status="frozen", quantity=-1, seen_at="x", line_version=1)
    assert set(err.value.messages) == {"status", "quantity"}


def test_unknown_event_is_refused():
    with pytest.raises(UnknownEvent):
        make_event("marketplace", "nonsense", "t")
