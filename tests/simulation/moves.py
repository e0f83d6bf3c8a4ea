"""What the world does, each a new actor chosen by the seeded RNG: users' requests (create by upload or
`inputPath`, same-key retries, refine, cancel, delete, erase), the platform's task deliveries (first,
retried and duplicate), sweeps, and the processor's reports (once, duplicated in flight, re-run, late)."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
from flask import Request
from PIL import Image
from werkzeug.test import EnvironBuilder

from nano_banana import callback, usecases, webhooks
from nano_banana.errors import IdempotencyKeyInUse, NanoBananaError, TransientError, Unavailable
from nano_banana.images import inspect_image
from nano_banana.ports import ProcessorJob
from tests.simulation.adapters import Queued
from tests.simulation.scheduler import Actor
from tests.simulation.world import MEMBERS, PROJECTS, SECRET, USERS, Move, World

_PNGS: dict[int, bytes] = {}


def png(shade: int) -> bytes:
    if shade not in _PNGS:
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (shade * 37 % 256, 90, 200)).save(buf, "PNG")
        _PNGS[shade] = buf.getvalue()
    return _PNGS[shade]


def _definite(cause: BaseException | None) -> bool:
    """A database error that is a definite answer (a constraint said no), not an unknown outcome."""
    return isinstance(cause, psycopg.Error) and not isinstance(cause, psycopg.OperationalError | psycopg.InterfaceError)


class Moves:
    def __init__(self, world: World) -> None:
        self.w = world
        self.rng = world.sched.rng
        self.bodies: dict[tuple[uuid.UUID, str], dict[str, Any]] = {}
        self.later = 0  # the next request arrives after this many steps of the others (a race's second party)
        self.reported: list[tuple[ProcessorJob, str]] = []

    # ------------------------------------------------------------ choosing

    def pick(self) -> None:
        """Start one move (sometimes two racing actors)."""
        w = self.w
        choices: list[tuple[int, Callable[[], None]]] = [
            (30, self.create),
            (8, self.refine),
            (4, self.cancel),
            (5, self.delete),
            (1, self.erase),
            (5, self.sweep),
            (3, self.duplicate_delivery),
            (6, self.race),
        ]
        if w.queue.due():
            choices.append((40, self.deliver))
        if w.processor_mode and w.processor.inbox:
            choices.append((25, self.process))
        if w.processor_mode and self.reported:
            choices.append((8, self.report_again))
        total = sum(weight for weight, _ in choices)
        pick = self.rng.uniform(0, total)
        for weight, move in choices:
            pick -= weight
            if pick <= 0:
                move()
                return
        choices[-1][1]()

    # ------------------------------------------------------------ users

    def _user_project(self) -> tuple[uuid.UUID, uuid.UUID]:
        project = self.rng.choice(PROJECTS)
        return self.rng.choice(MEMBERS[project]), project

    def create(self) -> None:
        user, project = self._user_project()
        key = f"k{self.rng.randrange(4)}" if self.rng.random() < 0.6 else None
        body = self.bodies.get((user, key)) if key else None
        if body is None or self.rng.random() < 0.2:
            body = self._new_body(user, project)
            if key:
                self.bodies[(user, key)] = body
        racing = 2 if key and self.rng.random() < 0.5 else 1
        for _ in range(racing):
            self._start_create(user, key, body)

    def _new_body(self, user: uuid.UUID, project: uuid.UUID) -> dict[str, Any]:
        body: dict[str, Any] = {"project": project, "prompt": f"p{self.rng.randrange(1000)}"}
        sources = self._input_paths(user, project) if self.rng.random() < 0.35 else []
        if sources:
            body["input_path"] = self.rng.choice(sources)
        else:
            body["shade"] = self.rng.randrange(50)
        return body

    def _input_paths(self, user: uuid.UUID, project: uuid.UUID) -> list[str]:
        rows = self.w.rows()
        own = [r["input_path"] for r in rows.values() if r["input_path"].startswith(f"inputs/{user}/")]
        variants = [p for r in rows.values() if r["project_id"] == project for p in r["variants"]]
        return sorted(set(own + variants))

    def _start_create(self, user: uuid.UUID, key: str | None, body: dict[str, Any]) -> None:
        svc = self.w.svc
        upload = None
        if "shade" in body:
            data = png(body["shade"])
            upload = usecases.ImageUpload(data, inspect_image(data, max_bytes=10**7, max_pixels=10**7))
        cmd = usecases.CreateJob(
            project_id=body["project"],
            prompt=body["prompt"],
            variant_count=2,
            aspect_ratio=None,
            upload=upload,
            input_path=body.get("input_path"),
            idempotency_key=key,
        )
        detail = {"project": body["project"], "key": key, "prompt": body["prompt"]}
        detail["source"] = body.get("input_path") or f"upload {body.get('shade')}"
        move = Move("create", user, detail)
        self.w.start(move, lambda: usecases.create_job(svc, user, cmd), self._answered(move), later=self._later())

    def _later(self) -> int:
        later, self.later = self.later, 0
        return later

    def race(self) -> None:
        """Two requests about one job at once: its deletion beside a refinement of it or a job made from
        its variant, or a sweep (retention) beside a refinement in an old thread."""
        rows = self.w.rows()
        parents = sorted(j for j, r in rows.items() if r["variants"])
        if not parents:
            return self.create()
        job_id = self.rng.choice(parents)
        row = rows[job_id]
        pick = self.rng.randrange(3)
        self.later = self.rng.choice((0, 2, 5, 10, 20, 40))
        if pick == 0:
            self._start_delete(row["user_id"], job_id)
            self.refine(job_id)
        elif pick == 1:
            self._start_delete(row["user_id"], job_id)
            body = {"project": row["project_id"], "prompt": "from a variant", "input_path": row["variants"][0]}
            self._start_create(self.rng.choice(MEMBERS[row["project_id"]]), None, body)
        else:
            # The requests in flight end, then a day passes: retention has old threads to delete.
            self.w.sched.run_until_idle()
            self.w.sched.advance(timedelta(days=1, hours=1))
            self.w.sched.trace.append("  time passes: 1 day 1 hour")
            self.sweep()
            self.refine(job_id)
        self.later = 0
        return None

    def refine(self, parent: uuid.UUID | None = None) -> None:
        user, project = self._user_project()
        rows = self.w.rows()
        if parent is not None and parent in rows:
            project = rows[parent]["project_id"]
            user = self.rng.choice(MEMBERS[project])
        else:
            parent = None  # gone meanwhile: any variant of the project
        with self.w.cursor() as cur:
            found = cur.execute(
                "select v.job_id, v.id from pip_ai_image_variants v join pip_ai_image_jobs j on j.id = v.job_id"
                " where j.project_id = %s order by v.job_id, v.id",
                (project,),
            ).fetchall()
        found = [f for f in found if parent is None or f[0] == parent]
        if not found:
            return self.create()
        job_id, variant_id = self.rng.choice(found)
        key = f"r{self.rng.randrange(3)}" if self.rng.random() < 0.5 else None
        cmd = usecases.Refine(job_id, variant_id, f"again {self.rng.randrange(100)}", key)
        move = Move("refine", user, {"job": job_id, "key": key, "prompt": cmd.prompt})
        racing = 2 if key and self.rng.random() < 0.3 else 1
        for _ in range(racing):
            self.w.start(
                move, lambda: usecases.refine(self.w.svc, user, cmd), self._answered(move), later=self._later()
            )
        return None

    def _own_job(self, user: uuid.UUID, active_only: bool = False) -> uuid.UUID | None:
        rows = self.w.rows()
        mine = sorted(j for j, r in rows.items() if r["user_id"] == user)
        if active_only:
            mine = [j for j in mine if rows[j]["status"] in ("queued", "running")] or mine
        gone = sorted(self.w.removed)
        pool = mine + gone[-2:]
        return self.rng.choice(pool) if pool else None

    def cancel(self) -> None:
        user, _ = self._user_project()
        if (job_id := self._own_job(user, active_only=True)) is None:
            return self.create()
        move = Move("cancel", user, {"job": job_id})
        self.w.start(move, lambda: usecases.cancel_job(self.w.svc, user, job_id), self._answered(move))
        return None

    def delete(self) -> None:
        user, _ = self._user_project()
        rows = self.w.rows()
        inputs = {r["input_path"] for r in rows.values()}
        used = sorted(j for j, r in rows.items() if r["user_id"] == user and set(r["variants"]) & inputs)
        job_id = self.rng.choice(used) if used and self.rng.random() < 0.5 else self._own_job(user)
        if job_id is None:
            return self.create()
        self._start_delete(user, job_id)
        return None

    def _start_delete(self, user: uuid.UUID, job_id: uuid.UUID) -> None:
        move = Move("delete", user, {"job": job_id})
        self.w.start(move, lambda: usecases.delete_job(self.w.svc, user, job_id), self._answered(move))

    def erase(self) -> None:
        user = self.rng.choice(USERS)
        move = Move("erase", user)
        self.w.start(move, lambda: usecases.erase_user(self.w.svc, user), self._answered(move))

    def _answered(self, move: Move) -> Callable[[Actor], None]:
        faults_before = self.w.plan.total

        def judge(actor: Actor) -> None:
            w = self.w
            error = actor.error
            if error is None:
                created = actor.result
                if isinstance(created, usecases.Created):
                    w.answer(move, created.job.id, "replayed" if created.replayed else "created")
                return
            if isinstance(error, NanoBananaError) and "nothing was" in error.message:
                rows = w.rows()
                for job_id in w.inserted.get(actor.number, []):
                    if job_id in rows:
                        w.violate(
                            1,
                            f"{move.describe()} answered {error.status} {error.code} ({error.message}) but its job"
                            f" {job_id} stays ({rows[job_id]['status']}) and will run: a retry makes a second one",
                        )
            if not isinstance(error, NanoBananaError):
                w.violate(8, f"{move.describe()} raised {type(error).__name__}: {error} (a 500)")
            elif error.status >= 500 and _definite(error.__cause__):
                w.violate(
                    7,
                    f"{move.describe()} answered {error.status} {error.code} ({error.message}) for a definite"
                    f" refusal by the database ({type(error.__cause__).__name__}: {str(error.__cause__)[:120]})",
                    key=f"7 {move.kind} {type(error.__cause__).__name__}",
                )
            elif error.status >= 500 and not isinstance(error, IdempotencyKeyInUse) and w.plan.total == faults_before:
                w.violate(
                    7,
                    f"{move.describe()} answered {error.status} {error.code} ({error.message}) though no fault"
                    " was injected anywhere while it ran: a definite outcome answered as unknown",
                    key=f"7 {move.kind} {error.code}",
                )

        return judge

    # ------------------------------------------------------------ the platform

    def deliver(self) -> None:
        self.start_delivery(self.rng.choice(self.w.queue.due()), duplicate=False)

    def duplicate_delivery(self) -> None:
        tasks = [q for q in self.w.queue.tasks.values() if q.state in ("running", "done")]
        if not tasks:
            return self.sweep()
        self.start_delivery(self.rng.choice(tasks), duplicate=True)
        return None

    def start_delivery(self, queued: Queued, *, duplicate: bool) -> None:
        w, svc = self.w, self.w.svc
        retries = w.queue.start(queued)
        task = queued.task
        detail = {"job": task.job_id, "retry": retries, "duplicate": duplicate}

        def handle() -> bool:
            if task.kind == "generate":
                usecases.run_generation(svc, task.job_id, retry_if_missing=retries == 0)
            else:
                usecases.expire_job(svc, task.job_id)
            return True

        def done(actor: Actor) -> None:
            error = actor.error
            if error is not None and not isinstance(error, NanoBananaError | TransientError):
                w.violate(8, f"{task.kind} task for {task.job_id} raised {type(error).__name__}: {error}")
            if not duplicate:
                w.queue.finish(queued, error is None)

        w.start(Move(task.kind, None, detail), handle, done)

    def sweep(self) -> None:
        w = self.w

        def done(actor: Actor) -> None:
            if actor.error is not None and not isinstance(actor.error, Unavailable):
                w.violate(8, f"sweep raised {type(actor.error).__name__}: {actor.error}")

        w.start(Move("sweep"), lambda: usecases.sweep(w.svc), done)

    # ------------------------------------------------------------ the processor (n8n)

    def process(self) -> None:
        inbox = self.w.processor.inbox
        work = inbox.pop(self.rng.randrange(len(inbox)))
        self.w.webhooks += 1
        webhook_id = f"msg_{self.w.webhooks}"
        status = "failed" if self.rng.random() < 0.15 else "succeeded"
        copies = 2 if self.rng.random() < 0.25 else 1  # a hand-off re-POST while the first is in flight
        for _ in range(copies):
            self._report(work, webhook_id, status)
        if status == "succeeded":
            self.reported.append((work, webhook_id))

    def report_again(self) -> None:
        """The processor ran twice on one attempt (a new webhook id), or a delivery is replayed (same id)."""
        rows = self.w.rows()
        late = [r for r in self.reported if r[0].job.id not in rows]
        work, webhook_id = self.rng.choice(late if late and self.rng.random() < 0.5 else self.reported)
        if self.rng.random() < 0.6:
            self.w.webhooks += 1
            webhook_id = f"msg_{self.w.webhooks}"
        self._report(work, webhook_id, "succeeded")

    def _report(self, work: ProcessorJob, webhook_id: str, status: str) -> None:
        w, svc = self.w, self.w.svc
        job_id = work.job.id
        paths = [f"{work.output_prefix}{i}.png" for i in range(len(work.upload_urls))]
        move = Move("callback", None, {"job": job_id, "webhook": webhook_id, "status": status})

        def run() -> tuple[int, dict[str, Any]]:
            body: dict[str, Any] = {"jobId": str(job_id), "status": status}
            if status == "succeeded":
                for index, path in enumerate(paths):
                    svc.blobs.put(path, png(index + 7), "image/png")
                body["variants"] = [{"path": p, "mimeType": "image/png"} for p in paths]
            else:
                body["error"] = {"code": "generation_failed", "message": "the model said no"}
            raw = json.dumps(body).encode()
            headers = {
                "Content-Type": "application/json",
                **webhooks.sign(raw, SECRET, msg_id=webhook_id, now=w.sched.now),
            }
            w.sched.point("callback.post")
            request = Request(EnvironBuilder(method="POST", data=raw, headers=headers).get_environ())
            response = callback.handle(svc, request)
            return response.status_code, json.loads(response.get_data())

        def judge(actor: Actor) -> None:
            if actor.error is not None:
                return  # the processor's own upload failed: it reports nothing
            code, answer = actor.result
            if code >= 500 and code != 503:
                w.violate(8, f"{move.describe()} answered {code}: {answer}")
            if code != 200:
                return
            row = w.rows().get(job_id)
            if row is None:
                return
            if answer.get("duplicate") and row["status"] in ("queued", "running"):
                w.violate(6, f"{move.describe()} acknowledged as a duplicate but job {job_id} is {row['status']}")
            elif "status" in answer and row["status"] != answer["status"]:
                w.violate(6, f"{move.describe()} acknowledged {answer} but job {job_id} is {row['status']}")

        w.start(move, run, judge)


__all__ = ["Moves", "png"]
