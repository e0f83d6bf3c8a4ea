"""storage3's sync client, imported without its async one.

storage3's package `__init__` imports its async client as well (with asyncio's machinery: ~0.1 s of a
cold start) though we use only the sync one. Unless storage3 is already imported, the package is
registered without running its `__init__`, so the submodules below import alone. The first attribute
asked of the package itself (`from storage3 import X`, by anyone) runs the real `__init__` then, so
nothing changes for other users of storage3 in the process.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any


def _register_package_lazily() -> None:
    if "storage3" in sys.modules:
        return
    spec = importlib.util.find_spec("storage3")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def complete(name: str) -> Any:
        del package.__dict__["__getattr__"]  # once: the real module takes over
        loader.exec_module(package)
        return getattr(package, name)

    package.__dict__["__getattr__"] = complete  # PEP 562: asked only for names the module lacks
    sys.modules["storage3"] = package


_register_package_lazily()

from storage3._sync.client import SyncStorageClient  # noqa: E402
from storage3.exceptions import StorageApiError  # noqa: E402
from storage3.types import CreateSignedUploadUrlOptions, CreateSignedUrlResponse  # noqa: E402
from storage3.utils import StorageException  # noqa: E402

__all__ = [
    "CreateSignedUploadUrlOptions",
    "CreateSignedUrlResponse",
    "StorageApiError",
    "StorageException",
    "SyncStorageClient",
]
