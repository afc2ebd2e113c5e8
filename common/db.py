"""The database dependency: one engine per service, its schema first on the search_path.

Each service connects as its own role, which can use only its own schema (see common/dbsetup.py),
so "a service never reads another service's schema" is enforced by PostgreSQL, not by manners.
"""
import contextlib

from nameko.extensions import DependencyProvider
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session


def make_engine(uri, schema, pool_size=5):
    return create_engine(
        uri,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"options": f"-c search_path={schema}"},
        future=True,
    )


class Store:
    """What a worker sees: short transactions on the service's engine."""

    def __init__(self, engine):
        self.engine = engine

    @contextlib.contextmanager
    def transaction(self):
        """A session whose work commits together when the block ends, or not at all."""
        session = Session(self.engine, future=True, expire_on_commit=False)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self):
        with self.engine.connect() as conn:
            conn.execute(text("select 1"))


class Database(DependencyProvider):
    """Config: DB_URI and DB_SCHEMA. Pool sized from max_workers so workers never queue on it."""

    def setup(self):
        config = self.container.config
        workers = int(config.get("max_workers", 10))
        self.engine = make_engine(config["DB_URI"], config["DB_SCHEMA"], pool_size=min(workers, 20))
        self.store = Store(self.engine)

    def stop(self):
        self.engine.dispose()

    def kill(self):
        self.engine.dispose()

    def get_dependency(self, worker_ctx):
        return self.store
