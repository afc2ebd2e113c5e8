"""Event handlers that never lose an event: delayed retries, then a dead-letter queue.

nameko acks a message whose handler raised, and the event is gone. `reliable_handler` replaces
that: a failed message is republished (with confirms) to a wait queue whose TTL is the backoff
step and which dead-letters back into the handler's queue (at least once: see retry_queue); after the last step it goes to
`<queue>.dead`, where ops can list and replay it. The original is acked only after the copy is
safely in the broker; if even that publish fails the original is requeued.

Errors marked permanent (malformed payloads) skip the retries: waiting will not fix them.

A message may carry several events of one type (an envelope `{"idsync_events": [...]}`:
the outbox relay packs what is pending, see common/outbox.py). A handler declared with
`batch=True` gets them as one list (one transaction for the lot); any other handler gets them one
by one. When a batch fails, each of its events is handled on its own, and only those that fail
again are parked - one at a time, so the wait and dead-letter queues only ever hold single events
and a poison event never takes its neighbours down with it.
"""
import functools
import logging
import sys
import traceback

from kombu import Exchange, Queue
from marshmallow import ValidationError
from nameko.amqp.publish import Publisher
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.events import EventHandler
from nameko.exceptions import ContainerBeingKilled

from common import metrics

log = logging.getLogger(__name__)

ATTEMPT_HEADER = "x-idsync-attempt"
ERROR_HEADER = "x-idsync-error"
DEFAULT_BACKOFF = (1, 5, 30, 120)  # seconds between attempts; config EVENT_RETRY_BACKOFF
DEFAULT_EXCHANGE = Exchange("", type="direct")
ENVELOPE_KEY = "idsync_events"  # a message carrying several events (common/outbox.py packs them)


def envelope(payloads):
    """The message body for one or more events: a lone event travels as itself."""
    return payloads[0] if len(payloads) == 1 else {ENVELOPE_KEY: list(payloads)}


def payloads_of(body):
    """The events a message carries (a lone event, or an envelope's list)."""
    if isinstance(body, dict) and isinstance(body.get(ENVELOPE_KEY), list):
        return body[ENVELOPE_KEY]
    return [body]


class PermanentError(Exception):
    """Raise from a handler when retrying cannot help."""


PERMANENT = (PermanentError, ValidationError)


def retry_queue(queue_name, step, ttl_seconds):
    """The wait queue of one backoff step: a quorum queue whose expired messages go back to the
    handler's queue at least once. A classic queue dead-letters at most once: a message that
    expires while its handler queue is not there (a broker still recovering its queues after a
    crash) is dropped without a word - chaos finding 6. Quorum (RabbitMQ 3.10+) keeps it until the
    handler queue has taken it. (`.wait.` names: a queue's type cannot change, and the old classic
    `.retry.` queues still hand back what they hold.)"""
    name = f"{queue_name}.wait.{step}"
    return Queue(name, exchange=DEFAULT_EXCHANGE, routing_key=name, durable=True,
                 queue_arguments={"x-queue-type": "quorum",
                                  "x-message-ttl": int(ttl_seconds * 1000),
                                  "x-dead-letter-exchange": "",
                                  "x-dead-letter-routing-key": queue_name,
                                  "x-dead-letter-strategy": "at-least-once",
                                  "x-overflow": "reject-publish"})


def dead_queue(queue_name):
    return Queue(f"{queue_name}.dead", exchange=DEFAULT_EXCHANGE,
                 routing_key=f"{queue_name}.dead", durable=True)


