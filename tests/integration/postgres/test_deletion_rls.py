"""No one deletes rows through PostgREST: deletion goes through the API, so blobs and slots follow.

Supabase grants `authenticated` every table privilege on `public` by default (its default privileges);
what stops a client is row level security. The local schema grants only SELECT, so this test first grants
what Supabase does, inside a transaction that is rolled back, and then deletes as the job's own creator
with the claims PostgREST sets (`request.jwt.claims`, and the older `request.jwt.claim.sub`).
"""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.embedded_pg import EmbeddedPostgres
from tests.support.new_jobs import new_job

pytestmark = pytest.mark.postgres

TABLES = ("pip_ai_image_jobs", "pip_ai_image_variants", "pip_ai_image_messages", "pip_ai_blob_purges")


def test_a_user_cannot_delete_their_own_rows_directly(
    pg_store: PostgresJobStore, embedded_pg: EmbeddedPostgres
) -> None:
    project, user = uuid.uuid4(), uuid.uuid4()
    pg_store.add_member(project, user)
    job = pg_store.create_job(new_job(project, user))
    assert job is not None
    claims = json.dumps({"sub": str(user), "role": "authenticated", "aud": "authenticated"})
    with psycopg.connect(embedded_pg.uri) as conn, conn.transaction(force_rollback=True):
        conn.execute(f"grant all on {', '.join(TABLES)} to authenticated")  # as Supabase does
        conn.execute("set local role authenticated")
        conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
        conn.execute("select set_config('request.jwt.claim.sub', %s, true)", (str(user),))
        seen = conn.execute("select count(*) from pip_ai_image_jobs where id = %s", (job.id,)).fetchone()
        assert seen == (1,), "the creator can read the row"
        for table, column in (
            ("pip_ai_image_messages", "job_id"),
            ("pip_ai_image_variants", "job_id"),
            ("pip_ai_image_jobs", "id"),
        ):
            deleted = conn.execute(f"delete from {table} where {column} = %s", (job.id,))  # type: ignore[arg-type]
            assert deleted.rowcount == 0, f"{table}: no policy allows a delete"
        assert conn.execute("delete from pip_ai_blob_purges").rowcount == 0
    assert pg_store.get_job(job.id) == job
    assert [m.job_id for m, _ in pg_store.messages(job.thread_id)] == [job.id]
