"""BlobStore on Supabase Storage (storage3's sync client), one private bucket, signed URLs.

Downloads are streamed through the same HTTP client and stop at the cap (storage3's download() would
buffer the whole object). Transient failures (connection errors, timeouts, 5xx) are retried briefly,
then surface as Unavailable; the service key never reaches a log or an error message.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from storage3 import SyncStorageClient
from storage3.exceptions import StorageApiError
from storage3.types import CreateSignedUploadUrlOptions, CreateSignedUrlResponse

from nano_banana.errors import FileTooLarge, NotFound, Unavailable
from nano_banana.ports import BlobInfo, FolderEntry

log = logging.getLogger("nano_banana")
T = TypeVar("T")
_PAGE = 1000
_SIGN_BATCH = 100


def _status(exc: StorageApiError) -> int:
    try:
        return int(exc.status)
    except (TypeError, ValueError):
        return 500


class SupabaseBlobStore:
    def __init__(
        self, url: str, service_key: str, bucket: str, *, timeout_s: float = 10.0, max_retries: int = 2
    ) -> None:
        self._base = f"{url.rstrip('/')}/storage/v1"
        self._headers = {"apikey": service_key, "Authorization": f"Bearer {service_key}"}
        self._http = httpx.Client(timeout=timeout_s)
        self._client = SyncStorageClient(f"{self._base}/", dict(self._headers), http_client=self._http)
        self._bucket_id = bucket
        self._bucket = self._client.from_(bucket)
        self._retries = max_retries

    def close(self) -> None:
        self._http.close()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(self._retries + 1):
            try:
                return fn()
            except StorageApiError as exc:
                if _status(exc) < 500 or attempt == self._retries:
                    if _status(exc) >= 500:
                        raise Unavailable(f"storage failed to {what}") from exc
                    raise
            except httpx.HTTPError as exc:
                if attempt == self._retries:
                    raise Unavailable(f"storage unreachable while trying to {what}") from exc
            time.sleep(0.2 * 2**attempt)
            log.warning(
                "storage call retried", extra={"event": "storage_retry", "operation": what, "attempt": attempt + 1}
            )
        raise Unavailable(f"storage failed to {what}")  # pragma: no cover - the loop always returns or raises

    def put(self, path: str, data: bytes, content_type: str) -> None:
        options: Any = {"content-type": content_type, "upsert": "true", "cache-control": "3600"}
        self._call("upload", lambda: self._bucket.upload(path, data, options))

    def get(self, path: str, *, max_bytes: int) -> bytes:
        url = f"{self._base}/object/{self._bucket_id}/{quote(path)}"

        def download() -> bytes:
            with self._http.stream("GET", url, headers=self._headers) as response:
                if response.status_code in {400, 404}:
                    raise NotFound("no such object", details={"path": path[:100]})
                if response.status_code >= 500:
                    raise StorageApiError("download failed", "InternalError", response.status_code)
                response.raise_for_status()
                declared = int(response.headers.get("Content-Length") or 0)
                if declared > max_bytes:
                    raise FileTooLarge(f"object is larger than {max_bytes} bytes", details={"maxBytes": max_bytes})
                data = bytearray()
                for chunk in response.iter_bytes():
                    data.extend(chunk)
                    if len(data) > max_bytes:
                        raise FileTooLarge(f"object is larger than {max_bytes} bytes", details={"maxBytes": max_bytes})
                return bytes(data)

        return self._call("download", download)

    def stat(self, path: str) -> BlobInfo | None:
        try:
            info = self._call("stat", lambda: self._bucket.info(path))
        except StorageApiError as exc:
            if _status(exc) in (400, 404):
                return None
            raise
        metadata = info.get("metadata") or {}
        size = info.get("size", metadata.get("size", 0))
        content_type = info.get("content_type") or metadata.get("mimetype")
        return BlobInfo(path=path, size=int(size or 0), content_type=content_type)

    def list(self, prefix: str) -> list[str]:
        """Recursive: Storage lists one folder level at a time (folders have no id)."""
        found: list[str] = []
        folder, _, name_prefix = prefix.rpartition("/")
        pending = [(folder, name_prefix)]
        while pending:
            current, starts = pending.pop()
            offset = 0
            while True:
                entries = self._list_page(current, offset)
                for entry in entries:
                    name = str(entry.get("name", ""))
                    if not name.startswith(starts) or name == ".emptyFolderPlaceholder":
                        continue
                    full = f"{current}/{name}" if current else name
                    if entry.get("id") is None:
                        pending.append((full, ""))
                    else:
                        found.append(full)
                if len(entries) < _PAGE:
                    break
                offset += _PAGE
        return sorted(found)

    def _list_page(self, folder: str, offset: int, limit: int = _PAGE) -> builtins.list[dict[str, Any]]:
        options: Any = {"limit": limit, "offset": offset, "sortBy": {"column": "name", "order": "asc"}}
        return self._call("list", lambda: self._bucket.list(folder, options))

    def list_folder(self, folder: str, *, offset: int, limit: int) -> builtins.list[FolderEntry]:
        """One page of one level; Storage marks folders by a null id and gives objects' `updated_at`."""
        entries = []
        for entry in self._list_page(folder, offset, limit):
            name = str(entry.get("name", ""))
            if not name or name == ".emptyFolderPlaceholder":
                continue
            stamp = entry.get("updated_at") or entry.get("created_at")
            updated = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) if stamp else None
            entries.append(FolderEntry(name, folder=entry.get("id") is None, updated_at=updated))
        return entries

    def delete(self, paths: Sequence[str]) -> None:
        for start in range(0, len(paths), _PAGE):
            self._remove(list(paths[start : start + _PAGE]))

    def _remove(self, chunk: builtins.list[str]) -> None:
        self._call("delete", lambda: self._bucket.remove(chunk))

    def signed_url(self, path: str, *, ttl_s: int) -> str:
        response = self._call("sign", lambda: self._bucket.create_signed_url(path, ttl_s))
        return str(response["signedURL"])

    def signed_urls(self, paths: Sequence[str], *, ttl_s: int) -> dict[str, str]:
        """Storage's bulk signing endpoint, _SIGN_BATCH paths per call; it answers 200 with a per-path
        error for objects that do not exist, and those are left out."""
        urls: dict[str, str] = {}
        for start in range(0, len(paths), _SIGN_BATCH):
            for item in self._sign_chunk(list(paths[start : start + _SIGN_BATCH]), ttl_s):
                if item["signedURL"] and not item["error"]:
                    urls[item["path"]] = str(item["signedURL"])
        return urls

    def _sign_chunk(self, chunk: builtins.list[str], ttl_s: int) -> builtins.list[CreateSignedUrlResponse]:
        return self._call("sign", lambda: self._bucket.create_signed_urls(chunk, ttl_s))

    def signed_upload_url(self, path: str, *, ttl_s: int) -> str:
        """Storage's upload URLs live 2 hours whatever ttl_s says; PUT the object to it."""
        options = CreateSignedUploadUrlOptions(upsert="true")
        response = self._call("sign an upload", lambda: self._bucket.create_signed_upload_url(path, options))
        return str(response["signed_url"])
