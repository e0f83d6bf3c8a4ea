"""A small, real in-memory BlobStore for use-case tests that do not need files or HTTP."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from nano_banana.errors import FileTooLarge, NotFound
from nano_banana.ports import BlobInfo, FolderEntry


class MemoryBlobStore:
    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.written: dict[str, datetime] = {}  # last write per path; tests may backdate it
        self._lock = threading.Lock()

    def put(self, path: str, data: bytes, content_type: str) -> None:
        with self._lock:
            self.objects[path] = (data, content_type)
            self.written[path] = datetime.now(UTC)

    def get(self, path: str, *, max_bytes: int) -> bytes:
        with self._lock:
            if path not in self.objects:
                raise NotFound("no such blob")
            data = self.objects[path][0]
        if len(data) > max_bytes:
            raise FileTooLarge("blob too large")
        return data

    def stat(self, path: str) -> BlobInfo | None:
        with self._lock:
            found = self.objects.get(path)
        return BlobInfo(path, len(found[0]), found[1]) if found else None

    def check_access(self) -> None:
        return None

    def list(self, prefix: str) -> list[str]:
        with self._lock:
            return sorted(p for p in self.objects if p.startswith(prefix))

    def delete(self, paths: Sequence[str]) -> None:
        with self._lock:
            for p in paths:
                self.objects.pop(p, None)

    def list_folder(self, folder: str, *, offset: int, limit: int) -> list[FolderEntry]:
        base = f"{folder}/"
        entries: dict[str, FolderEntry] = {}
        with self._lock:
            for path in sorted(self.objects):
                if path.startswith(base):
                    head, sep, _ = path[len(base) :].partition("/")
                    entries[head] = (
                        FolderEntry(head, True, None) if sep else FolderEntry(head, False, self.written[path])
                    )
        return [entries[name] for name in sorted(entries)][offset : offset + limit]

    def signed_url(self, path: str, *, ttl_s: int) -> str:
        return f"memory://{path}?ttl={ttl_s}"

    def signed_urls(self, paths: Sequence[str], *, ttl_s: int) -> dict[str, str]:
        with self._lock:
            present = [p for p in paths if p in self.objects]
        return {p: self.signed_url(p, ttl_s=ttl_s) for p in present}

    def signed_upload_url(self, path: str, *, ttl_s: int) -> str:
        return f"memory://{path}?upload&ttl={ttl_s}"

    def signed_upload_urls(self, paths: Sequence[str], *, ttl_s: int) -> tuple[tuple[str, ...], datetime]:
        return tuple(self.signed_upload_url(p, ttl_s=ttl_s) for p in paths), datetime.now(UTC) + timedelta(
            seconds=ttl_s
        )
