"""Row level security the way Supabase's PostgREST and Realtime use it: a database prepared like a Supabase
project (its roles, default privileges and auth.uid(), tests/fixtures/supabase_platform.sql), our
migrations on top, then requests as PostgREST makes them — logged in as `authenticator`, `set local role
anon|authenticated`, the JWT's claims in `request.jwt.claims`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.embedded_pg import EmbeddedPostgres
from nano_banana.migrations import apply_migrations
from tests.support.new_jobs import new_job

pytestmark = pytest.mark.postgres
PLATFORM = Path(__file__).resolve().parents[2] / "fixtures" / "supabase_platform.sql"

# What the builder reads of a job (and Realtime sends it): everything but another member's retry key and
# request fingerprint, and when a same-key retry was answered with it (service bookkeeping).
HIDDEN = {"idempotency_key", "request_hash", "replayed_at"}


@dataclass
class Supabase:
    owner_uri: str  # the service's connection (the tables' owner)
    api_uri: str  # PostgREST's login role
    project: uuid.UUID
    member: uuid.UUID
    other_member: uuid.UUID
    stranger: uuid.UUID
    job_id: uuid.UUID


@pytest.fixture(scope="module")
def supabase(embedded_pg: EmbeddedPostgres) -> Iterator[Supabase]:
    name = f"supabase_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(embedded_pg.uri, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    owner_uri = make_conninfo(embedded_pg.uri, dbname=name)
    try:
        with psycopg.connect(owner_uri, autocommit=True) as conn:
            conn.execute(PLATFORM.read_text())  # type: ignore[arg-type]  # a trusted file from the repo
        apply_migrations(owner_uri)
        store = PostgresJobStore(owner_uri, max_size=2)
        project, member, other, stranger = (uuid.uuid4() for _ in range(4))
        store.add_member(project, member)
        store.add_member(project, other)
        job = store.create_job(new_job(project, other, idempotency_key="other-members-retry-key"))
        assert job is not None
        store.close()
        yield Supabase(
            owner_uri, make_conninfo(owner_uri, user="authenticator"), project, member, other, stranger, job.id
        )
    finally:
        with psycopg.connect(embedded_pg.uri, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def as_role(sb: Supabase, role: str, user: uuid.UUID | None, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    """One PostgREST request: its own transaction, the role and claims set locally, then rolled back."""
    with psycopg.connect(sb.api_uri) as conn, conn.transaction(force_rollback=True):
        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
        claims = {"role": role, **({"sub": str(user)} if user else {})}
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        cur = conn.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else [(cur.rowcount,)]


def test_nobody_outside_can_ask_about_another_users_membership(supabase: Supabase) -> None:
    """/rest/v1/rpc/pip_ai_can_access_project answered for any (project, user): anon or a signed-in user
    learned who belongs to which project."""
    query = "select public.pip_ai_can_access_project(%s, %s)"
    for role, user in (("anon", None), ("authenticated", supabase.stranger), ("authenticated", supabase.member)):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            as_role(supabase, role, user, query, (supabase.project, supabase.other_member))
    # The service (the owner's connection) still asks it for anyone.
    with psycopg.connect(supabase.owner_uri) as conn:
        assert conn.execute(query, (supabase.project, supabase.other_member)).fetchone() == (True,)


def test_no_security_definer_function_in_an_exposed_schema_is_callable_by_clients(supabase: Supabase) -> None:
    with psycopg.connect(supabase.owner_uri) as conn:
        rows = conn.execute(
            """
            select p.oid::regprocedure::text, r.rolname
            from pg_proc p join pg_namespace n on n.oid = p.pronamespace, pg_roles r
            where n.nspname in ('public', 'graphql_public') and p.prosecdef
              and r.rolname in ('anon', 'authenticated')
              and has_function_privilege(r.oid, p.oid, 'execute')
            """
        ).fetchall()
    assert rows == []


def test_members_read_their_projects_jobs_strangers_and_anon_nothing(supabase: Supabase) -> None:
    count = "select count(*) from public.pip_ai_image_jobs"
    assert as_role(supabase, "authenticated", supabase.member, count) == [(1,)]
    assert as_role(supabase, "authenticated", supabase.stranger, count) == [(0,)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_role(supabase, "anon", None, count)
    for table in ("pip_ai_image_messages", "pip_ai_image_variants"):
        stranger = as_role(supabase, "authenticated", supabase.stranger, f"select count(*) from public.{table}")
        assert stranger == [(0,)], table
    assert as_role(supabase, "authenticated", supabase.member, "select count(*) from public.pip_ai_image_messages") == [
        (1,)
    ]


def test_another_members_retry_key_and_request_hash_stay_hidden(supabase: Supabase) -> None:
    for column in sorted(HIDDEN):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            as_role(supabase, "authenticated", supabase.member, f"select {column} from public.pip_ai_image_jobs")
    row = as_role(
        supabase,
        "authenticated",
        supabase.member,
        "select id, status, prompt, deadline_at from public.pip_ai_image_jobs where id = %s",
        (supabase.job_id,),
    )
    assert [r[0] for r in row] == [supabase.job_id]


def test_realtime_sends_the_builder_every_column_but_the_hidden_ones(supabase: Supabase) -> None:
    """Realtime's postgres_changes (supabase/walrus `realtime.apply_rls`) keeps, per subscriber role, the
    columns `has_column_privilege(role, table, column, 'SELECT')` allows, and refuses a table whose primary
    key the role cannot select (Error 401). This asks Postgres the same question."""
    query = """
        select c.relname, a.attname, has_column_privilege('authenticated', c.oid, a.attname, 'SELECT')
        from pg_attribute a join pg_class c on c.oid = a.attrelid
        where c.oid in ('public.pip_ai_image_jobs'::regclass, 'public.pip_ai_image_variants'::regclass)
          and a.attnum > 0 and not a.attisdropped
    """
    with psycopg.connect(supabase.owner_uri) as conn:
        rows = conn.execute(query).fetchall()
        published = {r[0] for r in conn.execute("select tablename from pg_publication_tables").fetchall()}
    assert {"pip_ai_image_jobs", "pip_ai_image_variants"} <= published
    hidden = {(table, column) for table, column, visible in rows if not visible}
    assert hidden == {("pip_ai_image_jobs", column) for column in HIDDEN}
    visible = {(table, column) for table, column, ok in rows if ok}
    # What the builder filters on and the row check needs.
    assert {
        ("pip_ai_image_jobs", "id"),
        ("pip_ai_image_jobs", "project_id"),
        ("pip_ai_image_jobs", "status"),
    } <= visible
    assert {("pip_ai_image_variants", "id"), ("pip_ai_image_variants", "job_id")} <= visible


def test_clients_change_nothing(supabase: Supabase) -> None:
    """Supabase's default privileges grant anon/authenticated every privilege on new tables; TRUNCATE is not
    subject to RLS. Writes go through the service only."""
    for role, user in (("anon", None), ("authenticated", supabase.member)):
        for statement in (
            "truncate public.pip_ai_image_jobs cascade",
            "update public.pip_ai_image_jobs set status = 'canceled'",
            "insert into public.pip_ai_project_members (project_id, user_id) values (gen_random_uuid(), auth.uid())",
            "delete from public.pip_ai_webhook_receipts",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                as_role(supabase, role, user, statement)


def test_the_migration_ledger_is_out_of_reach(supabase: Supabase) -> None:
    """nano_banana_schema_migrations sat in `public` without RLS: with Supabase's default grants anon could
    read it and delete it (and the next `migrate` would re-apply everything)."""
    for role, user in (("anon", None), ("authenticated", supabase.member)):
        for statement in (
            "select count(*) from public.nano_banana_schema_migrations",
            "delete from public.nano_banana_schema_migrations",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                as_role(supabase, role, user, statement)
    with psycopg.connect(supabase.owner_uri) as conn:
        rls = conn.execute(
            "select relrowsecurity from pg_class where oid = 'public.nano_banana_schema_migrations'::regclass"
        ).fetchone()
    assert rls == (True,)


def test_no_client_role_holds_a_write_privilege_on_any_of_our_tables(supabase: Supabase) -> None:
    """Every table our migrations create in `public` (now or later): Supabase's default privileges grant
    anon/authenticated everything on it, and TRUNCATE, REFERENCES and TRIGGER ignore RLS. A new table
    needs `revoke all ... from anon, authenticated` (and a grant of what the builder reads)."""
    with psycopg.connect(supabase.owner_uri) as conn:
        granted = conn.execute(
            """
            select c.relname, r.rolname, p.privilege
            from pg_class c join pg_namespace n on n.oid = c.relnamespace,
                 pg_roles r,
                 unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'])
                   as p(privilege)
            where n.nspname = 'public' and c.relkind in ('r', 'v', 'm', 'p')
              and (c.relname like 'pip\\_ai\\_%' or c.relname like 'nano\\_banana\\_%')
              and r.rolname in ('anon', 'authenticated')
              and has_table_privilege(r.oid, c.oid, p.privilege)
            """
        ).fetchall()
    allowed = {
        (table, "authenticated", "SELECT")
        for table in ("pip_ai_project_members", "pip_ai_image_variants", "pip_ai_image_messages")
    }
    assert set(granted) <= allowed
