"""JSON-lines logging that carries tenant_id and event_id, and never a secret."""
import contextlib
import contextvars
import json
import logging
import re
import sys
import time

_tenant = contextvars.ContextVar("tenant_id", default=None)
_event = contextvars.ContextVar("event_id", default=None)

# Values that must never reach a log line whatever a caller passes in.
_SECRET = re.compile(
    r"(?i)(authorization|password|secret|private_?key|token|apikey|x-subscription-key)"
    r"(['\"]?\s*[:=]\s*['\"]?)([^'\",\s}]+)"
)


def redact(text):
    return _SECRET.sub(lambda m: m.group(1) + m.group(2) + "***", text)


@contextlib.contextmanager
def log_context(tenant_id=None, event_id=None):
    t1 = _tenant.set(tenant_id) if tenant_id is not None else None
    t2 = _event.set(event_id) if event_id is not None else None
    try:
        yield
    finally:
        if t2 is not None:
            _event.reset(t2)
        if t1 is not None:
            _tenant.reset(t1)


class JsonLineFormatter(logging.Formatter):
    def __init__(self, process_name):
        super().__init__()
        self.process_name = process_name

    def format(self, record):
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + ".%03dZ" % record.msecs,
            "level": record.levelname.lower(),
            "process": self.process_name,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        tenant_id = getattr(record, "tenant_id", None) or _tenant.get()
        event_id = getattr(record, "event_id", None) or _event.get()
        if tenant_id is not None:
            entry["tenant_id"] = tenant_id
        if event_id is not None:
            entry["event_id"] = event_id
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def setup_logging(process_name, level="INFO", stream=None):
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonLineFormatter(process_name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kombu/amqp chatter at INFO hides the product's own lines
    for noisy in ("amqp", "kombu", "nameko", "urllib3", "werkzeug", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # nameko logs every expected API error (401, 404...) as a warning with a traceback
    logging.getLogger("nameko.containers").setLevel(logging.ERROR)
