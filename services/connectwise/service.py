"""The connectwise service. Its behaviour arrives with its issue; today it runs, reports health and metrics,
and relays its outbox."""
from common.db import Database
from common.outbox import OutboxRelay
from common.service_base import ServiceBase
from services.connectwise import models


class ConnectWiseService(ServiceBase):
    name = "connectwise"
    db = Database()
    outbox = OutboxRelay(lambda: models.outbox)
