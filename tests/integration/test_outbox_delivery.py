"""The outbox promise: an event is delivered if and only if the change it announces commits."""
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import select

from common.config import load_config
from common.db import Store, make_engine
from common.outbox import Outbox
from common.secrets import ROOT
from services.marketplace import models as mp
from services.marketplace import snapshots
from services.reporting import models as rp
from tests.support.infra import wait_for


def reporting_customer(engines, tenant, customer):
    with engines("reporting").connect() as conn:
        row = conn.execute(select(rp.customers).where(rp.customers.c.tenant_id == tenant,
                                                      rp.customers.c.customer_id == customer)).first()
    return row


def outbox_rows(engines, tenant):
    with engines("marketplace").connect() as conn:
        return conn.execute(select(mp.outbox).where(mp.outbox.c.tenant_id == tenant)).all()


@pytest.fixture
def marketplace_store(env):
    config = load_config(ROOT / "services" / "marketplace" / "config.yml")
    engine = make_engine(config["DB_URI"], config["DB_SCHEMA"], pool_size=1)
    yield Store(engine)
    engine.dispose()


def test_event_committed_by_a_process_that_dies_at_once_is_still_delivered(stack, env, engines):
    tenant = f"t-{uuid.uuid4()}"
    proc = subprocess.run([sys.executable, "-m", "tests.support.crash_producer", tenant, "c-1", "Fabrikam"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr  # SIGKILL right after the commit
    assert "committed" in proc.stdout
    # the change and its event are in the database; the running marketplace service relays it
    row = wait_for(lambda: reporting_customer(engines, tenant, "c-1"), message="reporting to see the customer")
    assert row.name == "Fabrikam"
    sent = outbox_rows(engines, tenant)
    assert len(sent) == 1 and sent[0].sent_at is not None


def test_event_of_a_rolled_back_change_is_never_delivered(stack, engines, marketplace_store):
    tenant = f"t-{uuid.uuid4()}"
    outbox = Outbox("marketplace", mp.outbox)
    with pytest.raises(RuntimeError):
        with marketplace_store.transaction() as session:
            snapshots.apply_customer(session, outbox, tenant, {"id": "rolled-back", "name": "Ghost Ltd"})
            raise RuntimeError("the sync failed after writing")
    # a later committed change of the same tenant travels the same path: once it has arrived,
    # the rolled-back one would have too
    with marketplace_store.transaction() as session:
        snapshots.apply_customer(session, outbox, tenant, {"id": "committed", "name": "Real Ltd"})
    wait_for(lambda: reporting_customer(engines, tenant, "committed"), message="the committed change")
    assert reporting_customer(engines, tenant, "rolled-back") is None
    assert [r.payload["customer_id"] for r in outbox_rows(engines, tenant)] == ["committed"]
    with engines("marketplace").connect() as conn:
        assert conn.execute(select(mp.customers).where(mp.customers.c.tenant_id == tenant)).all()[0].name == "Real Ltd"


def test_unchanged_customer_announces_nothing(stack, engines, marketplace_store):
    tenant = f"t-{uuid.uuid4()}"
    outbox = Outbox("marketplace", mp.outbox)
    for _ in range(3):
        with marketplace_store.transaction() as session:
            snapshots.apply_customer(session, outbox, tenant, {"id": "c", "name": "Same Name"})
    assert len(outbox_rows(engines, tenant)) == 1
