"""The blob store port: private objects, signed URLs, folder listings."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BlobInfo:
    path: str
    size: int
    content_type: str | None


@dataclass(frozen=True, slots=True)
class FolderEntry:
    """One name in one level of a folder: an object (with its last write) or a sub-folder."""

    name: str
    folder: bool
    updated_at: datetime | None


class BlobStore(Protocol):
    """One private bucket. Paths are keys like `inputs/{user}/{id}.png`, never URLs."""

    def put(self, path: str, data: bytes, content_type: str) -> None:
        """Write (overwriting: a redelivered task rewrites its own outputs)."""
        ...

    def get(self, path: str, *, max_bytes: int) -> bytes:
        """Read; NotFound if absent; FileTooLarge if larger than max_bytes (never buffers past it)."""
        ...

    def stat(self, path: str) -> BlobInfo | None:
        """None only if there is no such object; a store that cannot tell raises."""
        ...

    def check_access(self) -> None:
        """Readiness: our credentials can read our bucket. Raises StorageMisconfigured naming what is
        wrong (the key or the bucket), Unavailable when the store cannot be reached."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Paths under a prefix (recursive)."""
        ...

    def delete(self, paths: Sequence[str]) -> None:
        """Idempotent: absent paths are fine."""
        ...

    def list_folder(self, folder: str, *, offset: int, limit: int) -> builtins.list[FolderEntry]:
        """One level of a folder (no trailing slash), sorted by name, a page at a time: how Storage lists."""
        ...

    def signed_url(self, path: str, *, ttl_s: int) -> str:
        """A URL anyone holding it may GET until it expires."""
        ...

    def signed_urls(self, paths: Sequence[str], *, ttl_s: int) -> dict[str, str]:
        """Signed GET URLs for many paths at once (one round trip where the store allows it); a path
        with no object behind it is left out."""
        ...

    def signed_upload_url(self, path: str, *, ttl_s: int) -> str:
        """A URL an external processor may upload one object to (PUT/POST as the store documents)."""
        ...

    def signed_upload_urls(self, paths: Sequence[str], *, ttl_s: int) -> tuple[tuple[str, ...], datetime]:
        """Upload URLs for each path, and when the first of them expires (the store may cap ttl_s)."""
        ...
