"""The simulation's own database on an (embedded) Postgres server: the real schema (every migration),
with `now()` in virtual time. Each session's search_path puts schema `sim` before pg_catalog, so the
queries' `now()` is `sim.now()` (the scheduler's clock, kept in `sim.clock`); column defaults that read
the wall clock are pointed at it too. Only this database is changed: the tests' own stays as shipped."""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from nano_banana.migrations import apply_migrations

DBNAME = "nano_banana_sim"
# One actor's statement runs at a time, and every store method is one transaction that ends before the
# scheduler switches actors, so no statement should ever wait on a lock; if one does, it fails fast
# (lock_timeout) as an outage would, instead of hanging the baton.
OPTIONS = "-c search_path=sim,pg_catalog,public -c lock_timeout=200ms"

_CLOCK = """
create schema if not exists sim;
create table if not exists sim.clock (at timestamptz not null);
insert into sim.clock select '2030-01-01T00:00:00Z' where not exists (select 1 from sim.clock);
create or replace function sim.now() returns timestamptz language sql stable as 'select at from sim.clock';
"""


def prepare(server_uri: str) -> str:
    """Create (once) and migrate the simulation database; returns its conninfo."""
    admin = conninfo_to_dict(server_uri)
    with psycopg.connect(server_uri, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (DBNAME,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(DBNAME)))
    plain = make_conninfo(**{**admin, "dbname": DBNAME})
    apply_migrations(plain)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(_CLOCK)
        rows = conn.execute(
            """select table_name, column_name from information_schema.columns
               where table_schema = 'public' and table_name like 'pip_ai_%%'
                 and (column_default like '%%now()%%' or column_default like '%%clock_timestamp()%%')"""
        ).fetchall()
        for table, column in rows:
            conn.execute(
                sql.SQL("alter table public.{} alter column {} set default sim.now()").format(
                    sql.Identifier(table), sql.Identifier(column)
                )
            )
    return make_conninfo(plain, options=OPTIONS)


def tables(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    """Every table of the service (`pip_ai_*`), newer ones included."""
    rows = conn.execute(
        "select tablename from pg_tables where schemaname = 'public' and tablename like 'pip_ai_%%' order by 1"
    ).fetchall()
    return [str(r[0]) for r in rows]


def reset(conn: psycopg.Connection[tuple[object, ...]], start: datetime) -> None:
    names = sql.SQL(", ").join(sql.Identifier("public", t) for t in tables(conn))
    conn.execute(sql.SQL("truncate {} cascade").format(names))
    set_clock(conn, start)


def set_clock(conn: psycopg.Connection[tuple[object, ...]], at: datetime) -> None:
    conn.execute("update sim.clock set at = %s", (at,))
