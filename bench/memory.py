"""Peak RSS of the generate step with a large input and 4 variants (the preview generator, in-process,
real Postgres, local storage). Usage: .venv/bin/python bench/memory.py [--size-mb 10] [--variants 4]"""

from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "functions"), str(ROOT)]


def big_jpeg(target_bytes: int) -> bytes:
    """Noise JPEG grown until it reaches about target_bytes (noise does not compress)."""
    from PIL import Image

    side = 512
    while True:
        buf = io.BytesIO()
        Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buf, "JPEG", quality=95)
        if buf.tell() >= target_bytes * 0.9 or side > 6000:
            return buf.getvalue()
        side = int(side * 1.25)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=float, default=10)
    parser.add_argument("--variants", type=int, default=4)
    args = parser.parse_args()
    from nano_banana import bootstrap, usecases
    from nano_banana.images import inspect_image
    from nano_banana.settings import Settings

    data = big_jpeg(int(args.size_mb * 1024 * 1024))
    with tempfile.TemporaryDirectory() as tmp:
        rt = bootstrap.build(
            Settings(
                NANO_BANANA_DATA_DIR=Path(tmp),
                NANO_BANANA_LOG_LEVEL="WARNING",
                NANO_BANANA_MAX_FILE_BYTES=max(len(data), 10 * 1024 * 1024),
            )
        )
        svc = rt.services
        user, project = uuid.uuid4(), uuid.uuid4()
        svc.store.add_member(project, user)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        info = inspect_image(data, max_bytes=len(data), max_pixels=svc.settings.max_pixels)
        created = usecases.create_job(
            svc,
            user,
            usecases.CreateJob(project, "bench", args.variants, None, upload=usecases.ImageUpload(data, info)),
        )
        job = svc.store.get_job(created.job.id)
        deadline = time.monotonic() + 120
        while job is not None and not job.terminal and time.monotonic() < deadline:  # the in-process queue runs it
            time.sleep(0.05)
            job = svc.store.get_job(created.job.id)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rt.close()
    print(
        f"input {len(data) / 1048576:.1f} MiB JPEG ({info.width}x{info.height}), {args.variants} variants, job {job.status.value if job else 'lost'}"
    )
    print(
        f"peak RSS {peak / 1024:.0f} MiB (before the job: {before / 1024:.0f} MiB; the job added {(peak - before) / 1024:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
