"""One tenant's marketplace sync, and the scheduling of runs (docs/design/sync-and-mapping.md,
"Marketplace service"). The decisions the design left open are written down here.

A run:
1. customers, then products (every page): upsert what is new or moved, `customer_changed` /
   `product_changed` for each; a product whose catalog cost moved re-prices its lines (`price`).
2. every subscription summary (every page). The detail (~60 GETs a minute per endpoint) is fetched
   only for subscriptions that are new, whose lastModifiedDate moved (or was read less than 2 s
   after that whole-second stamp: a later change in that second keeps it), that are quarantined (to see
   whether they parse again), or - in a full run - all of them (a resumed full run skips those it
   already fetched since it began). After a *complete* listing, a stored subscription the listing
   no longer has is fetched once: a 404 turns its lines removed/0.
3. per fetched subscription one transaction: lines, the subscription row (its last_modified only
   now, so an interrupted run fetches it again) and one `subscription_line_changed` per changed line.
4. a record that fails validation (listing `malformed`, MalformedRecord from a detail, two lines with
   one MPN) is quarantined with its reason and the run goes on; a quarantined record that parses
   again is resolved. Such a run ends `partial`.
5. pacing: the client sleeps the vendor's Retry-After (and its retry backoff) itself as long as one
   wait is at most SYNC_MAX_WAIT_SECONDS (65: a whole 60-second window) and all waits of the run fit
   in SYNC_WAIT_BUDGET_SECONDS (600). Beyond that the run ends `throttled` with the vendor's
   retry_after; the scheduler queues the next run once that has passed (at least
   SYNC_THROTTLE_RETRY_SECONDS) and it resumes naturally: committed subscriptions are skipped.
   A vendor outage (5xx, timeouts after the client's retries), refused credentials or a broken page
   end the run `failed`; what it committed stays.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import socket
import time

from prometheus_client import Counter, Histogram

from common.logs import log_context
from common.vendor_client import MalformedRecord, NotFound, RateLimited, Rejected, Unauthorized, VendorError
from services.marketplace import domain, snapshots
from services.marketplace.client import MarketplaceClient
from services.marketplace.exceptions import RunStopped, ThrottleBudgetExhausted

log = logging.getLogger(__name__)

SYNC_RUNS = Counter("marketplace_sync_runs_total", "Marketplace sync runs ended", ["kind", "outcome"])
SYNC_SECONDS = Histogram("marketplace_sync_run_seconds", "Marketplace sync run duration", ["kind"],
                         buckets=(1, 5, 15, 60, 300, 900, 1800, 3600))
LINES_CHANGED = Counter("marketplace_lines_changed_total", "subscription_line_changed events written")
QUARANTINED = Counter("marketplace_quarantined_records_total", "Marketplace records quarantined", ["record_type"])

NO_ID = "(no id)"
COUNT_KEYS = ("customers_listed", "customers_changed", "products_listed", "products_changed",
              "subscriptions_listed", "subscriptions_skipped", "details_fetched", "details_failed",
              "lines_changed", "quarantined", "quarantine_resolved")


@dataclasses.dataclass(frozen=True)
class SyncSettings:
    page_size: int = 100
    wait_budget_seconds: float = 600.0
    max_wait_seconds: float = 65.0
    read_retries: int = 3
    heartbeat_seconds: float = 2.0
    interval_minutes: float = 15.0
    full_hour: int = 2
    throttle_retry_seconds: float = 60.0
    stale_seconds: float = 300.0
    concurrency: int = 4
    keep_days: float = 90.0
    rpc_timeout_seconds: float = 5.0

    @classmethod
    def from_config(cls, config) -> "SyncSettings":
        def get(key, default, kind=float):
            value = config.get(key, default)
            return kind(default if value in (None, "") else value)

        return cls(page_size=get("SYNC_PAGE_SIZE", 100, int),
                   wait_budget_seconds=get("SYNC_WAIT_BUDGET_SECONDS", 600.0),
                   max_wait_seconds=get("SYNC_MAX_WAIT_SECONDS", 65.0),
                   read_retries=get("SYNC_READ_RETRIES", 3, int),
                   heartbeat_seconds=get("SYNC_HEARTBEAT_SECONDS", 2.0),
                   interval_minutes=get("SYNC_INTERVAL_MINUTES", 15.0),
                   full_hour=get("FULL_SYNC_HOUR_UTC", 2, int) % 24,
                   throttle_retry_seconds=get("SYNC_THROTTLE_RETRY_SECONDS", 60.0),
                   stale_seconds=get("SYNC_STALE_SECONDS", 300.0),
                   concurrency=max(1, get("SYNC_CONCURRENCY", 4, int)),
                   keep_days=get("SYNC_RUN_RETENTION_DAYS", 90.0),
                   rpc_timeout_seconds=get("GATEWAY_RPC_TIMEOUT_SECONDS", 5.0))


@dataclasses.dataclass
class RunResult:
    outcome: str
    counts: dict
    error: str | None = None
    retry_after: float | None = None


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Pacer:
    """The marketplace client's `sleep`: every wait the client decides on (the vendor's Retry-After,
    its retry backoff) is slept here in short steps - checking for a stop and keeping the run's
    heartbeat - until the run's budget is spent; then ThrottleBudgetExhausted ends the run."""

    def __init__(self, budget_seconds, should_stop=lambda: False, beat=lambda: None, sleep=time.sleep, step=2.0):
        self.budget = float(budget_seconds)
        self.should_stop, self.beat = should_stop, beat
        self._sleep, self.step = sleep, step
        self.waited = 0.0

    def __call__(self, seconds) -> None:
        seconds = max(0.0, float(seconds))
        if self.waited + seconds > self.budget:
            raise ThrottleBudgetExhausted(seconds, self.waited)
        remaining = seconds
        while remaining > 0:
            if self.should_stop():
                raise RunStopped("the service is stopping")
            chunk = min(self.step, remaining)
            self._sleep(chunk)
            remaining -= chunk
            self.waited += chunk
            self.beat()


