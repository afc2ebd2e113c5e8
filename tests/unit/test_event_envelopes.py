"""Several events in one message: how the relay packs them and how a handler takes them apart."""
from types import SimpleNamespace

import pytest

from common.consumers import envelope, payloads_of, run_events
from common.outbox import _envelopes


def row(id_, event_type, tenant):
    return SimpleNamespace(id=id_, event_type=event_type, payload={"tenant_id": tenant, "event_id": f"e{id_}"})


def test_a_lone_event_travels_as_itself_and_several_as_an_envelope():
    one = {"event_id": "a"}
    assert envelope([one]) == one and payloads_of(one) == [one]
    two = envelope([one, {"event_id": "b"}])
    assert payloads_of(two) == [one, {"event_id": "b"}]


def test_the_relay_packs_by_type_in_order_and_splits_at_the_size():
    rows = [row(1, "line", "A"), row(2, "line", "B"), row(3, "line", "A"), row(4, "customer", "A"),
            row(5, "line", "A"), row(6, "line", "B")]
    messages = [(etype, [r.id for r in group]) for etype, group in _envelopes(rows, 3)]
    assert messages == [("line", [1, 2, 3]), ("customer", [4]), ("line", [5, 6])]


class Recorder:
    """A handler's service: what it saw, and which event ids it refuses."""

    def __init__(self, poison=()):
        self.poison, self.calls = set(poison), []

    def handle_batch(self, payloads):
        self.calls.append([p["event_id"] for p in payloads])
        bad = [p["event_id"] for p in payloads if p["event_id"] in self.poison]
        if bad:
            raise ConnectionError(f"cannot handle {bad}")

    def handle_one(self, payload):
        self.calls.append(payload["event_id"])
        if payload["event_id"] in self.poison:
            raise ValueError("bad")


EVENTS = [{"event_id": x} for x in "abc"]


def test_a_batch_handler_takes_the_whole_message_at_once():
    service = Recorder()
    assert run_events(Recorder.handle_batch, True, service, EVENTS) == []
    assert service.calls == [["a", "b", "c"]]


def test_a_failed_batch_is_handled_event_by_event_and_only_the_bad_one_fails():
    service = Recorder(poison={"b"})
    failures = run_events(Recorder.handle_batch, True, service, EVENTS)
    assert service.calls == [["a", "b", "c"], ["a"], ["b"], ["c"]]
    assert [(p["event_id"], exc_info[0]) for p, exc_info in failures] == [("b", ConnectionError)]


def test_a_single_event_handler_gets_each_event_and_its_failures_are_returned():
    service = Recorder(poison={"a", "c"})
    failures = run_events(Recorder.handle_one, False, service, EVENTS)
    assert service.calls == ["a", "b", "c"]
    assert [p["event_id"] for p, _ in failures] == ["a", "c"]


@pytest.mark.parametrize("batch", [True, False])
def test_a_lone_failing_event_is_not_tried_twice(batch):
    service = Recorder(poison={"a"})
    failures = run_events(Recorder.handle_batch if batch else Recorder.handle_one, batch, service, EVENTS[:1])
    assert len(service.calls) == 1 and [p["event_id"] for p, _ in failures] == ["a"]


def test_a_batch_is_taken_tenant_by_tenant_in_tenant_order_each_in_its_own_order():
    from common.consumers import by_tenant

    events = [{"tenant_id": t, "event_id": i} for i, t in enumerate("BABCA")]
    assert [(t, [e["event_id"] for e in es]) for t, es in by_tenant(events)] == [
        ("A", [1, 4]), ("B", [0, 2]), ("C", [3])]
