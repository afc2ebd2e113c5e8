"""Reporting service: builds read models from events. It listens to every event in the catalog
(the journal behind the activity feed and audits), so no published event goes unheard."""
from common.consumers import reliable_handler
from common.db import Database
from common.events import CATALOG, load_event
from common.logs import log_context
from common.service_base import ServiceBase
from services.reporting import projections

# event -> the read model it moves besides the journal
PROJECTIONS = {("marketplace", "customer_changed"): projections.customer}


def _journal_handler(source, event_type):
    consumer = f"reporting.{source}.{event_type}"
    project = PROJECTIONS.get((source, event_type))

    def handle(self, payload):
        event = load_event(source, event_type, payload)
        with log_context(event["tenant_id"], event["event_id"]), self.db.transaction() as session:
            # claim + journal row (as published: JSON-safe) in one statement: ~4 events per changed line
            if not projections.claim_and_record(session, consumer, source, event_type, payload):
                return "duplicate"
            if project is not None:
                project(session, event)
            return "applied"

    handle.__name__ = f"on_{source}_{event_type}"
    return reliable_handler(source, event_type)(handle)


class ReportingService(ServiceBase):
    name = "reporting"
    db = Database()


for (_source, _event_type) in CATALOG:
    setattr(ReportingService, f"on_{_source}_{_event_type}", _journal_handler(_source, _event_type))
