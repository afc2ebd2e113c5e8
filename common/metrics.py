"""Prometheus metrics every service shares. Service-specific metrics live in the service."""
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

EVENTS_PUBLISHED = Counter("events_published_total", "Events relayed from the outbox", ["source", "event_type"])
OUTBOX_UNROUTABLE = Counter("outbox_unroutable_total", "Outbox events no queue was bound for yet", ["source", "event_type"])
OUTBOX_LAG = Histogram("outbox_publish_lag_seconds", "From commit of the change to publish", ["source"],
                       buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 15, 60))
EVENTS_HANDLED = Counter("events_handled_total", "Events consumed", ["service", "event_type", "result"])
HANDLER_SECONDS = Histogram("event_handler_seconds", "Handler duration", ["service", "event_type"])
EVENTS_PER_MESSAGE = Histogram("events_per_message", "Events one consumed message carried (outbox envelopes)",
                               ["service", "event_type"], buckets=(1, 2, 5, 10, 20, 50, 100))
DEAD_LETTERED = Counter("events_dead_lettered_total", "Events sent to a dead-letter queue", ["service", "queue"])
EVENTS_RETRIED = Counter("events_retried_total", "Events scheduled for a delayed retry", ["service", "queue"])
VENDOR_REQUESTS = Counter("vendor_requests_total", "Calls to outside vendors",
                          ["vendor", "endpoint", "status"])
VENDOR_SECONDS = Histogram("vendor_request_seconds", "Vendor call duration", ["vendor", "endpoint"],
                           buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
UP = Gauge("service_up", "1 while the service runs", ["service"])


def exposition():
    return generate_latest(), CONTENT_TYPE_LATEST
