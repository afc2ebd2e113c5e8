"""A handler that keeps failing is retried with backoff, parked in its dead-letter queue, and
handled after ops replay it. Runs a small service in-process over the real broker."""
import uuid

import pytest
from nameko.containers import ServiceContainer

from common import deadletters
from common.consumers import reliable_handler
from common.events import make_event
from tests.integration.test_event_handling import publish
from tests.support.infra import wait_for

STATE = {"failing": True, "calls": [], "handled": []}


class FlakyProjection:
    name = "flaky_projection"

    @reliable_handler("marketplace", "customer_changed")
    def on_customer_changed(self, payload):
        if not payload["tenant_id"].startswith("flaky-"):
            return
        STATE["calls"].append(payload["event_id"])
        if STATE["failing"]:
            raise ConnectionError("the read model's database is away")
        STATE["handled"].append(payload["event_id"])


def running(service_cls, stack):
    """The service in this process over the test broker, with a short retry ladder."""
    container = ServiceContainer(service_cls, {"AMQP_URI": stack.amqp_uri, "EVENT_RETRY_BACKOFF": [0.2, 0.5],
                                               "max_workers": 2})
    container.start()
    yield container
    container.stop()


@pytest.fixture
def flaky(stack):
    yield from running(FlakyProjection, stack)


def queue_name():
    return "evt-marketplace-customer_changed--flaky_projection.on_customer_changed"


def test_failing_handler_retries_then_dead_letters_then_replays(stack, flaky):
    STATE.update(failing=True, calls=[], handled=[])
    event = make_event("marketplace", "customer_changed", f"flaky-{uuid.uuid4()}", customer_id="c", name="N")
    publish(stack, event)
    dead = wait_for(lambda: [d for d in deadletters.list_dead(stack.amqp_uri, [queue_name()])
                             if d["event_id"] == event["event_id"]], message="dead letter")
    assert STATE["calls"] == [event["event_id"]] * 3  # first try + two delayed retries
    assert dead[0]["attempts"] == 3 and "ConnectionError" in dead[0]["error"]
    assert STATE["handled"] == []

    STATE["failing"] = False  # the outage is over: ops replay
    assert deadletters.replay_dead(stack.amqp_uri, [queue_name()], event_ids=[event["event_id"]]) == 1
    wait_for(lambda: STATE["handled"] == [event["event_id"]], message="the replayed event to be handled")
    assert not [d for d in deadletters.list_dead(stack.amqp_uri, [queue_name()]) if d["event_id"] == event["event_id"]]


def test_a_parked_event_whose_handler_queue_is_missing_is_kept_not_dropped(stack):
    """Chaos finding 6: a classic wait queue dead-letters at most once, so a message that expired
    while its handler queue was not there (a broker recovering its queues after a crash) was gone.
    The wait queues are quorum queues with at-least-once dead-lettering: the message stays."""
    import os
    import time

    import requests
    from kombu import Connection
    from nameko.amqp.publish import Publisher

    from common.consumers import DEFAULT_EXCHANGE, retry_queue

    handler_queue = f"test-missing-handler-{uuid.uuid4().hex[:8]}"     # never declared
    wait = retry_queue(handler_queue, 0, 0.2)
    Publisher(stack.amqp_uri, use_confirms=True, serializer="json", delivery_mode=2).publish(
        {"n": 1}, exchange=DEFAULT_EXCHANGE, routing_key=wait.name, declare=[wait])
    time.sleep(1.5)                                                      # expired long ago
    vhost, password = stack.env["IDSYNC_AMQP_VHOST"], stack.env["IDSYNC_AMQP_PASSWORD"]
    url = f"http://127.0.0.1:{os.environ.get('IDSYNC_MGMT_PORT', '15673')}/api/queues/{vhost}/{wait.name}"
    try:
        # the management API refreshes queue figures every few seconds
        info = wait_for(lambda: (lambda q: q if "messages_dlx" in q else None)(
            requests.get(url, auth=("idsync", password), timeout=10).json()), timeout=20, interval=1,
            message="the wait queue's figures")
        assert info["type"] == "quorum"
        assert info["messages_dlx"] == 1                                 # held for its handler queue
    finally:
        with Connection(stack.amqp_uri) as conn:
            wait(conn.channel()).delete()


BATCH = {"poison": set(), "batches": [], "handled": []}


class BatchProjection:
    name = "batch_projection"

    @reliable_handler("marketplace", "customer_changed", batch=True)
    def on_customer_changed(self, payloads):
        mine = [p for p in payloads if p["tenant_id"].startswith("batch-")]
        if not mine:
            return
        BATCH["batches"].append([p["event_id"] for p in mine])
        if any(p["event_id"] in BATCH["poison"] for p in mine):
            raise ConnectionError("one of these cannot be written")
        BATCH["handled"].extend(p["event_id"] for p in mine)


@pytest.fixture
def batch_projection(stack):
    yield from running(BatchProjection, stack)


def test_a_poison_event_in_an_envelope_is_retried_and_dead_lettered_alone(stack, batch_projection):
    """The relay packs a tenant's events into one message; one that keeps failing must not hold
    back (or take to the dead letters) the others it travelled with."""
    from common.consumers import envelope

    BATCH.update(poison=set(), batches=[], handled=[])
    tenant = f"batch-{uuid.uuid4()}"
    events = [make_event("marketplace", "customer_changed", tenant, customer_id=f"c{i}", name=f"N{i}")
              for i in range(3)]
    poison = events[1]["event_id"]
    BATCH["poison"] = {poison}
    publish(stack, envelope(events))
    queue = "evt-marketplace-customer_changed--batch_projection.on_customer_changed"
    dead = wait_for(lambda: deadletters.list_dead(stack.amqp_uri, [queue]), message="the poison event's dead letter")
    ids = [e["event_id"] for e in events]
    assert BATCH["batches"][0] == ids                       # the envelope arrived as one batch
    assert sorted(BATCH["handled"]) == sorted([ids[0], ids[2]])   # its neighbours were handled once
    assert [d["event_id"] for d in dead] == [poison] and dead[0]["attempts"] == 3
    assert BATCH["batches"].count([poison]) == 3             # first alone, then two delayed retries alone
    deadletters.replay_dead(stack.amqp_uri, [queue], event_ids=[poison])   # leave the queue empty
    BATCH["poison"] = set()
    wait_for(lambda: poison in BATCH["handled"], message="the replayed poison event")
