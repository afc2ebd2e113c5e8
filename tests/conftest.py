"""Plain pytest does not monkey-patch eventlet (nameko 2.14 stopped doing it): do it first,
and make psycopg2 green, as the services' runner does."""
import common  # noqa: F401  (quiets eventlet's deprecation notice before eventlet is imported)
import eventlet

eventlet.monkey_patch()

from common import green  # noqa: E402

green.make_green()
