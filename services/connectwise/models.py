"""The connectwise service's schema: messaging tables and the posting kit's tables (posting_groups,
postings ledger, request_budget - common/posting/tables.py)."""
from sqlalchemy import MetaData

from common.posting.tables import posting_tables
from common.tables import add_messaging_tables

metadata = MetaData()
outbox, processed_events = add_messaging_tables(metadata)
posting = posting_tables(metadata)
posting_groups, postings, request_budget = posting.groups, posting.ledger, posting.budget
