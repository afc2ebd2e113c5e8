"""The PSA-independent posting kit (docs/design/posting.md): what Autotask and ConnectWise posting
share - the ledger and line tables, states, idempotency keys, the claim/lease loop across
replicas, the shared request budget and concurrency slots, retry policy and metrics.

    tables.posting_tables(metadata)        -> PostingTables(groups, ledger, budget, reconciliations)
    store.record_desired_many(session, tables, tenant_id, events) (event handler)
    engine.Poster(..., adapter=YourAdapter()).run_due()           (timer)
    store.ledger_page / failures_page / retry                      (RPC)
    budget.RequestBudget(engine, tables.budget, psa, ...).request(tenant_id, endpoint_key)
"""
from common.posting import keys, retry, schedule, states  # noqa: F401
from common.posting.budget import BudgetExhausted, RequestBudget, SlotUnavailable  # noqa: F401
from common.posting.engine import GroupWork, Plan, PlannedOp, Poster, PsaAdapter, Unreadable  # noqa: F401
from common.posting.retry import NotSent, RetryPolicy  # noqa: F401
from common.posting.tables import PostingTables, posting_tables  # noqa: F401
