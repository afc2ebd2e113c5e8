"""Transactional outbox: an event is published if and only if the change it announces commits.

A service writes its change and the event row in one transaction (`Outbox.add`). The relay,
running in every replica of the service, claims unsent rows with FOR UPDATE SKIP LOCKED,
publishes each with publisher confirms and `mandatory` (so an event nobody listens for yet
stays in the outbox instead of vanishing), and marks it sent in the same transaction. A crash
between publish and commit republishes the row: consumers drop the duplicate by event_id.

The rows of one pass that share an event type go out as one message (an envelope,
common/consumers.py), up to OUTBOX_ENVELOPE_EVENTS (default 100) in publishing order: a burst of
changes costs one publish, one confirm and one delivery per batch instead of one per event, and a
batch handler takes it in one transaction (each tenant's events in id order). A lone event still
travels as itself, so a quiet system pays no latency for this; during a burst the relay waits
OUTBOX_LINGER_SECONDS (default 0.05) after a pass that sent something, so the next commits gather.
"""
import datetime as dt
import logging
import time


import eventlet
from eventlet.event import Event
from nameko.amqp.publish import Publisher, UndeliverableMessage
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.events import get_event_exchange
from nameko.extensions import DependencyProvider
from sqlalchemy import (BigInteger, Column, DateTime, Integer, MetaData, String, Table, Text,
                        func, select, text, update)
from sqlalchemy.dialects.postgresql import JSONB

from common import events, metrics
from common.consumers import envelope
from common.db import make_engine

log = logging.getLogger(__name__)


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox", metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False, unique=True),
        Column("event_type", String(80), nullable=False),
        Column("tenant_id", String(64), nullable=False),
        Column("payload", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("sent_at", DateTime(timezone=True), nullable=True, index=True),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("last_error", Text, nullable=True),
    )


class Outbox:
    """What a worker uses to announce a change inside its own transaction."""

    def __init__(self, source, table, relay=None):
        self.source = source
        self.table = table
        self._relay = relay

    def add(self, session, event_type, tenant_id, **payload):
        body = events.make_event(self.source, event_type, tenant_id, **payload)
        session.execute(self.table.insert().values(
            event_id=body["event_id"], event_type=event_type, tenant_id=body["tenant_id"], payload=body))
        if self._relay is not None:
            self._relay.wake_after_commit(session)
        return body


