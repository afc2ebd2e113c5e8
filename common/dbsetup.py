"""Create the database, one schema and one least-privilege role per service, then migrate.

Roles: `idsync_owner` owns the database and every schema and runs migrations; each service
connects as `idsync_<service>`, which may read and write the tables of its own schema only
(no DDL, no other schema, not superuser). Run: python -m common.dbsetup [--database NAME]
"""
import argparse
import contextlib
import os
import pathlib

import psycopg2
from alembic import command
from alembic.config import Config as AlembicConfig
from psycopg2 import sql

from common.secrets import ROOT, db_password, ensure_secrets
from common.topology import SERVICES, migrations_dir, models_module, role_for

PG_HOST = os.environ.get("IDSYNC_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("IDSYNC_PG_PORT", "5433"))
PG_SOCKET = os.environ.get("IDSYNC_PG_SOCKET",
                           os.path.join(os.environ.get("IDSYNC_INFRA_DIR", str(ROOT / ".run")), "pg", "sock"))
OWNER = "idsync_owner"


@contextlib.contextmanager
def superuser_cursor(dbname="postgres"):
    # autocommit: CREATE DATABASE refuses to run inside a transaction block
    conn = psycopg2.connect(host=PG_SOCKET, port=PG_PORT, user="postgres", dbname=dbname)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def owner_url(database):
    return f"postgresql://{OWNER}:{os.environ['IDSYNC_DB_OWNER_PASSWORD']}@{PG_HOST}:{PG_PORT}/{database}"


def service_url(service, database):
    return f"postgresql://{role_for(service)}:{db_password(service)}@{PG_HOST}:{PG_PORT}/{database}"


def _ensure_role(cur, name, password):
    cur.execute("select 1 from pg_roles where rolname = %s", (name,))
    verb = "alter" if cur.fetchone() else "create"
    cur.execute(sql.SQL(verb + " role {} login password %s nosuperuser nocreatedb nocreaterole noinherit")
                .format(sql.Identifier(name)), (password,))


def ensure_database(database):
    with superuser_cursor() as cur:
        _ensure_role(cur, OWNER, os.environ["IDSYNC_DB_OWNER_PASSWORD"])
        for service in SERVICES:
            _ensure_role(cur, role_for(service), db_password(service))
        cur.execute("select 1 from pg_database where datname = %s", (database,))
        if not cur.fetchone():
            cur.execute(sql.SQL("create database {} owner {} encoding 'UTF8'").format(
                sql.Identifier(database), sql.Identifier(OWNER)))
        cur.execute(sql.SQL("revoke all on database {} from public").format(sql.Identifier(database)))
        for service in SERVICES:
            cur.execute(sql.SQL("grant connect on database {} to {}").format(
                sql.Identifier(database), sql.Identifier(role_for(service))))
    with superuser_cursor(database) as cur:
        cur.execute("revoke all on schema public from public")
        for service in SERVICES:
            role, schema = sql.Identifier(role_for(service)), sql.Identifier(service)
            cur.execute(sql.SQL("create schema if not exists {} authorization {}").format(schema, sql.Identifier(OWNER)))
            cur.execute(sql.SQL("revoke all on schema {} from public").format(schema))
            cur.execute(sql.SQL("grant usage on schema {} to {}").format(schema, role))
            cur.execute(sql.SQL("alter default privileges for role {} in schema {} "
                                "grant select, insert, update, delete on tables to {}").format(
                sql.Identifier(OWNER), schema, role))
            cur.execute(sql.SQL("alter default privileges for role {} in schema {} "
                                "grant usage, select on sequences to {}").format(sql.Identifier(OWNER), schema, role))


def grant_existing(database):
    """Default privileges cover new tables; this covers tables made before them."""
    with superuser_cursor(database) as cur:
        for service in SERVICES:
            role, schema = sql.Identifier(role_for(service)), sql.Identifier(service)
            cur.execute(sql.SQL("grant select, insert, update, delete on all tables in schema {} to {}").format(schema, role))
            cur.execute(sql.SQL("grant usage, select on all sequences in schema {} to {}").format(schema, role))


def alembic_config(service, database):
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(ROOT / migrations_dir(service)))
    cfg.set_main_option("sqlalchemy.url", owner_url(database).replace("%", "%%"))
    cfg.set_main_option("idsync_service", service)
    cfg.set_main_option("idsync_models", models_module(service))
    return cfg


def migrate(database):
    for service in SERVICES:
        if (ROOT / migrations_dir(service) / "env.py").exists():
            command.upgrade(alembic_config(service, database), "head")
    grant_existing(database)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", default=os.environ.get("IDSYNC_DB_NAME", "idsync"))
    parser.add_argument("--drop", action="store_true", help="drop the database first (tests)")
    args = parser.parse_args()
    ensure_secrets()
    if args.drop:
        with superuser_cursor() as cur:
            cur.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(args.database)))
    ensure_database(args.database)
    migrate(args.database)
    print(f"database {args.database} ready: schemas {', '.join(SERVICES)}")


if __name__ == "__main__":
    main()
