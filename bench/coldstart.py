"""Cold-start import time of each entry point, in fresh interpreters (median of N), beside
`import google.cloud.aiplatform` measured in a throwaway venv in the same run, as a ratio.

What each entry point imports on its first request with the production settings (Firestore limits,
Cloud Tasks queue, Supabase storage, Vertex generator) is imported here too, because that is what a
cold start pays. Usage: .venv/bin/python bench/coldstart.py [--runs 10] [--skip-aiplatform]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ROOT / "functions"

COMMON = "import main, nano_banana.bootstrap, nano_banana.adapters.postgres, nano_banana.adapters.limits_firestore, nano_banana.adapters.queue_cloudtasks, nano_banana.adapters.blobs_supabase"
ENTRY_POINTS = {
    "api": f"{COMMON}, nano_banana.http",
    "callback": f"{COMMON}, nano_banana.callback",
    "generate": f"{COMMON}, nano_banana.tasks, nano_banana.adapters.generator_vertex",
    "expire": f"{COMMON}, nano_banana.tasks",
    "sweep": f"{COMMON}, nano_banana.tasks",
    "google.genai alone": "import google.genai",
}


def timed_import(python: str, statement: str, runs: int, path: Path | None = None) -> float:
    """Median wall time of `statement` in a fresh interpreter, in ms."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    samples = []
    env = {"PYTHONPATH": str(path)} if path else {}
    for _ in range(runs):
        out = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, check=True, env={**env, "PATH": "/usr/bin:/bin"}
        )
        samples.append(float(out.stdout.strip().splitlines()[-1]) * 1000)
    return statistics.median(samples)


def aiplatform_python() -> str | None:
    target = Path(tempfile.mkdtemp(prefix="aiplatform-venv-"))
    venv.create(target, with_pip=True)
    python = str(target / "bin" / "python")
    result = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "google-cloud-aiplatform"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        print(f"could not install google-cloud-aiplatform: {result.stderr[-300:]}")
        return None
    return python


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--skip-aiplatform", action="store_true")
    args = parser.parse_args()
    results = {name: timed_import(sys.executable, stmt, args.runs, FUNCTIONS) for name, stmt in ENTRY_POINTS.items()}
    print(f"import time, median of {args.runs} fresh interpreters (ms):")
    for name, ms in results.items():
        print(f"  {name:<20} {ms:8.0f}")
    if args.skip_aiplatform:
        return
    python = aiplatform_python()
    if python is None:
        return
    aiplatform = timed_import(python, "import google.cloud.aiplatform", args.runs)
    generative = timed_import(python, "import vertexai.generative_models", args.runs)
    print(f"  {'aiplatform':<20} {aiplatform:8.0f}   (import google.cloud.aiplatform, throwaway venv)")
    print(f"  {'vertexai.gen_models':<20} {generative:8.0f}   (import vertexai.generative_models)")
    print(f"ratio aiplatform / generate entry point: {aiplatform / results['generate']:.2f}x")
    print(f"ratio aiplatform / google.genai alone:   {aiplatform / results['google.genai alone']:.2f}x")


if __name__ == "__main__":
    main()