class OutboxRelay(DependencyProvider):
    """Owns the relay loop of one service process. Config: OUTBOX_POLL_SECONDS (default 0.5)."""

    batch_size = 1000  # rows per pass (packed into envelopes by type and tenant)

    unroutable_backoff_max = 60.0

    def __init__(self, table_getter):
        # table_getter: the service's models module hands over its own outbox Table
        self.table_getter = table_getter
        self._wake = Event()
        self._gt = None
        self._running = False
        # event_type -> (monotonic time of the next try, current backoff): an event type nobody
        # consumes yet is retried with a doubling pause, not on every pass
        self._parked = {}

    def setup(self):
        config = self.container.config
        self.table = self.table_getter()
        self.source = self.container.service_name
        self.engine = make_engine(config["DB_URI"], config["DB_SCHEMA"], pool_size=2)
        self.poll = float(config.get("OUTBOX_POLL_SECONDS", 0.5))
        self.envelope_size = max(1, int(config.get("OUTBOX_ENVELOPE_EVENTS", 100)))
        self.linger = float(config.get("OUTBOX_LINGER_SECONDS", 0.05))
        self.exchange = get_event_exchange(self.source, config)
        self.publisher = Publisher(config[AMQP_URI_CONFIG_KEY], use_confirms=True, mandatory=True,
                                   serializer="json", delivery_mode=2)
        self.outbox = Outbox(self.source, self.table, relay=self)

    def start(self):
        self._running = True
        self._gt = self.container.spawn_managed_thread(self._run, identifier="outbox_relay")

    def stop(self):
        self._running = False
        self._wake_now()
        if self._gt is not None:
            self._gt.wait()
        self.engine.dispose()

    def kill(self):
        self._running = False
        if self._gt is not None:
            self._gt.kill()
        self.engine.dispose()

    def get_dependency(self, worker_ctx):
        return self.outbox

    def wake_after_commit(self, session):
        from sqlalchemy import event as sa_event

        sa_event.listen(session, "after_commit", lambda _s: self._wake_now(), once=True)

    def _wake_now(self):
        if not self._wake.ready():
            self._wake.send(True)

    def _run(self):
        while self._running:
            try:
                sent = self.relay_once()
            except Exception:  # DB or broker down: keep the rows, try again after a pause
                log.exception("outbox relay pass failed; will retry")
                sent = 0
                eventlet.sleep(min(5.0, self.poll * 4))
            if sent < self.batch_size:
                if sent and self.linger:
                    # a burst: let the next commits gather for a moment, so they share a message
                    # (a lone event after a quiet spell still goes at once)
                    eventlet.sleep(self.linger)
                with eventlet.Timeout(self.poll, False):
                    self._wake.wait()
                self._wake = Event()

    def relay_once(self):
        """Publish one batch of pending rows. Returns how many were sent."""
        t = self.table
        sent = 0
        now = time.monotonic()
        waiting = [etype for etype, (until, _) in self._parked.items() if until > now]
        query = select(t.c.id, t.c.event_type, t.c.payload, t.c.created_at).where(t.c.sent_at.is_(None))
        if waiting:
            query = query.where(t.c.event_type.notin_(waiting))
        with self.engine.begin() as conn:
            rows = conn.execute(query.order_by(t.c.id).limit(self.batch_size)
                                .with_for_update(skip_locked=True)).all()
            unroutable = set()
            published = []
            for event_type, group in _envelopes(rows, self.envelope_size):
                if event_type in unroutable:
                    continue
                try:
                    # declare the exchange too: before any consumer exists it may not be there yet
                    self.publisher.publish(envelope([row.payload for row in group]), exchange=self.exchange,
                                           declare=[self.exchange], routing_key=event_type)
                except UndeliverableMessage:
                    # nobody has bound a queue for this event yet: keep it (and the rest of its
                    # type, in order), and park the type for a while
                    unroutable.add(event_type)
                    conn.execute(update(t).where(t.c.id.in_([row.id for row in group])).values(
                        attempts=t.c.attempts + 1, last_error="unroutable: no queue bound yet"))
                    metrics.OUTBOX_UNROUTABLE.labels(self.source, event_type).inc(len(group))
                    continue
                self._parked.pop(event_type, None)
                published.extend(row.id for row in group)
                metrics.EVENTS_PUBLISHED.labels(self.source, event_type).inc(len(group))
                now_utc = dt.datetime.now(dt.timezone.utc)
                for row in group:
                    metrics.OUTBOX_LAG.labels(self.source).observe(max((now_utc - row.created_at).total_seconds(), 0.0))
                sent += len(group)
            # every published row marked sent with one statement, in the same transaction as before
            # (a crash before the commit republishes them; consumers drop duplicates by event_id)
            if published:
                conn.execute(update(t).where(t.c.id.in_(published)).values(sent_at=func.now()))
        for etype in unroutable:
            backoff = min(self.unroutable_backoff_max, self._parked.get(etype, (0, 0.5))[1] * 2)
            self._parked[etype] = (time.monotonic() + backoff, backoff)
            log.warning("no queue is bound for %s.%s yet; kept in the outbox, next try in %.0fs",
                        self.source, etype, backoff)
        return sent

    def pending(self):
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(self.table)
                                .where(self.table.c.sent_at.is_(None))).scalar_one()


def _envelopes(rows, size):
    """(event_type, rows) per message: the rows of one type in id order, ``size`` at most; messages
    ordered by their first row. Tenants share a message: with many tenants each changing a little
    (the usual case), envelopes of one tenant would carry one or two events; the batch handlers
    take each tenant's part in turn."""
    groups = {}
    for row in rows:
        chunks = groups.setdefault(row.event_type, [[]])
        if len(chunks[-1]) >= size:
            chunks.append([])
        chunks[-1].append(row)
    messages = [(etype, chunk) for etype, chunks in groups.items() for chunk in chunks]
    messages.sort(key=lambda m: m[1][0].id)
    return messages
