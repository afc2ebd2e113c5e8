"""What every nameko service exposes: /health, /metrics, and dead-letter RPCs for ops."""
import json

from kombu import Connection
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.dependency_providers import Config
from nameko.extensions import DependencyProvider
from nameko.rpc import rpc
from nameko.web.handlers import http
from werkzeug.wrappers import Response

from common import deadletters, metrics
from common.consumers import ReliableEventHandler


def handler_queues(container):
    return sorted(e.queue.name for e in container.entrypoints if isinstance(e, ReliableEventHandler))


class ContainerInfo(DependencyProvider):
    """Hands a worker its container, so the base can find the service's own queues."""

    def get_dependency(self, worker_ctx):
        return self.container


class ServiceBase:
    """Subclasses declare `db = Database()`."""

    config = Config()
    container_info = ContainerInfo()

    @http("GET", "/health")
    def health(self, request):
        checks = {}
        try:
            self.db.ping()
            checks["database"] = "ok"
        except Exception as exc:  # the reason, not a stack trace
            checks["database"] = f"error: {type(exc).__name__}"
        try:
            with Connection(self.config[AMQP_URI_CONFIG_KEY], connect_timeout=3) as conn:
                conn.ensure_connection(max_retries=1)
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"error: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        body = {"status": "ok" if ok else "degraded", "service": self.name, "checks": checks}
        return Response(json.dumps(body), status=200 if ok else 503, mimetype="application/json")

    @http("GET", "/metrics")
    def metrics(self, request):
        payload, content_type = metrics.exposition()
        return Response(payload, status=200, content_type=content_type)

    @rpc
    def dead_letters(self, limit=100):
        return deadletters.list_dead(self.config[AMQP_URI_CONFIG_KEY], handler_queues(self.container_info), limit)

    @rpc
    def replay_dead_letters(self, limit=1000, event_ids=None):
        return deadletters.replay_dead(self.config[AMQP_URI_CONFIG_KEY], handler_queues(self.container_info),
                                       limit, event_ids)
