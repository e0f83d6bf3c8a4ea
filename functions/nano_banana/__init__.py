"""Nano Banana job service.

httpx imports its command-line client at import time (click, and pygments and rich when they are
installed: ~0.15 s in a venv that has them). The service never runs it, so it is marked absent before
httpx is first imported; httpx then defines a stub `main` instead (its own fallback for a missing CLI).
"""

import sys

if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