class ReliableEventHandler(EventHandler):
    """`handle_message` hands the worker the message's events as a list; the decorated method
    (wrapped by `reliable_handler`) returns the events that failed, each with its exc_info."""

    def handle_message(self, body, message):
        payloads = payloads_of(body)
        handle_result = functools.partial(self._handle_result, message, payloads)
        try:
            self.container.spawn_worker(self, (payloads,), {}, context_data=self.unpack_message_headers(message),
                                        handle_result=handle_result)
        except ContainerBeingKilled:
            self.queue_consumer.requeue_message(message)

    def _handle_result(self, message, payloads, worker_ctx, result=None, exc_info=None):
        failures = [(p, exc_info) for p in payloads] if exc_info is not None else list(result or [])
        self.settle(message, len(payloads), failures)
        return result, exc_info

    def setup(self):
        super().setup()
        config = self.container.config
        self.backoff = tuple(float(s) for s in config.get("EVENT_RETRY_BACKOFF", DEFAULT_BACKOFF))
        self.publisher = Publisher(config[AMQP_URI_CONFIG_KEY], use_confirms=True,
                                   serializer="json", delivery_mode=2)
        name = self.queue.name
        self.retry_queues = [retry_queue(name, i, s) for i, s in enumerate(self.backoff)]
        self.dead = dead_queue(name)

    def settle(self, message, handled, failures):
        """Ack the message once every failed event of it is parked (a wait queue, or the dead
        letters). If a park fails the whole message is requeued: the events that succeeded come
        back as duplicates, which their handlers' claims drop."""
        service = self.container.service_name
        metrics.EVENTS_PER_MESSAGE.labels(service, self.event_type).observe(handled)
        ok = handled - len(failures)
        if ok:
            metrics.EVENTS_HANDLED.labels(service, self.event_type, "ok").inc(ok)
        attempt = int((message.headers or {}).get(ATTEMPT_HEADER, 0)) + 1
        try:
            for payload, exc_info in failures:
                self._park(payload, message.headers, attempt, exc_info)
        except Exception:
            log.exception("could not park a failed event; requeueing its message")
            self.queue_consumer.requeue_message(message)
            return
        self.queue_consumer.ack_message(message)

    def _park(self, payload, message_headers, attempt, exc_info):
        """Publish one failed event to its next wait queue, or to the dead letters after the last
        step (at once when the error is permanent)."""
        service = self.container.service_name
        exc = exc_info[1]
        error = f"{type(exc).__name__}: {exc}"[:2000]
        headers = {**(message_headers or {}), ATTEMPT_HEADER: attempt, ERROR_HEADER: error}
        dead = isinstance(exc, PERMANENT) or attempt > len(self.backoff)
        if dead:
            headers["x-idsync-failed-queue"] = self.queue.name
            headers["x-idsync-trace"] = "".join(traceback.format_exception(*exc_info))[-4000:]
        queue = self.dead if dead else self.retry_queues[attempt - 1]
        self.publisher.publish(payload, exchange=DEFAULT_EXCHANGE, routing_key=queue.name, headers=headers,
                               declare=[queue])
        ids = {"tenant_id": _field(payload, "tenant_id"), "event_id": _field(payload, "event_id")}
        metrics.EVENTS_HANDLED.labels(service, self.event_type, "dead" if dead else "retry").inc()
        if dead:
            metrics.DEAD_LETTERED.labels(service, self.queue.name).inc()
            log.error("event dead-lettered after %s attempt(s): %s", attempt, error, exc_info=exc_info, extra=ids)
        else:
            metrics.EVENTS_RETRIED.labels(service, self.queue.name).inc()
            log.warning("event handler failed (attempt %s), retrying in %ss: %s", attempt,
                        self.backoff[attempt - 1], error, exc_info=exc_info, extra=ids)


def _field(payload, name):
    return payload.get(name) if isinstance(payload, dict) else None


def run_events(handler, batch, service, payloads):
    """Handle a message's events; return [(payload, exc_info)] for those that failed.

    batch: `handler(service, payloads)` takes the list in one go; if that fails, each event is
    tried on its own (`handler(service, [payload])`) so one bad event cannot hold back the rest.
    Otherwise `handler(service, payload)` per event."""
    if batch and len(payloads) > 1:
        try:
            handler(service, payloads)
            return []
        except Exception as exc:  # noqa: BLE001 - each event is tried alone next
            log.warning("a batch of %d events failed (%s: %s); handling each on its own",
                        len(payloads), type(exc).__name__, exc)
    failures = []
    for payload in payloads:
        try:
            handler(service, [payload] if batch else payload)
        except Exception:  # noqa: BLE001 - parked by the entrypoint (retry or dead letter)
            failures.append((payload, sys.exc_info()))
    return failures


def by_tenant(events):
    """[(tenant_id, [events in their order])] in tenant order: a batch handler that takes per-tenant
    locks takes them in this order, so two batches never wait on each other in a cycle."""
    groups = {}
    for event in events:
        groups.setdefault(event["tenant_id"], []).append(event)
    return sorted(groups.items())


def reliable_handler(source, event_type, batch=False, **kwargs):
    """Decorate a service method as the never-losing handler of one event type (see the module
    doc). The method takes one payload, or with batch=True a list of payloads (of any tenants:
    `by_tenant` splits them)."""
    def decorate(fn):
        @functools.wraps(fn)
        def handle(self, payloads):
            return run_events(fn, batch, self, payloads)

        return ReliableEventHandler.decorator(source, event_type, **kwargs)(handle)

    return decorate