class SyncRun:
    """The steps of one run over a Repository (snapshots.Repository, or a fake in unit tests) and a
    MarketplaceClient. `execute()` never raises for vendor trouble: it returns the run's result."""

    def __init__(self, repo, client, run: dict, settings: SyncSettings = SyncSettings(), *,
                 now=utcnow, should_stop=lambda: False):
        self.repo, self.client, self.settings = repo, client, settings
        self.full = run.get("kind") == "full"
        self.full_since = run.get("full_since")
        self.now, self.should_stop = now, should_stop
        self.counts = dict.fromkeys(COUNT_KEYS, 0)
        self.open: set[tuple[str, str]] = set()

    def execute(self) -> RunResult:
        try:
            self.open = self.repo.open_quarantine()
            self.sync_customers()
            catalog = self.sync_products()
            self.sync_subscriptions(catalog)
        except ThrottleBudgetExhausted as exc:
            return self._end("throttled", str(exc), exc.retry_after)
        except RateLimited as exc:
            return self._end("throttled", f"rate limited by the marketplace: {exc}", exc.retry_after)
        except RunStopped as exc:
            return self._end("failed", f"stopped: {exc}; the next run resumes")
        except Unauthorized as exc:
            return self._end("failed", f"the marketplace refused the credentials ({exc.endpoint}, "
                                       f"status {exc.status}): {exc.message}")
        except MalformedRecord as exc:  # a broken page envelope: the listing cannot go on
            return self._end("failed", f"the marketplace sent a malformed page: {exc}")
        except VendorError as exc:
            return self._end("failed", f"the marketplace is not answering usefully: {exc}")
        return self._end(domain.run_outcome(self.counts))

    def _end(self, outcome, error=None, retry_after=None) -> RunResult:
        return RunResult(outcome, dict(self.counts), error, retry_after)

    # --- steps -------------------------------------------------------------------------------
    def sync_customers(self) -> None:
        listing = self.client.customers(page_size=self.settings.page_size)
        records = self._drain(listing)
        self.counts["customers_listed"] = len(records)
        stored = self.repo.load_customers()
        changed = [r for r in records
                   if domain.customer_changed(stored.get(str(r["id"])), domain.customer_snapshot(r))]
        self.repo.save_customers(changed)
        self.counts["customers_changed"] = len(changed)
        self._quarantine("customer", listing.malformed)
        self._resolve("customer", [r["id"] for r in records] + self._anonymous_fixed(listing))

    def sync_products(self) -> dict[str, dict]:
        """Returns the catalog by MPN (stored snapshots for products this listing did not give)."""
        listing = self.client.products(page_size=self.settings.page_size)
        records = self._drain(listing)
        self.counts["products_listed"] = len(records)
        stored = self.repo.load_products()
        catalog, items = {}, []
        for record in records:
            snap = domain.product_snapshot(record)
            previous = stored.get(snap["mpn"])
            catalog[snap["mpn"]] = snap
            if domain.product_changed(previous, snap):
                items.append((record, snap, domain.product_cost_moved(previous, snap)))
        for mpn, snap in stored.items():
            catalog.setdefault(mpn, snap)
        self.counts["lines_changed"] += self.repo.save_products(items, self.now())
        self.counts["products_changed"] = len(items)
        self._quarantine("product", listing.malformed)
        self._resolve("product", [r["id"] for r in records] + self._anonymous_fixed(listing))
        return catalog

    def sync_subscriptions(self, catalog) -> None:
        listing = self.client.subscriptions(page_size=self.settings.page_size)
        summaries = {}
        for summary in self._iterate(listing):
            summaries[summary["id"]] = summary
        self.counts["subscriptions_listed"] = len(summaries) + len(listing.malformed)
        self._quarantine("subscription", listing.malformed)
        self._resolve("subscription", self._anonymous_fixed(listing))
        malformed = {str(err.record_id) for err in listing.malformed if err.record_id is not None}
        marks = self.repo.load_marks()
        fetch = []
        for sid, summary in summaries.items():
            if (domain.needs_detail(summary, marks.get(sid), full=self.full, full_since=self.full_since)
                    or ("subscription", sid) in self.open):
                fetch.append(sid)
        self.counts["subscriptions_skipped"] = len(summaries) - len(fetch)
        # only a complete listing says what is gone; a malformed summary is present, not deleted
        gone = [sid for sid, mark in marks.items()
                if sid not in summaries and sid not in malformed and mark.unlisted_at is None] \
            if listing.complete else []
        for sid in fetch:
            self._fetch_and_apply(sid, catalog, listed=True)
        for sid in gone:
            self._fetch_and_apply(sid, catalog, listed=False)
        self.repo.beat(self.counts, force=True)

    def _fetch_and_apply(self, sid, catalog, listed) -> None:
        self._check_stop()
        try:
            detail = self.client.subscription(sid)
        except NotFound as exc:
            if listed:  # listed a moment ago, gone now: the next run sees which it is
                self.counts["details_failed"] += 1
                log.warning("subscription %s: detail not found although listed: %s", sid, exc.message)
                return
            detail = None
        except MalformedRecord as exc:
            self.counts["details_fetched"] += 1
            self._quarantine("subscription", [exc])
            return
        except Rejected as exc:
            self.counts["details_failed"] += 1
            log.warning("subscription %s: detail refused: %s", sid, exc)
            return
        if detail is not None:
            self.counts["details_fetched"] += 1
        resolve = ("subscription", sid) in self.open
        try:
            changes = self.repo.apply_subscription(sid, detail, self.now(), catalog, resolve=resolve)
        except domain.InvalidDetail as exc:
            self._quarantine_items([{"record_type": "subscription", "record_id": sid, "field": exc.field,
                                     "reason": exc.reason, "payload": {"endpoint": "GET /subscriptions/{id}"}}])
            return
        if not listed and detail is not None:
            self.repo.mark_unlisted(sid, self.now())  # alive but unlisted: do not fetch it every run
        if resolve:
            self.open.discard(("subscription", sid))
            self.counts["quarantine_resolved"] += 1
        self.counts["lines_changed"] += len(changes)
        LINES_CHANGED.inc(len(changes))
        self.repo.beat(self.counts)

    # --- helpers ------------------------------------------------------------------------------
    def _check_stop(self) -> None:
        if self.should_stop():
            raise RunStopped("the service is stopping")

    def _iterate(self, listing):
        for n, record in enumerate(listing, start=1):
            if n % 100 == 0:
                self._check_stop()
                self.repo.beat(self.counts)
            yield record

    def _drain(self, listing) -> list[dict]:
        return list(self._iterate(listing))

    @staticmethod
    def _anonymous_fixed(listing) -> list[str]:
        """A record without a usable id is quarantined as NO_ID; a complete listing without any such
        record resolves it."""
        if listing.complete and not any(err.record_id is None for err in listing.malformed):
            return [NO_ID]
        return []

    def _quarantine(self, record_type, errors) -> None:
        self._quarantine_items([{
            "record_type": record_type,
            "record_id": err.record_id if err.record_id is not None else NO_ID,
            "field": err.field, "reason": err.problem,
            "payload": {"endpoint": err.endpoint, "errors": err.errors}} for err in errors])

    def _quarantine_items(self, items) -> None:
        if not items:
            return
        self.repo.quarantine(items)
        self.counts["quarantined"] += len(items)
        for item in items:
            QUARANTINED.labels(item["record_type"]).inc()
            log.warning("quarantined %s %s (field %s): %s", item["record_type"], item["record_id"],
                        item.get("field"), item["reason"])

    def _resolve(self, record_type, record_ids) -> None:
        ids = [str(i) for i in record_ids if (record_type, str(i)) in self.open]
        if ids:
            self.counts["quarantine_resolved"] += self.repo.resolve(record_type, ids)
            self.open.difference_update((record_type, i) for i in ids)


