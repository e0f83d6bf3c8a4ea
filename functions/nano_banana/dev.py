"""`nano-banana`: the all-in-one local server (`dev`), `dev-token`, `migrate`, and `erase-user` (which runs on
whatever stack the environment configures: the production one with the deployed functions' settings).

`dev` serves every function in one process on the embedded defaults: the API, the callback, the task
handlers, signed local blob URLs, and the studio page. Dev-only routes (the studio's sign-in, blob
serving) are registered here and never exist in the deployed functions (functions/main.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import textwrap
import threading
import uuid
from pathlib import Path
from typing import Any

STATIC_DIR = Path(__file__).resolve().parent / "static"


def _dev_identity(data_dir: Path) -> tuple[uuid.UUID, uuid.UUID]:
    """A stable local user and project, kept in the data dir so a restart keeps the gallery."""
    path = data_dir / "dev-identity.json"
    if path.exists():
        saved = json.loads(path.read_text())
        return uuid.UUID(saved["userId"]), uuid.UUID(saved["projectId"])
    user_id, project_id = uuid.uuid4(), uuid.uuid4()
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"userId": str(user_id), "projectId": str(project_id)}))
    return user_id, project_id


def create_app(rt: Any) -> Any:
    """The local Flask app: main.py's entry points plus the dev-only routes."""
    from flask import Flask, Response, request, send_from_directory

    from nano_banana import auth, http, tasks
    from nano_banana.adapters.blobs_local import LocalBlobStore
    from nano_banana.errors import NanoBananaError, NotFound
    from nano_banana.http import error_response

    settings = rt.settings
    app = Flask("nano_banana_dev", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = None  # the API streams and caps bodies itself

    @app.route("/", methods=["GET"])
    def studio() -> Response:
        return send_from_directory(STATIC_DIR, "index.html")

    @app.route("/static/<path:name>", methods=["GET"])
    def static_file(name: str) -> Response:
        return send_from_directory(STATIC_DIR, name)

    if settings.embedded:

        @app.route("/api/nano-banana/dev/session", methods=["POST"])
        def dev_session() -> Response:
            user_id, project_id = _dev_identity(settings.data_dir)
            rt.services.store.add_member(project_id, user_id)
            token = auth.issue_dev_token(
                settings.jwt_secret.get_secret_value(), user_id, audience=settings.jwt_audience
            )
            body = {
                "token": token,
                "userId": str(user_id),
                "projectId": str(project_id),
                "expiresAt": auth.dev_token_expiry().isoformat(),
            }
            return Response(json.dumps(body), mimetype="application/json", headers={"Cache-Control": "no-store"})

    blobs = rt.services.blobs

    @app.route("/blobs/<path:path>", methods=["GET", "PUT"])
    def blob(path: str) -> Response:
        try:
            if not isinstance(blobs, LocalBlobStore):
                raise NotFound("blobs are served by the storage backend")
            method = request.method
            if not blobs.verify_signature(method, path, request.args.get("exp", ""), request.args.get("sig", "")):
                raise NotFound("no such blob, or the link expired")
            if method == "PUT":
                data = request.stream.read(settings.max_file_bytes + 1)
                if len(data) > settings.max_file_bytes:
                    from nano_banana.errors import FileTooLarge

                    raise FileTooLarge("upload is too large")
                blobs.put(path, data, request.mimetype or "application/octet-stream")
                return Response(status=200)
            info = blobs.stat(path)
            if info is None:
                raise NotFound("no such blob")
            data = blobs.get(path, max_bytes=max(info.size, 1))
            return Response(
                data,
                mimetype=info.content_type or "application/octet-stream",
                headers={"Cache-Control": "private, max-age=300"},
            )
        except NanoBananaError as exc:
            return error_response(exc)

    @app.route("/api/nano-banana/callback", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def callback() -> Response:
        from nano_banana import callback as callbacks

        return callbacks.handle(rt.services, request)

    @app.route("/tasks/<name>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def task(name: str) -> Response:
        if name not in ("generate", "expire", "sweep"):
            return error_response(NotFound("no such task handler"))
        return tasks.handle_task(rt.services, request, name)

    @app.route("/healthz", methods=["GET"])
    @app.route("/readyz", methods=["GET"])
    # OPTIONS reaches the API like every method does in the Functions Framework (CORS preflights).
    @app.route("/api/nano-banana", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
    @app.route("/api/nano-banana/<path:rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
    def api(rest: str = "") -> Response:
        return http.handle(rt.api, request)

    @app.errorhandler(404)
    @app.errorhandler(405)
    def unrouted(_: Exception) -> Response:
        """Paths Flask's converters cannot match (`<path:…>` stops at a newline: `/jobs/%0A`) and methods a
        rule does not list get the API's JSON error, as in the Functions Framework, never Flask's HTML page."""
        if request.path.startswith("/api/nano-banana"):
            return http.handle(rt.api, request)
        return error_response(NotFound("no such route", details={"path": request.path[:200]}))

    return app


def serve(args: argparse.Namespace) -> int:
    from werkzeug.serving import make_server

    import main

    rt = main.runtime()
    rt.warm_up_reads()  # a long-running server has no cold requests to spare: warm everything now
    rt.warm_up_writes()
    settings = rt.settings
    app = create_app(rt)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # our logs are JSON lines; no plain access log
    server = make_server(settings.host, settings.port, app, threaded=True)
    stopping = threading.Event()

    def stop(*_: object) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    url = settings.base_url
    print(
        f"\n  Nano Banana is running at {url}/  (studio page)\n"
        f"  API: {url}/api/nano-banana/...   health: {url}/healthz\n"
        f"  Data: {settings.data_dir.resolve()}  (embedded Postgres, local blobs)\n"
        f"  A token for curl: NANO_BANANA_DATA_DIR={shlex.quote(str(settings.data_dir.resolve()))} "
        f".venv/bin/nano-banana dev-token --user <uuid> --project <uuid>\n"
        f"  Ctrl-C stops the server and Postgres.\n",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        rt.close()
        print("  stopped cleanly.", file=sys.stderr, flush=True)
    # A task the queue gave up waiting for would hold the interpreter's exit (it joins pool threads):
    # everything is closed and flushed, so leave now.
    sys.stdout.flush()
    os._exit(0)


def dev_token(args: argparse.Namespace) -> int:
    from nano_banana import auth
    from nano_banana.adapters.postgres import PostgresJobStore
    from nano_banana.embedded_pg import EmbeddedPostgres
    from nano_banana.migrations import apply_migrations
    from nano_banana.settings import load_core_settings

    settings = load_core_settings()  # a token needs the database and the JWT secret, nothing else
    try:
        user_id, project_id = uuid.UUID(args.user), uuid.UUID(args.project)
    except ValueError:
        print("--user and --project must be UUIDs", file=sys.stderr)
        return 2
    pg: EmbeddedPostgres | None = None
    if settings.database_url is not None:
        conninfo = settings.database_url.get_secret_value()
    else:
        pgdata = settings.data_dir / "postgres"
        was_running = (pgdata / "postmaster.pid").exists()
        explicit = "NANO_BANANA_DATA_DIR" in os.environ
        if not was_running and (not explicit or not (pgdata / "PG_VERSION").exists()):
            # Minting into a database no server uses makes a token the running server answers with 403
            # ("not a member"): refuse, and say where the server's database is to be found.
            where = "the data dir" if explicit else "the default data dir (NANO_BANANA_DATA_DIR unset)"
            print(
                f"nano-banana dev-token: no dev server's database is running in {where} "
                f"{pgdata.parent.resolve()}. Start `make dev` first, or set NANO_BANANA_DATA_DIR to the "
                "`Data:` directory the dev server's banner prints (the banner shows the whole command).",
                file=sys.stderr,
            )
            return 2
        pg = EmbeddedPostgres(pgdata)
        conninfo = pg.uri
        apply_migrations(conninfo)
        if was_running:
            pg = None  # `make dev` owns it; leave it running
    store = PostgresJobStore(conninfo, connect_timeout_s=settings.db_connect_timeout_s, max_size=1)
    try:
        store.add_member(project_id, user_id)
    finally:
        store.close()
        if pg is not None:
            pg.stop()
    print(
        auth.issue_dev_token(
            settings.jwt_secret.get_secret_value(), user_id, audience=settings.jwt_audience, ttl_s=args.ttl
        )
    )
    return 0


def migrate(args: argparse.Namespace) -> int:
    from nano_banana.embedded_pg import EmbeddedPostgres
    from nano_banana.migrations import apply_migrations
    from nano_banana.settings import load_core_settings

    settings = load_core_settings()
    if settings.database_url is not None:
        applied = apply_migrations(settings.database_url.get_secret_value())
    else:
        pg = EmbeddedPostgres(settings.data_dir / "postgres")
        applied = apply_migrations(pg.uri)
    print(json.dumps({"applied": applied}))
    return 0


# What decides which stack erase-user touches (Settings fields; --help lists their env vars). Read on their
# own, before anything else is validated or built, so a refusal comes before any connection attempt.
ERASURE_TARGETS = (
    "database_url",
    "data_dir",
    "storage",
    "supabase_url",
    "bucket",
    "limits",
    "gcp_project",
    "firestore_database",
    "firestore_collection_prefix",
    "queue",
    "tasks_queue",
    "gcp_location",
)
# Read too, and required with a database URL / Supabase Storage (the settings refuse to start without them).
ERASURE_SECRETS = ("jwt_secret", "supabase_service_key")


def env_names(field: str) -> list[str]:
    """The environment variables a Settings field is read from (its validation aliases)."""
    from pydantic import AliasChoices

    from nano_banana.settings import Settings

    alias = Settings.model_fields[field].validation_alias
    return [str(a) for a in alias.choices] if isinstance(alias, AliasChoices) else [str(alias)]


def erasure_targets() -> Any:
    """Only the ERASURE_TARGETS settings, from the environment: nothing is connected to or created."""
    from pydantic import create_model
    from pydantic_settings import BaseSettings, SettingsConfigDict

    from nano_banana.settings import Settings

    class Base(BaseSettings):
        model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True, frozen=True)

    fields: Any = {
        name: (Settings.model_fields[name].annotation, Settings.model_fields[name]) for name in ERASURE_TARGETS
    }
    return create_model("ErasureTargets", __base__=Base, **fields)()


def describe_backends(targets: Any) -> dict[str, str]:
    """Where erase-user will delete: the database host (never its credentials), Storage, limits, queue."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    if targets.database_url is None:
        database = f"the embedded local Postgres in {targets.data_dir / 'postgres'}"
    else:
        try:
            info = conninfo_to_dict(targets.database_url.get_secret_value())
            host = f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}/{info.get('dbname') or ''}"
        except ProgrammingError:  # not a connection string: connecting says so later
            host = "(unparsable URL)"
        database = f"Postgres at {host}"
    if targets.storage == "supabase":
        storage = f"Supabase Storage, bucket {targets.bucket} at {targets.supabase_url}"
    else:
        storage = f"local blobs in {targets.data_dir / 'blobs'}"
    if targets.limits == "firestore":
        project = targets.gcp_project or "the credentials' project"
        emulator = os.environ.get("FIRESTORE_EMULATOR_HOST")
        limits = (
            f"Firestore database {targets.firestore_database} of {project}, "
            f"{targets.firestore_collection_prefix}_* collections" + (f" (emulator at {emulator})" if emulator else "")
        )
    else:
        limits = "in memory (this process only: no rate window anywhere else is deleted)"
    if targets.queue == "cloudtasks":
        queue = f"Cloud Tasks queue {targets.tasks_queue} in {targets.gcp_location}"
    else:
        queue = "inline (this process only)"
    return {"database": database, "storage": storage, "limits": limits, "queue": queue}


def _half_erasure(targets: Any) -> list[str]:
    """The local defaults an erasure on a real database would silently leave untouched."""
    if targets.database_url is None:
        return []
    left = []
    if targets.storage == "local":
        left.append(f"Storage is the local default ({'/'.join(env_names('storage'))} is not supabase)")
    if targets.limits == "memory":
        left.append(f"limits are the local default ({'/'.join(env_names('limits'))} is not firestore)")
    return left


def erase_user(args: argparse.Namespace) -> int:
    """Delete everything of one user's, on whatever stack the environment configures (the deployed one
    with the functions' settings), and print what went as JSON."""
    from pydantic import ValidationError

    from nano_banana import bootstrap, usecases
    from nano_banana.settings import load_settings

    try:
        user_id = uuid.UUID(args.user)
    except ValueError:
        print("--user must be a UUID", file=sys.stderr)
        return 2
    try:
        targets = erasure_targets()
    except ValidationError as exc:
        print(f"erase-user: invalid settings: {exc}", file=sys.stderr)
        return 2
    backends = describe_backends(targets)
    print("erase-user will touch:", file=sys.stderr)
    for name, where in backends.items():
        print(f"  {name}: {where}", file=sys.stderr)
    left = _half_erasure(targets)
    if left and not args.local_storage:
        print(
            f"erase-user: refusing: the database is not the local embedded one, but {' and '.join(left)}: the "
            "rows would go and the user's images and rate window would stay. Run it with the deployed "
            "functions' settings (docs/deploy.md, \"Erasing a user's data\"), or pass --local-storage if local "
            "Storage and limits are intended (a test database). Nothing was changed or connected to.",
            file=sys.stderr,
            flush=True,
        )
        return 2
    try:
        settings = load_settings()
    except ValidationError as exc:
        print(f"erase-user: invalid settings: {exc}", file=sys.stderr)
        return 2
    # The report owns stdout. Everything else written to it while the stack runs (log lines, including the
    # ones emitted while bootstrap builds the adapters, and whatever a client library prints) goes to stderr.
    sys.stdout.flush()
    report_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    shared_pg = settings.embedded and (settings.data_dir / "postgres" / "postmaster.pid").exists()
    rt = bootstrap.build(settings)
    if shared_pg:  # `make dev` owns the embedded server: leave it running
        pg: Any = rt.services.extras["embedded_postgres"]
        rt.services.closers.remove(pg.stop)
    try:
        erasure = usecases.erase_user(rt.services, user_id, dry_run=args.dry_run)
    finally:
        rt.close()
    report = {
        "userId": str(user_id),
        "dryRun": erasure.dry_run,
        "backends": backends,
        "jobs": len(erasure.job_ids),
        "jobIds": [str(j) for j in erasure.job_ids],
        "blobs": len(erasure.blobs),
        "paths": erasure.blobs,
        "rateLimits": "kept (dry run)" if erasure.dry_run else "deleted",
        # Storage failed midway: the rows are gone; the sweep deletes the images within minutes.
        "blobsDeferred": erasure.deferred,
        # Receipts hold a webhook id and a time, nothing of the user's; the sweep prunes them within minutes.
        "webhookReceipts": "none attributable",
    }
    sys.stdout.flush()
    print(json.dumps(report, indent=2), file=report_out, flush=True)
    return 3 if erasure.deferred else 0


def _erase_user_epilog() -> str:
    def names(fields: tuple[str, ...]) -> str:
        return ", ".join("/".join(env_names(f)) for f in fields)

    return (
        "It runs on whatever stack the environment configures: for a deployed service, the deployed functions'\n"
        'environment and secrets (docs/deploy.md, "Erasing a user\'s data"). Before anything connects it prints\n'
        "(stderr) the database host, Storage backend and bucket, limits backend and queue it will touch; the JSON\n"
        "report (stdout) names them too.\n\n"
        + textwrap.fill(f"Settings that decide what it touches: {names(ERASURE_TARGETS)}.", 104)
        + "\n"
        + textwrap.fill(f"Also read: {names(ERASURE_SECRETS)}, and the rest of the functions' settings (README).", 104)
        + "\n\n"
        "With a database URL (not the local embedded Postgres) it refuses (exit 2), before connecting, while\n"
        "Storage or limits are the local defaults, unless --local-storage says so on purpose.\n"
        "Exit codes: 0 done, 2 refused or bad input, 3 rows deleted but some images left for the sweep."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nano-banana",
        description="Nano Banana job service: the local server and its tools (dev, dev-token, migrate), and "
        "erase-user, which runs on whatever stack the environment configures (the production one with the "
        "deployed functions' settings).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dev", help="serve everything on the embedded defaults").set_defaults(run=serve)
    token = sub.add_parser("dev-token", help="make a user a project member and print a bearer token")
    token.add_argument("--user", required=True)
    token.add_argument("--project", required=True)
    token.add_argument("--ttl", type=int, default=12 * 3600, help="seconds (default 12 h)")
    token.set_defaults(run=dev_token)
    sub.add_parser("migrate", help="apply infra/supabase/migrations").set_defaults(run=migrate)
    erase = sub.add_parser(
        "erase-user",
        help="delete a user's jobs, images and rate window (production too); prints what went",
        description="Delete a user's jobs, threads, images, uploads and rate window; print what went as JSON.",
        epilog=_erase_user_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    erase.add_argument("--user", required=True, help="the user's id (the token's sub)")
    erase.add_argument("--dry-run", action="store_true", help="report what would be deleted; change nothing")
    erase.add_argument(
        "--local-storage",
        action="store_true",
        help="a database URL with local Storage and/or in-memory limits is intended (a test database)",
    )
    erase.set_defaults(run=erase_user)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
