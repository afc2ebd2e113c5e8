"""Tables every service schema has: its outbox and its processed-event ids."""
from common.idempotency import processed_events_table
from common.outbox import outbox_table


def add_messaging_tables(metadata):
    return outbox_table(metadata), processed_events_table(metadata)
