"""Applies infra/supabase/migrations/*.sql in order, once each, recording what it applied."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import psycopg

log = logging.getLogger("nano_banana")

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "infra" / "supabase" / "migrations"

_LEDGER = """
create table if not exists public.nano_banana_schema_migrations (
  version text primary key,
  name text not null,
  checksum text not null,
  applied_at timestamptz not null default now()
)
"""


def migration_files(directory: Path = DEFAULT_DIR) -> list[Path]:
    """`<timestamp>_<name>.sql`, sorted by timestamp (the Supabase CLI's order)."""
    return sorted(p for p in directory.glob("*.sql") if p.name.split("_", 1)[0].isdigit())


def apply_migrations(conninfo: str, directory: Path = DEFAULT_DIR) -> list[str]:
    """Apply every migration not yet recorded; returns the versions applied now.
    Serialised by an advisory lock so concurrent starters cannot apply one twice."""
    applied_now: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(7216431)")
        try:
            conn.execute(_LEDGER)
            done = {
                row[0]: row[1] for row in conn.execute("select version, checksum from nano_banana_schema_migrations")
            }
            for path in migration_files(directory):
                version, name = path.stem.split("_", 1)
                sql = path.read_text()
                checksum = hashlib.sha256(sql.encode()).hexdigest()
                if version in done:
                    if done[version] != checksum:
                        log.warning(
                            "migration changed after it was applied",
                            extra={"event": "migration_drift", "version": version},
                        )
                    continue
                with conn.transaction():
                    conn.execute(sql)  # a trusted file from the repo
                    conn.execute(
                        "insert into nano_banana_schema_migrations (version, name, checksum) values (%s, %s, %s)",
                        (version, name, checksum),
                    )
                applied_now.append(version)
                log.info(
                    "migration applied", extra={"event": "migration_applied", "version": version, "migration": name}
                )
        finally:
            conn.execute("select pg_advisory_unlock(7216431)")
    return applied_now
