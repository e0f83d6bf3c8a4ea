"""Peak RSS of the API process under concurrent large uploads, with and without the memory budgets.

N clients upload the same large PNG at once (a 7000x7000 gradient compresses to well under 10 MiB but
decodes to ~200 MB). The uploads go to a project the user is not a member of, so every request is read
and fully decoded, then refused with 403: nothing else (no job, no generation) touches memory. Run once
with the default budgets and once with budgets too large to matter.
Usage: .venv/bin/python bench/api_memory.py [--side 7000] [--requests 16]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "functions"), str(ROOT)]

from tests.support.devserver import start_dev_server  # noqa: E402


def gradient_png(side: int) -> bytes:
    from PIL import Image

    grey = Image.linear_gradient("L").resize((side, side))
    buf = io.BytesIO()
    Image.merge("RGB", (grey, grey.transpose(Image.Transpose.ROTATE_90), grey)).save(buf, "PNG")
    return buf.getvalue()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def run(label: str, env: dict[str, str], image: bytes, requests: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_dev_server(Path(tmp), {"NANO_BANANA_LOG_LEVEL": "WARNING", **env})
        try:
            s = server.session()
            before = peak_rss_mib(server.process.pid)
            stranger = str(uuid.uuid4())  # a project the user is not a member of: decode, then 403

            def upload(_: int) -> int:
                with httpx.Client(base_url=server.url, timeout=120) as client:
                    r = client.post(
                        "/api/nano-banana/jobs",
                        data={"projectId": stranger, "prompt": "bench"},
                        files={"image": ("big.png", image, "image/png")},
                        headers=s.headers,
                    )
                    return r.status_code

            start = time.perf_counter()
            with ThreadPoolExecutor(requests) as pool:
                statuses = Counter(pool.map(upload, range(requests)))
            elapsed = time.perf_counter() - start
            peak = peak_rss_mib(server.process.pid)
        finally:
            server.stop()
    answers = ", ".join(f"{n}x{code}" for code, n in sorted(statuses.items()))
    print(f"{label:<10} peak RSS {peak:7.0f} MiB (idle {before:.0f} MiB); answers {answers}; {elapsed:.1f} s")
    return peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", type=int, default=7000)
    parser.add_argument("--requests", type=int, default=16)
    args = parser.parse_args()
    image = gradient_png(args.side)
    print(
        f"{args.requests} concurrent uploads of a {args.side}x{args.side} PNG "
        f"({len(image) / 1048576:.1f} MiB file, ~{args.side * args.side * 4 / 1048576:.0f} MiB decoded)"
    )
    bounded = run("budgets", {}, image, args.requests)
    unbounded = run(
        "unbounded",
        {"NANO_BANANA_UPLOAD_MEMORY_MB": "1000000", "NANO_BANANA_DECODE_MEMORY_MB": "1000000"},
        image,
        args.requests,
    )
    print(f"unbounded / budgets peak RSS: {unbounded / bounded:.1f}x")


if __name__ == "__main__":
    main()
