"""One cold `api` instance for bench/coldstart.py: import the entry point, answer one request, report.

Run by bench/coldstart.py in a fresh interpreter with the production settings in its environment:
    python bench/coldstart_instance.py {get|post} {before|deferred|after} START REQUEST.json
START is the parent's time.monotonic() just before it started this process (one clock for both), so
the figure is start -> first answer, interpreter start-up included. The request goes to `main.api` as a
WSGI environ, the way the Functions Framework hands it over (its HTTP server is not part of the figure).

Variants:
- before: what an instance did before the cold-start work: every adapter imported (httpx with its CLI,
  storage3 with its async client, the multipart parser, Firestore, Cloud Tasks), every client built on
  the first request, the Firestore warm-up started in the background at build, nothing else warmed.
- deferred: the Firestore limits and the Cloud Tasks queue built on first use, the import cuts; no warm-up.
- after: deferred, plus the warm-ups (JWKS and Storage at once, the write clients when a write begins
  and after the first answer).

Prints one line `COLDSTART {json}`: status, ms to the first answer, and with COLDSTART_TRACE set (an
untimed run) the modules imported before it, in the order their imports began.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time

BASELINE = set(sys.modules)
STARTED: list[str] = []  # modules in the order their import began (parents before children)
if os.environ.get("COLDSTART_TRACE"):  # a separate, untimed run: the hook costs a little on every event
    sys.addaudithook(lambda event, args: STARTED.append(args[0]) if event == "import" else None)


def _environ(request: dict[str, str], body: bytes) -> dict[str, object]:
    environ: dict[str, object] = {
        "REQUEST_METHOD": request["method"],
        "SCRIPT_NAME": "",
        "PATH_INFO": request["path"],
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "HTTP_HOST": "127.0.0.1:8080",
        "HTTP_AUTHORIZATION": request["authorization"],
        "CONTENT_LENGTH": str(len(body)),
    }
    if request.get("contentType"):
        environ["CONTENT_TYPE"] = request["contentType"]
    return environ


def main() -> None:
    mode, variant, start, request_file = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    with open(request_file) as f:
        request = json.load(f)[mode]
    with open(request["bodyFile"], "rb") if request.get("bodyFile") else io.BytesIO() as f:
        body = f.read()
    if variant == "before":
        import httpx  # noqa: F401  (before nano_banana: its CLI is imported as it used to be)
        import python_multipart.multipart  # noqa: F401  (imported by the HTTP module for any request)
        import storage3  # noqa: F401  (the whole package, async client included)
    from flask import Request  # the Functions Framework has Flask imported before it loads main.py

    import main as entry

    if variant == "before":
        rt = entry.runtime()
        limits = rt.services.limits.prepare()  # type: ignore[attr-defined]
        rt.services.queue.prepare()  # type: ignore[attr-defined]
        limits.warm_up_in_background()
    response = entry.api(Request(_environ(request, body)))
    response.get_data()
    elapsed_ms = (time.monotonic() - start) * 1000
    # Imported for real (a None entry marks a module kept out on purpose), in the order the imports began.
    imported = [name for name in dict.fromkeys(STARTED) if name not in BASELINE and sys.modules.get(name) is not None]
    response.close()  # what the server does once the answer is sent
    answer = response.get_json(silent=True)
    job_id = answer.get("jobId") if isinstance(answer, dict) else None
    report = {"status": response.status_code, "ms": elapsed_ms, "modules": imported, "jobId": job_id}
    print("COLDSTART " + json.dumps(report), flush=True)
    if os.environ.get("COLDSTART_LINGER_S"):  # let the background warm-ups finish (their log lines)
        time.sleep(float(os.environ["COLDSTART_LINGER_S"]))
    sys.stdout.flush()
    os._exit(0)  # no orderly shutdown of pools and channels: the figure is taken


if __name__ == "__main__":
    main()
