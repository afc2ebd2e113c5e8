"""services/mapping/store.py: a transaction that ran whole-tenant statements (bulk_mode: no nested
loops) gets nested loops back for recompute's per-contract-line writes (keyed_statements), then
its bulk setting again. Without it each per-line UPDATE ... FROM (a few keys) scanned the tenant's
whole lines table (EXPLAIN on a 50,000-line tenant: Seq Scan, cost 4,385, against an index scan
at 17)."""
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from services.mapping import store

pytestmark = pytest.mark.integration


def _nestloop(session):
    return session.execute(text("SHOW enable_nestloop")).scalar()


def test_per_line_writes_get_index_lookups_back_inside_a_bulk_transaction(engines):
    with Session(engines("mapping")) as session, session.begin():
        store.bulk_mode(session)
        assert _nestloop(session) == "off"
        with store.keyed_statements(session):
            assert _nestloop(session) == "on"
        assert _nestloop(session) == "off"            # the transaction's later bulk statements keep theirs


def test_a_transaction_without_bulk_statements_is_left_as_it_was(engines):
    with Session(engines("mapping")) as session, session.begin():
        with store.keyed_statements(session):
            assert _nestloop(session) == "on"
        assert _nestloop(session) == "on"
