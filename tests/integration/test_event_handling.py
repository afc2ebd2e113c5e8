"""Consumers: a redelivered event is handled once; a failing one ends in the dead-letter queue."""
import urllib.request
import uuid

from nameko.amqp.publish import Publisher
from sqlalchemy import select

from common.events import make_event
from services.reporting import models as rp
from tests.support.infra import metric_value, wait_for


def publish(stack, payload, event_type="customer_changed"):
    Publisher(stack.amqp_uri, use_confirms=True, serializer="json").publish(
        payload, exchange=_exchange(), routing_key=event_type)


def _exchange(source="marketplace"):
    # exactly as nameko declares it, or RabbitMQ refuses the second declaration
    from nameko.events import get_event_exchange

    return get_event_exchange(source, {})


def handled(stack, result):
    text = urllib.request.urlopen(stack.url("reporting", "/metrics"), timeout=5).read().decode()
    return metric_value(text, "events_handled_total", service="reporting", event_type="customer_changed", result=result)


def test_a_redelivered_event_is_handled_once(stack, engines):
    tenant = f"t-{uuid.uuid4()}"
    event = make_event("marketplace", "customer_changed", tenant, customer_id="c-1", name="Once Ltd")
    before = handled(stack, "ok")
    publish(stack, event)
    publish(stack, event)  # what a broker redelivery or a relay crash before "sent" looks like
    wait_for(lambda: handled(stack, "ok") >= before + 2, message="both deliveries handled")
    with engines("reporting").connect() as conn:
        row = conn.execute(select(rp.customers).where(rp.customers.c.tenant_id == tenant)).one()
        journal = conn.execute(select(rp.event_journal).where(rp.event_journal.c.tenant_id == tenant)).all()
    assert row.changes_seen == 1
    assert len(journal) == 1


def test_a_malformed_event_is_dead_lettered_with_its_reason(stack):
    tenant = f"t-{uuid.uuid4()}"
    event = make_event("marketplace", "customer_changed", tenant, customer_id="c-x", name="Broken")
    del event["name"]
    publish(stack, event)
    with stack.rpc() as rpc:
        dead = wait_for(lambda: [d for d in rpc.reporting.dead_letters() if d["tenant_id"] == tenant],
                        message="the event in the dead-letter queue")
    assert dead[0]["event_id"] == event["event_id"]
    assert dead[0]["attempts"] == 1  # a malformed payload is not retried: waiting cannot fix it
    assert "name" in dead[0]["error"] and "ValidationError" in dead[0]["error"]
    with stack.rpc() as rpc:  # listing does not consume: it is still there
        assert [d for d in rpc.reporting.dead_letters() if d["tenant_id"] == tenant]


def test_an_envelope_is_journaled_in_one_go_and_its_malformed_event_dead_lettered_alone(stack, engines):
    from common.consumers import envelope

    tenant = f"t-{uuid.uuid4()}"
    events = [make_event("marketplace", "customer_changed", tenant, customer_id=f"c-{i}", name=f"Envelope {i}")
              for i in range(4)]
    del events[2]["name"]
    publish(stack, envelope(events))

    def journal():
        with engines("reporting").connect() as conn:
            return conn.execute(select(rp.event_journal.c.event_id)
                                .where(rp.event_journal.c.tenant_id == tenant)).scalars().all()

    wait_for(lambda: len(journal()) == 3, message="the three good events journaled")
    with stack.rpc() as rpc:
        dead = wait_for(lambda: [d for d in rpc.reporting.dead_letters() if d["tenant_id"] == tenant],
                        message="the malformed event in the dead-letter queue")
    assert sorted(journal()) == sorted(e["event_id"] for i, e in enumerate(events) if i != 2)
    assert [d["event_id"] for d in dead] == [events[2]["event_id"]]
    assert dead[0]["attempts"] == 1 and "ValidationError" in dead[0]["error"]


def test_an_envelope_delivered_twice_is_handled_once(stack, engines):
    from common.consumers import envelope

    tenant = f"t-{uuid.uuid4()}"
    events = [make_event("marketplace", "customer_changed", tenant, customer_id=f"c-{i}", name=f"Twice {i}")
              for i in range(3)]
    before = handled(stack, "ok")
    publish(stack, envelope(events))
    publish(stack, envelope(events[1:]))    # a relay that crashed before marking them sent
    wait_for(lambda: handled(stack, "ok") >= before + 5, message="both deliveries handled")
    with engines("reporting").connect() as conn:
        seen = conn.execute(select(rp.customers.c.customer_id, rp.customers.c.changes_seen)
                            .where(rp.customers.c.tenant_id == tenant)).all()
        journal = conn.execute(select(rp.event_journal).where(rp.event_journal.c.tenant_id == tenant)).all()
    assert sorted(seen) == [("c-0", 1), ("c-1", 1), ("c-2", 1)]
    assert len(journal) == 3
