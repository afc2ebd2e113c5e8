"""common.posting: idempotency keys, states, retry policy and error classification."""
import datetime as dt
import random
from decimal import Decimal

import eventlet
import pytest

from common.errors import VendorUnavailable
from common.posting import keys, retry, states
from common.posting.budget import BudgetExhausted
from common.posting.engine import PlannedOp
from common.posting.service import posting_credentials
from common.vendor_client import MalformedRecord, NotFound, RateLimited, Rejected, Timeout, Transient, Unauthorized


def op(**kw):
    base = dict(kind="adjust", effective_date=dt.date(2026, 11, 20), quantity_before=10, quantity_after=12,
                unit_change=2)
    base.update(kw)
    return PlannedOp(**base)


def test_keys_are_deterministic_and_name_the_intent():
    k1 = keys.operation_key("autotask", "t", "100", "7", op(), desired_version=3)
    assert k1 == keys.operation_key("autotask", "t", "100", "7", op(), desired_version=3)
    assert len(k1) == 40
    others = [keys.operation_key("autotask", "t", "100", "7", op(), desired_version=4),
              keys.operation_key("autotask", "t", "100", "7", op(), desired_version=3, edit_round=1),
              keys.operation_key("autotask", "t2", "100", "7", op(), desired_version=3),
              keys.operation_key("connectwise", "t", "100", "7", op(), desired_version=3),
              keys.operation_key("autotask", "t", "100", "7", op(quantity_before=11, unit_change=1),
                                 desired_version=3),
              keys.operation_key("autotask", "t", "100", "7", op(effective_date=dt.date(2026, 12, 1)),
                                 desired_version=3)]
    assert len({k1, *others}) == len(others) + 1


def test_decimal_spelling_does_not_change_a_key():
    a = keys.idempotency_key("price", Decimal("21.50"))
    assert a == keys.idempotency_key("price", Decimal("21.5")) == keys.idempotency_key("price", Decimal("21.500"))


def test_state_machine():
    assert states.can_move(states.PLANNED, states.POSTING)
    assert states.can_move(states.POSTING, states.POSTED)
    assert states.can_move(states.FAILED, states.POSTING)
    assert states.can_move(states.DEAD, states.PLANNED)          # retry from the portal
    assert not states.can_move(states.POSTED, states.POSTING)    # never twice
    assert not states.can_move(states.POSTING, states.SUPERSEDED)  # unknown outcome: resolve first


@pytest.mark.parametrize("exc, kind", [
    (Timeout("read timed out", request_sent=None), retry.UNKNOWN),
    (MalformedRecord(None, "itemId", "not an integer"), retry.UNKNOWN),
    (RateLimited("throttled", retry_after=1.0), retry.RETRY),
    (Transient("simulated fault 500", status=500), retry.RETRY),
    (Transient("could not connect", request_sent=False), retry.RETRY),
    (Unauthorized("401"), retry.RETRY),
    (Rejected("Units cannot go below zero", status=500), retry.DEAD),
    (NotFound("no such contract", status=404), retry.DEAD),
    (BudgetExhausted("used up", retry_after=60), retry.NOT_SENT),
    (RuntimeError("bug"), retry.UNKNOWN),
])
def test_classify(exc, kind):
    assert retry.classify(exc) == kind


def test_backoff_grows_is_capped_jittered_and_honours_retry_after():
    policy = retry.RetryPolicy(max_attempts=4, base=2.0, cap=10.0, rng=random.Random(1))
    for attempt, top in ((1, 2.0), (2, 4.0), (3, 8.0), (6, 10.0)):
        d = policy.delay(attempt)
        assert top / 2 <= d <= top
    assert policy.delay(1, retry_after=30) == 30
    assert not policy.exhausted(3) and policy.exhausted(4)


def test_policy_from_config():
    p = retry.RetryPolicy.from_config({"POSTING_MAX_ATTEMPTS": 9, "POSTING_BACKOFF": [0.5, 4]})
    assert (p.max_attempts, p.base, p.cap) == (9, 0.5, 4.0)


# --- the posting pass's credentials call ----------------------------------------------------------
class SilentGateway:
    """A gateway whose answer never comes (its reply lost in a broker restart)."""

    def __init__(self):
        self.asked = []

    def tenant_credentials(self, tenant_id, kind):
        self.asked.append((tenant_id, kind))
        eventlet.sleep(60)


class AnsweringGateway:
    def tenant_credentials(self, tenant_id, kind):
        return f"token-of-{tenant_id}-{kind}"


def test_posting_credentials_are_bounded_and_raise_a_plain_error():
    gateway = SilentGateway()
    with pytest.raises(VendorUnavailable, match="no autotask credentials within 0.05s"):
        posting_credentials(gateway, "t1", "autotask", seconds=0.05)
    assert gateway.asked == [("t1", "autotask")]
    assert posting_credentials(AnsweringGateway(), "t1", "connectwise", seconds=0.05) == "token-of-t1-connectwise"


def test_an_outer_timeout_is_not_mistaken_for_the_credentials_bound():
    with pytest.raises(eventlet.Timeout):
        with eventlet.Timeout(0.05):
            posting_credentials(SilentGateway(), "t1", "autotask", seconds=30)
