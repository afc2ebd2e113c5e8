"""The mapping service. Its behaviour arrives with its issue; today it runs, reports health and metrics,
and relays its outbox."""
from common.db import Database
from common.outbox import OutboxRelay
from common.service_base import ServiceBase
from services.mapping import models


class MappingService(ServiceBase):
    name = "mapping"
    db = Database()
    outbox = OutboxRelay(lambda: models.outbox)