# --- the run in its own green thread -----------------------------------------------------------
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


def execute_run(store, outbox, run: dict, credentials: dict, settings: SyncSettings, *,
                should_stop=lambda: False, client_factory=MarketplaceClient, sleep=time.sleep) -> RunResult:
    """Run one claimed run to its end and record the outcome. Never raises."""
    tenant_id, run_id, kind = run["tenant_id"], run["run_id"], run["kind"]
    started = time.monotonic()
    with log_context(tenant_id=tenant_id):
        log.info("sync run %s (%s) started", run_id, kind)
        repo = snapshots.Repository(store, outbox, tenant_id, run_id, heartbeat_seconds=settings.heartbeat_seconds)
        sync = SyncRun(repo, None, run, settings, should_stop=should_stop)
        pacer = Pacer(settings.wait_budget_seconds, should_stop, beat=lambda: repo.beat(sync.counts), sleep=sleep)
        try:
            sync.client = client_factory(credentials, max_wait=settings.max_wait_seconds,
                                         read_retries=settings.read_retries, sleep=pacer)
        except (KeyError, TypeError, AttributeError):
            result = RunResult("failed", dict(sync.counts), "the stored marketplace credentials are incomplete")
        else:
            try:
                result = sync.execute()
            except Exception as exc:  # a bug or the database: the run must still end
                log.exception("sync run %s failed", run_id)
                result = RunResult("failed", dict(sync.counts), f"internal error ({type(exc).__name__}); "
                                                                  "see the marketplace service log")
        result.counts["throttle_wait_seconds"] = round(pacer.waited, 1)
        try:
            if not snapshots.finish_run(store, tenant_id, run_id, result.outcome, result.counts, result.error,
                                        result.retry_after):
                log.warning("sync run %s was no longer running when it ended", run_id)
        except Exception:
            log.exception("could not record the end of sync run %s", run_id)
        SYNC_RUNS.labels(kind, result.outcome).inc()
        SYNC_SECONDS.labels(kind).observe(time.monotonic() - started)
        log.info("sync run %s ended %s in %.1fs: %s%s", run_id, result.outcome, time.monotonic() - started,
                 {k: v for k, v in result.counts.items() if v}, f" ({result.error})" if result.error else "")
    return result


def schedule_due_runs(store, tenant_ids, settings: SyncSettings) -> list[dict]:
    """Queue the runs sync_due asks for (incremental every interval, nightly full, throttled resumes)."""
    now, view = snapshots.scheduler_view(store, tenant_ids)
    queued = []
    for tenant_id, runs in view.items():
        due = domain.sync_due(now, runs, interval_minutes=settings.interval_minutes, full_hour=settings.full_hour,
                              throttle_retry_seconds=settings.throttle_retry_seconds)
        if due is not None:
            with log_context(tenant_id=tenant_id):
                run = snapshots.queue_run(store, tenant_id, due.kind, due.trigger, due.full_since)
                log.info("queued %s sync run %s (%s)", due.kind, run["run_id"], due.trigger)
                queued.append(run)
    return queued
