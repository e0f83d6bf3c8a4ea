"""Shared fixtures: the embedded Postgres (real server, migrated) used by the postgres-marked tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from nano_banana.adapters.postgres import PostgresJobStore
from nano_banana.embedded_pg import EmbeddedPostgres
from nano_banana.migrations import apply_migrations

# Fixture modules shared across suites (each helper module keeps its own servers and fixtures).
# tests.support.hygiene: the session's own temp root, and a check that nothing is left running.
pytest_plugins = ["tests.support.hygiene", "tests.support.devserver", "tests.support.firestore"]

TABLES = (
    "pip_ai_image_messages, pip_ai_image_variants, pip_ai_image_jobs, pip_ai_project_members, pip_ai_webhook_receipts,"
    " pip_ai_sweep_cursors"
)


@pytest.fixture(scope="session")
def embedded_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(Path(tmp_path_factory.mktemp("pg")) / "data")
    apply_migrations(pg.uri)
    yield pg
    pg.stop()


@pytest.fixture
def pg_store(embedded_pg: EmbeddedPostgres) -> Iterator[PostgresJobStore]:
    with psycopg.connect(embedded_pg.uri, autocommit=True) as conn:
        conn.execute(f"truncate {TABLES} cascade")  # type: ignore[arg-type]
    store = PostgresJobStore(embedded_pg.uri, max_size=8)
    yield store
    store.close()
