"""BlobStore on a local directory, with HMAC-signed URLs served by the dev server (`/blobs/...`)."""

from __future__ import annotations

import builtins
import hashlib
import hmac
import json
import os
import re
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from nano_banana.errors import FileTooLarge, InvalidRequest, NotFound, StorageMisconfigured
from nano_banana.ports import BlobInfo, Clock, FolderEntry

_SAFE_PATH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
_CHUNK = 64 * 1024
_META = ".meta"


class LocalBlobStore:
    def __init__(self, root: Path, base_url: str, signing_key: bytes, clock: Clock) -> None:
        self._root = root.resolve()
        self._root.mkdir(parents=True, exist_ok=True)
        self._base_url = base_url.rstrip("/")
        self._key = signing_key
        self._clock = clock

    def _file(self, path: str) -> Path:
        if len(path) > 512 or not _SAFE_PATH.match(path) or ".." in path or path.endswith(_META):
            raise InvalidRequest("storage path is not valid", details={"path": path[:100]})
        target = (self._root / path).resolve()
        if not target.is_relative_to(self._root):
            raise InvalidRequest("storage path is not valid", details={"path": path[:100]})
        return target

    def put(self, path: str, data: bytes, content_type: str) -> None:
        target = self._file(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        for name, payload in (
            (target.name + _META, json.dumps({"contentType": content_type}).encode()),
            (target.name, data),
        ):
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as out:
                out.write(payload)
            os.replace(tmp, target.parent / name)  # atomic: readers see the old or the new object

    def get(self, path: str, *, max_bytes: int) -> bytes:
        target = self._file(path)
        try:
            with target.open("rb") as src:
                data = bytearray()
                while chunk := src.read(_CHUNK):
                    data.extend(chunk)
                    if len(data) > max_bytes:
                        raise FileTooLarge(f"object is larger than {max_bytes} bytes", details={"maxBytes": max_bytes})
                return bytes(data)
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise NotFound("no such object", details={"path": path[:100]}) from exc

    def stat(self, path: str) -> BlobInfo | None:
        target = self._file(path)
        if not target.is_file():
            return None
        try:
            content_type = json.loads((target.parent / (target.name + _META)).read_text())["contentType"]
        except (OSError, ValueError, KeyError):
            content_type = None
        return BlobInfo(path=path, size=target.stat().st_size, content_type=content_type)

    def check_access(self) -> None:
        if not (self._root.is_dir() and os.access(self._root, os.R_OK | os.W_OK | os.X_OK)):
            raise StorageMisconfigured("directory_not_writable", f"blob directory {str(self._root)!r} is not usable")

    def list(self, prefix: str) -> list[str]:
        base = (self._root / prefix).resolve()
        if not base.is_relative_to(self._root) or (prefix.endswith("/") and not base.is_dir()):
            return []  # a folder that is not there (a deleted job's prefix): nothing to walk
        top = base if base.is_dir() else base.parent
        out = []
        for file in top.rglob("*"):
            rel = file.relative_to(self._root).as_posix()
            if (
                file.is_file()
                and not file.name.startswith(".")
                and not file.name.endswith(_META)
                and rel.startswith(prefix)
            ):
                out.append(rel)
        return sorted(out)

    def delete(self, paths: Sequence[str]) -> None:
        for path in paths:
            target = self._file(path)
            for name in (target.name, target.name + _META):
                (target.parent / name).unlink(missing_ok=True)

    def list_folder(self, folder: str, *, offset: int, limit: int) -> builtins.list[FolderEntry]:
        base = (self._root / folder).resolve()
        if not base.is_relative_to(self._root) or not base.is_dir():
            return []
        entries = []
        for item in sorted(base.iterdir(), key=lambda p: p.name):
            if item.name.startswith(".") or item.name.endswith(_META):
                continue
            if item.is_dir():
                entries.append(FolderEntry(item.name, folder=True, updated_at=None))
            else:
                entries.append(FolderEntry(item.name, False, datetime.fromtimestamp(item.stat().st_mtime, UTC)))
        return entries[offset : offset + limit]

    def _sign(self, method: str, path: str, exp: int) -> str:
        return hmac.new(self._key, f"{method}\n{path}\n{exp}".encode(), hashlib.sha256).hexdigest()

    def _url(self, method: str, path: str, ttl_s: int) -> str:
        self._file(path)
        exp = int(self._clock().timestamp()) + ttl_s
        return f"{self._base_url}/blobs/{quote(path)}?exp={exp}&sig={self._sign(method, path, exp)}"

    def signed_url(self, path: str, *, ttl_s: int) -> str:
        return self._url("GET", path, ttl_s)

    def signed_urls(self, paths: Sequence[str], *, ttl_s: int) -> dict[str, str]:
        urls = {}
        for path in paths:
            try:
                if self._file(path).is_file():
                    urls[path] = self._url("GET", path, ttl_s)
            except InvalidRequest:
                continue  # no object can be stored at a path like that
        return urls

    def signed_upload_url(self, path: str, *, ttl_s: int) -> str:
        return self._url("PUT", path, ttl_s)

    def signed_upload_urls(self, paths: Sequence[str], *, ttl_s: int) -> tuple[tuple[str, ...], datetime]:
        expires = self._clock() + timedelta(seconds=ttl_s)
        return tuple(self._url("PUT", p, ttl_s) for p in paths), expires

    def verify_signature(self, method: str, path: str, exp: str, sig: str) -> bool:
        """For the dev server's /blobs route: a valid, unexpired signature for this method and path."""
        if not exp.isdigit() or int(exp) < self._clock().timestamp():
            return False
        return hmac.compare_digest(self._sign(method, path, int(exp)), sig)
