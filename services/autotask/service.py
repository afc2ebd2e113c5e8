"""The autotask service. Its behaviour arrives with its issue; today it runs, reports health and metrics,
and relays its outbox."""
from common.db import Database
from common.outbox import OutboxRelay
from common.service_base import ServiceBase
from services.autotask import models


class AutotaskService(ServiceBase):
    name = "autotask"
    db = Database()
    outbox = OutboxRelay(lambda: models.outbox)
