"""Each service's role can use its own schema only, cannot change the schema, and is no superuser."""
import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from common.topology import SERVICES


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_role_is_least_privileged(env, engines, service):
    with engines(service).connect() as conn:
        assert conn.execute(text("select count(*) from outbox" if service != "gateway" else
                                 "select count(*) from tenants")).scalar() >= 0
        flags = conn.execute(text("select rolsuper, rolcreatedb, rolcreaterole from pg_roles "
                                  "where rolname = current_user")).one()
        assert tuple(flags) == (False, False, False)
    other = "mapping" if service != "mapping" else "marketplace"
    with engines(service).connect() as conn, pytest.raises(ProgrammingError, match="permission denied"):
        conn.execute(text(f"select 1 from {other}.processed_events limit 1"))
    with engines(service).connect() as conn, pytest.raises(ProgrammingError, match="permission denied"):
        conn.execute(text(f"create table {service}.sneaky (i int)"))
