"""The connectwise service's schema. Domain tables arrive with the issues that need them."""
from sqlalchemy import MetaData

from common.tables import add_messaging_tables

metadata = MetaData()
outbox, processed_events = add_messaging_tables(metadata)
