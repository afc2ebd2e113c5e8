"""Posting metrics, shared by every PSA service (each runs in its own process, label psa)."""
from prometheus_client import Counter, Gauge, Histogram

POSTINGS = Counter("postings_total", "PSA operations by outcome (posted, confirmed = found applied on "
                   "re-read, failed, dead, held, superseded)", ["psa", "result"])
PSA_REQUESTS = Counter("psa_requests_total", "Requests to the PSA through the posting budget",
                       ["psa", "endpoint", "status"])
PSA_SECONDS = Histogram("psa_request_seconds", "PSA request duration", ["psa", "endpoint"],
                        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
CHANGE_TO_POSTED = Histogram("change_to_posted_seconds", "From the desired change to the PSA line being "
                             "in step with it", ["psa"],
                             buckets=(1, 2, 5, 10, 30, 60, 120, 300, 900, 3600, 14400, 86400))
BUDGET_REMAINING = Gauge("psa_budget_remaining", "Requests left in the tenant's rolling-hour budget",
                         ["psa", "tenant_id"])
