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


@pytest.fixture
def flaky(stack):
    container = ServiceContainer(FlakyProjection, {"AMQP_URI": stack.amqp_uri, "EVENT_RETRY_BACKOFF": [0.2, 0.5],
                                                  "max_workers": 2})
    container.start()
    yield container
    container.stop()


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
