"""The processes of the product and where they listen (docs/ports.md says the same).

IDSYNC_PORT_OFFSET moves every port at once, so the test stack can run beside `make up`.
"""
import os

SERVICES = {
    # name: (python module of the service class, HTTP port for /health and /metrics)
    "marketplace": ("services.marketplace.service:MarketplaceService", 8701),
    "mapping": ("services.mapping.service:MappingService", 8702),
    "autotask": ("services.autotask.service:AutotaskService", 8703),
    "connectwise": ("services.connectwise.service:ConnectWiseService", 8704),
    "reporting": ("services.reporting.service:ReportingService", 8705),
    "migration": ("services.migration.service:MigrationService", 8706),
    "gateway": ("gateway.service:GatewayService", 8000),
}

SIMULATORS = {
    "sim-marketplace": ("simulators.marketplace", 8601),
    "sim-autotask": ("simulators.autotask", 8602),
    "sim-connectwise": ("simulators.connectwise", 8603),
}

SCHEMAS = list(SERVICES)  # one schema per service, named after it


def role_for(service):
    return f"idsync_{service}"


def migrations_dir(service):
    return "gateway/migrations" if service == "gateway" else f"services/{service}/migrations"


def models_module(service):
    return "gateway.models" if service == "gateway" else f"services.{service}.models"


def port_offset():
    return int(os.environ.get("IDSYNC_PORT_OFFSET", "0"))


def http_port(name):
    base = SERVICES[name][1] if name in SERVICES else SIMULATORS[name][1]
    return base + port_offset()
