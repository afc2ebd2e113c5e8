"""Event handlers that never lose an event: delayed retries, then a dead-letter queue.

nameko acks a message whose handler raised, and the event is gone. `reliable_handler` replaces
that: a failed message is republished (with confirms) to a wait queue whose TTL is the backoff
step and which dead-letters back into the handler's queue (at least once: see retry_queue); after the last step it goes to
`<queue>.dead`, where ops can list and replay it. The original is acked only after the copy is
safely in the broker; if even that publish fails the original is requeued.

Errors marked permanent (malformed payloads) skip the retries: waiting will not fix them.
"""
import logging
import traceback

from kombu import Exchange, Queue
from marshmallow import ValidationError
from nameko.amqp.publish import Publisher
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.events import EventHandler

from common import metrics

log = logging.getLogger(__name__)

ATTEMPT_HEADER = "x-idsync-attempt"
ERROR_HEADER = "x-idsync-error"
DEFAULT_BACKOFF = (1, 5, 30, 120)  # seconds between attempts; config EVENT_RETRY_BACKOFF
DEFAULT_EXCHANGE = Exchange("", type="direct")


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
    def setup(self):
        super().setup()
        config = self.container.config
        self.backoff = tuple(float(s) for s in config.get("EVENT_RETRY_BACKOFF", DEFAULT_BACKOFF))
        self.publisher = Publisher(config[AMQP_URI_CONFIG_KEY], use_confirms=True,
                                   serializer="json", delivery_mode=2)
        name = self.queue.name
        self.retry_queues = [retry_queue(name, i, s) for i, s in enumerate(self.backoff)]
        self.dead = dead_queue(name)

    def handle_message_processed(self, message, result=None, exc_info=None):
        service = self.container.service_name
        if exc_info is None:
            metrics.EVENTS_HANDLED.labels(service, self.event_type, "ok").inc()
            self.queue_consumer.ack_message(message)
            return
        exc = exc_info[1]
        attempt = int((message.headers or {}).get(ATTEMPT_HEADER, 0)) + 1
        permanent = isinstance(exc, PERMANENT)
        error = f"{type(exc).__name__}: {exc}"[:2000]
        headers = dict(message.headers or {})
        headers[ATTEMPT_HEADER] = attempt
        headers[ERROR_HEADER] = error
        try:
            if permanent or attempt > len(self.backoff):
                headers["x-idsync-failed-queue"] = self.queue.name
                headers["x-idsync-trace"] = "".join(traceback.format_exception(*exc_info))[-4000:]
                self.publisher.publish(message.payload, exchange=DEFAULT_EXCHANGE,
                                       routing_key=self.dead.name, headers=headers,
                                       declare=[self.dead])
                metrics.DEAD_LETTERED.labels(service, self.queue.name).inc()
                metrics.EVENTS_HANDLED.labels(service, self.event_type, "dead").inc()
                log.error("event dead-lettered after %s attempt(s): %s", attempt, error)
            else:
                wait = self.retry_queues[attempt - 1]
                self.publisher.publish(message.payload, exchange=DEFAULT_EXCHANGE,
                                       routing_key=wait.name, headers=headers,
                                       declare=[wait])
                metrics.EVENTS_RETRIED.labels(service, self.queue.name).inc()
                metrics.EVENTS_HANDLED.labels(service, self.event_type, "retry").inc()
                log.warning("event handler failed (attempt %s), retrying in %ss: %s",
                            attempt, self.backoff[attempt - 1], error)
        except Exception:
            log.exception("could not park a failed event; requeueing it")
            self.queue_consumer.requeue_message(message)
            return
        self.queue_consumer.ack_message(message)


reliable_handler = ReliableEventHandler.decorator
