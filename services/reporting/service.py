"""Reporting service: builds read models from events."""
from common.consumers import reliable_handler
from common.db import Database
from common.events import load_event
from common.idempotency import claim_event
from common.logs import log_context
from common.service_base import ServiceBase
from services.reporting import models, projections


class ReportingService(ServiceBase):
    name = "reporting"
    db = Database()

    @reliable_handler("marketplace", "customer_changed")
    def on_customer_changed(self, payload):
        event = load_event("marketplace", "customer_changed", payload)
        with log_context(event["tenant_id"], event["event_id"]), self.db.transaction() as session:
            if not claim_event(session, models.processed_events, "reporting.on_customer_changed", event):
                return "duplicate"
            projections.record(session, "marketplace", "customer_changed", event)
            projections.customer(session, event)
            return "applied"
