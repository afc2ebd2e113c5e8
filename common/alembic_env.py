"""The one Alembic env.py body every service's migrations/env.py calls.

Each service migrates only its own schema and keeps its version table there.
"""
import importlib

from alembic import context
from sqlalchemy import create_engine, pool


def run():
    config = context.config
    service = config.get_main_option("idsync_service")
    schema = config.get_main_option("idsync_schema") or service
    metadata = importlib.import_module(config.get_main_option("idsync_models")).metadata
    url = config.get_main_option("sqlalchemy.url")

    def include_object(obj, name, type_, reflected, compare_to):
        # Alembic's own bookkeeping table is not part of the models
        return not (type_ == "table" and name == "alembic_version")

    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, version_table_schema=schema,
                          include_schemas=False, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url, poolclass=pool.NullPool,
                           connect_args={"options": f"-c search_path={schema}"})
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, version_table_schema=schema,
                          include_object=include_object)
        with context.begin_transaction():
            context.run_migrations()
