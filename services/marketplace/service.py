"""Marketplace service: entrypoints only; rules in domain.py, writes in snapshots.py."""
from nameko.rpc import rpc

from common.db import Database
from common.outbox import OutboxRelay
from common.service_base import ServiceBase
from services.marketplace import models, snapshots


class MarketplaceService(ServiceBase):
    name = "marketplace"
    db = Database()
    outbox = OutboxRelay(lambda: models.outbox)

    @rpc
    def apply_customers(self, tenant_id, records):
        """Record marketplace customer records for a tenant; returns how many changed.

        The scheduled sync (issue 5) feeds this from the Ingram API; ops and tests can call it directly.
        """
        changed = 0
        with self.db.transaction() as session:
            for record in records:
                changed += snapshots.apply_customer(session, self.outbox, tenant_id, record)
        return changed
