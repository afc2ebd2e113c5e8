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

    def handle(self, payloads):
        # one transaction for the message's events (an envelope from the relay: one type, any tenants)
        events = [load_event(source, event_type, payload) for payload in payloads]
        with log_context(events[0]["tenant_id"], events[0]["event_id"]), self.db.transaction() as session:
            # claims + journal rows (as published: JSON-safe) for the whole message in one statement
            claimed = projections.claim_and_record_many(session, consumer, source, event_type, payloads)
            if project is not None:
                for event in events:
                    if event["event_id"] in claimed:
                        project(session, event)
        return f"applied {len(claimed)} of {len(events)}"

    handle.__name__ = f"on_{source}_{event_type}"
    return reliable_handler(source, event_type, batch=True)(handle)


class ReportingService(ServiceBase):
    name = "reporting"
    db = Database()


for (_source, _event_type) in CATALOG:
    setattr(ReportingService, f"on_{_source}_{_event_type}", _journal_handler(_source, _event_type))
