"""Plain pytest does not monkey-patch eventlet (nameko 2.14 stopped doing it): do it first,
and make psycopg2 green, as the services' runner does."""
import common  # noqa: F401  (quiets eventlet's deprecation notice before eventlet is imported)
import eventlet

eventlet.monkey_patch()

from common import green  # noqa: E402

green.make_green()


def pytest_collection_modifyitems(config, items):
    """Everything under tests/integration needs the project's PostgreSQL and RabbitMQ: mark it so
    `make test-unit` (-m "not integration") leaves it out."""
    import pytest

    for item in items:
        if "/tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
