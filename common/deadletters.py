"""List and replay dead-lettered events: what ops need when a handler kept failing."""
import json

from kombu import Connection

from common.consumers import ATTEMPT_HEADER, DEFAULT_EXCHANGE, ERROR_HEADER, dead_queue


def _decode(message):
    headers = dict(message.headers or {})
    body = message.body
    payload = json.loads(body) if isinstance(body, (bytes, str)) else body
    return {
        "event_id": (payload or {}).get("event_id"),
        "tenant_id": (payload or {}).get("tenant_id"),
        "queue": headers.get("x-idsync-failed-queue"),
        "attempts": headers.get(ATTEMPT_HEADER),
        "error": headers.get(ERROR_HEADER),
        "payload": payload,
    }


def list_dead(amqp_uri, queue_names, limit=100):
    """Peek at dead letters (they stay where they are)."""
    out = []
    with Connection(amqp_uri, connect_timeout=5) as conn:
        channel = conn.channel()
        for name in queue_names:
            q = dead_queue(name)(channel)
            q.declare()
            held = []
            try:
                while len(out) < limit:
                    message = q.get(no_ack=False)
                    if message is None:
                        break
                    held.append(message)
                    out.append(_decode(message))
            finally:
                for message in held:  # put every peeked message back
                    message.requeue()
    return out


def replay_dead(amqp_uri, queue_names, limit=1000, event_ids=None):
    """Move dead letters back to their handler's queue with a fresh attempt count."""
    replayed = 0
    # publisher confirms: the copy is in the broker before the dead letter is acked away
    with Connection(amqp_uri, connect_timeout=5, transport_options={"confirm_publish": True}) as conn:
        channel = conn.channel()
        producer = conn.Producer(channel=channel)
        for name in queue_names:
            q = dead_queue(name)(channel)
            q.declare()
            skipped = []
            while replayed < limit:
                message = q.get(no_ack=False)
                if message is None:
                    break
                item = _decode(message)
                if event_ids and item["event_id"] not in event_ids:
                    skipped.append(message)
                    continue
                headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith("x-idsync-")}
                headers[ATTEMPT_HEADER] = 0
                producer.publish(item["payload"], exchange=DEFAULT_EXCHANGE, routing_key=name,
                                 headers=headers, serializer="json", delivery_mode=2)
                message.ack()
                replayed += 1
            for message in skipped:
                message.requeue()
    return replayed
