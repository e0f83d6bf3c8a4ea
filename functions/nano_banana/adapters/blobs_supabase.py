"""BlobStore on Supabase Storage (storage3's sync client), one private bucket, signed URLs.

Downloads are streamed through the same HTTP client and stop at the cap (storage3's download() would
buffer the whole object). The service key never reaches a log or an error message.

How storage-api (v1.70.6) fails, and what we make of it, in one place (`_failure`): every error that
is not a 500 arrives as HTTP 400 with the real status and code only in the body, `{"statusCode":
"404", "code": "NoSuchKey", "error": "not_found", …}` (src/http/error-handler.ts; storage3 keeps only
`statusCode` and `error`, so the body's `code` is read back from the response):
- NoSuchKey → NotFound.
- 5xx, 423 ResourceLocked, 429 SlowDown, connection errors and timeouts → retried briefly, then
  Unavailable.
- 401/403 (a wrong key: AccessDenied; the anon key: row-level security), NoSuchBucket, a missing
  bucket behind an upload ("404" InvalidRequest, a foreign key), InvalidJWT, any other refusal →
  StorageMisconfigured (a 503 naming the cause, logged as `storage_misconfigured`): no retry fixes
  our own configuration, and it must never read as "the object is gone".
- Keys storage-api refuses (dot segments, non-ASCII, `#`, `?`: src/storage/limits.ts) → InvalidRequest,
  checked here before any round trip.
"""

from __future__ import annotations

import base64
import builtins
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from nano_banana.adapters.storage3_sync import (
    CreateSignedUploadUrlOptions,
    CreateSignedUrlResponse,
    StorageApiError,
    StorageException,
    SyncStorageClient,
)
from nano_banana.errors import (
    FileTooLarge,
    InvalidRequest,
    NanoBananaError,
    NotFound,
    StorageMisconfigured,
    Unavailable,
)
from nano_banana.log import warming
from nano_banana.ports import BlobInfo, FolderEntry

log = logging.getLogger("nano_banana")
T = TypeVar("T")
_PAGE = 1000
_SIGN_BATCH = 100
# storage-api's VALID_OBJECT_KEY without `?`, which the real server was seen to refuse as well.
_VALID_KEY = re.compile(r"^[A-Za-z0-9_!.*'() &$=@;:+,-]+(/[A-Za-z0-9_!.*'() &$=@;:+,-]+)*$")
_PROBE = "healthz/probe"
_UPLOAD_URL_LIFETIME = timedelta(seconds=60)  # storage-api's UPLOAD_SIGNED_URL_EXPIRATION_TIME default


@dataclass(frozen=True, slots=True)
class _Refusal:
    """What Storage answered: the body's statusCode (else the HTTP status), its code and message."""

    status: int
    code: str
    message: str

    @property
    def transient(self) -> bool:
        return self.status >= 500 or self.status in (423, 429)


class _Refused(Exception):
    def __init__(self, refusal: _Refusal) -> None:
        super().__init__(refusal.code)
        self.refusal = refusal


def _refusal(http_status: int, content: bytes) -> _Refusal:
    try:
        body = json.loads(content)
        status, code = int(body.get("statusCode", http_status)), str(body.get("code") or body.get("error") or "")
        return _Refusal(status, code, str(body.get("message", ""))[:200])
    except (ValueError, TypeError, AttributeError):
        return _Refusal(http_status, "", "")  # a gateway's page, not storage-api's JSON


def _refusal_of(exc: StorageApiError) -> _Refusal:
    """storage3 raises with the body's `error` as code; the response it came from has the real one."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, httpx.HTTPStatusError):
            return _refusal(cause.response.status_code, cause.response.content)
        cause = cause.__cause__ or cause.__context__
    try:
        status = int(exc.status)
    except (TypeError, ValueError):
        status = 500
    return _Refusal(status, str(exc.code), str(exc.message)[:200])


def _token_expiry(token: str) -> datetime:
    """When a signed-URL token Storage issued expires (its `exp` claim; reading our own token's claims
    needs no verification). Unreadable: the shortest lifetime Storage gives by default."""
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        return datetime.fromtimestamp(int(payload["exp"]), UTC)
    except (IndexError, ValueError, KeyError, TypeError):
        return datetime.now(UTC) + _UPLOAD_URL_LIFETIME


def _valid_key(path: str) -> bool:
    return len(path) <= 1024 and bool(_VALID_KEY.match(path)) and not ({".", ".."} & set(path.split("/")))


def _key(path: str) -> str:
    if not _valid_key(path):
        raise InvalidRequest("storage path is not valid", details={"path": path[:100]})
    return path


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

    def _failure(self, what: str, path: str | None, refusal: _Refusal) -> NanoBananaError:
        """The one mapping from a Storage refusal to our errors (see the module docstring)."""
        status, code = refusal.status, refusal.code
        if refusal.transient:
            return Unavailable(f"storage failed to {what} ({code or status})")
        if code == "NoSuchKey" or (status == 404 and code == "not_found"):
            return NotFound("no such object", details={"path": (path or "")[:100]})
        if code == "InvalidKey":
            return InvalidRequest("storage path is not valid", details={"path": (path or "")[:100]})
        if code == "EntityTooLarge" or status == 413:
            return FileTooLarge("storage refuses an object this large")
        if code in ("NoSuchBucket", "Bucket not found") or "related resource does not exist" in refusal.message:
            # storage-api also answers a GET with a key it cannot verify so (as to an anonymous caller)
            cause, message = "bucket_not_found", f"Storage finds no bucket {self._bucket_id!r} (or refuses the key)"
        elif "row-level security" in refusal.message:
            cause, message = "key_not_service_role", "the key is not the service_role key (row-level security applies)"
        elif status in (401, 403) or code in ("AccessDenied", "InvalidJWT", "Unauthorized"):
            cause, message = "key_rejected", f"Storage rejects the service key ({refusal.message or code})"
        else:
            cause, message = "request_refused", f"Storage refused to {what}: {code or status} {refusal.message}"
        return StorageMisconfigured(cause, message, details={"operation": what, "storageCode": code or str(status)})

    def _report(self, exc: StorageMisconfigured) -> None:
        log.error(
            exc.message,
            extra={"event": "storage_misconfigured", "bucket": self._bucket_id, **exc.details},
        )

    def _call(self, what: str, fn: Callable[[], T], path: str | None = None, *, report: bool = True) -> T:
        """Run one Storage call: refusals mapped by `_failure` (a configuration error logged once, as
        `storage_misconfigured` naming its cause), transient ones retried briefly."""
        for attempt in range(self._retries + 1):
            try:
                return fn()
            except (StorageApiError, _Refused) as exc:
                refusal = exc.refusal if isinstance(exc, _Refused) else _refusal_of(exc)
                if not refusal.transient or attempt == self._retries:
                    failure = self._failure(what, path, refusal)
                    if report and isinstance(failure, StorageMisconfigured):
                        self._report(failure)
                    raise failure from exc
            except StorageException as exc:  # a 2xx storage3 cannot use (e.g. an upload URL without a token)
                raise Unavailable(f"storage answered an unexpected response to {what}") from exc
            except httpx.HTTPError as exc:
                if attempt == self._retries:
                    raise Unavailable(f"storage unreachable while trying to {what}") from exc
            time.sleep(0.2 * 2**attempt)
            log.warning(
                "storage call retried", extra={"event": "storage_retry", "operation": what, "attempt": attempt + 1}
            )
        raise Unavailable(f"storage failed to {what}")  # pragma: no cover - the loop always returns or raises

    def check_access(self) -> None:
        """Readiness: the key can read the bucket. Raises StorageMisconfigured naming which of the two is
        wrong (`key_rejected`, `key_not_service_role`, `bucket_not_found`), Unavailable if unreachable."""
        read = f"{self._base}/bucket/{quote(self._bucket_id)}"
        try:
            try:
                self._call("read the bucket", lambda: self._send("GET", read), report=False)
            except StorageMisconfigured as exc:
                if exc.cause != "bucket_not_found":
                    raise
                # Row-level security hides a bucket from the anon key exactly as if it did not exist; asking to
                # sign an upload (nothing is written) tells the two apart: a policy refusal, or no bucket.
                upload_sign = f"{self._base}/object/upload/sign/{quote(self._bucket_id)}/{_PROBE}"
                self._call("check the key", lambda: self._send("POST", upload_sign), report=False)
                raise  # a key that may sign uploads into a bucket it cannot read: report the bucket
        except StorageMisconfigured as exc:
            self._report(exc)
            raise

    def warm_up(self) -> None:
        """Open the connection (DNS, TCP, TLS) with one read of the bucket, so a cold instance's first
        request does not pay for it. Logged, never raised: a real call reports its own failure."""
        with warming(
            "storage_warmed_up",
            "storage_warm_up_failed",
            done="storage connection warmed up",
            failed="storage warm-up failed",
            errors=(_Refused, httpx.HTTPError),
        ):
            self._send("GET", f"{self._base}/bucket/{quote(self._bucket_id)}")

    def _send(self, method: str, url: str) -> None:
        response = self._http.request(method, url, headers=self._headers)
        if response.status_code >= 400:
            raise _Refused(_refusal(response.status_code, response.content))

    def put(self, path: str, data: bytes, content_type: str) -> None:
        options: Any = {"content-type": content_type, "upsert": "true", "cache-control": "3600"}
        self._call("upload", lambda: self._bucket.upload(_key(path), data, options), path)

    def get(self, path: str, *, max_bytes: int) -> bytes:
        url = f"{self._base}/object/{self._bucket_id}/{quote(_key(path))}"

        def download() -> bytes:
            with self._http.stream("GET", url, headers=self._headers) as response:
                if response.status_code >= 400:
                    raise _Refused(_refusal(response.status_code, response.read()[:4096]))
                declared = int(response.headers.get("Content-Length") or 0)
                if declared > max_bytes:
                    raise FileTooLarge(f"object is larger than {max_bytes} bytes", details={"maxBytes": max_bytes})
                data = bytearray()
                for chunk in response.iter_bytes():
                    data.extend(chunk)
                    if len(data) > max_bytes:
                        raise FileTooLarge(f"object is larger than {max_bytes} bytes", details={"maxBytes": max_bytes})
                return bytes(data)

        return self._call("download", download, path)

    def stat(self, path: str) -> BlobInfo | None:
        """None only when Storage says there is no such object; any other refusal raises."""
        try:
            info = self._call("stat", lambda: self._bucket.info(_key(path)), path)
        except NotFound:
            return None
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
        valid = [p for p in paths if _valid_key(p)]  # a key Storage refuses has no object to delete
        for start in range(0, len(valid), _PAGE):
            self._remove(valid[start : start + _PAGE])

    def _remove(self, chunk: builtins.list[str]) -> None:
        self._call("delete", lambda: self._bucket.remove(chunk))

    def signed_url(self, path: str, *, ttl_s: int) -> str:
        response = self._call("sign", lambda: self._bucket.create_signed_url(_key(path), max(1, ttl_s)), path)
        return str(response["signedURL"])

    def signed_urls(self, paths: Sequence[str], *, ttl_s: int) -> dict[str, str]:
        """Storage's bulk signing endpoint, _SIGN_BATCH paths per call (it takes 1 to 1000); it answers 200
        with a per-path error for objects that do not exist, and those are left out, as are keys Storage
        would refuse."""
        valid = list(dict.fromkeys(p for p in paths if _valid_key(p)))
        urls: dict[str, str] = {}
        for start in range(0, len(valid), _SIGN_BATCH):
            for item in self._sign_chunk(valid[start : start + _SIGN_BATCH], max(1, ttl_s)):
                if item["signedURL"] and not item["error"]:
                    urls[item["path"]] = str(item["signedURL"])
        return urls

    def _sign_chunk(self, chunk: builtins.list[str], ttl_s: int) -> builtins.list[CreateSignedUrlResponse]:
        return self._call("sign", lambda: self._bucket.create_signed_urls(chunk, ttl_s))

    def signed_upload_url(self, path: str, *, ttl_s: int) -> str:
        """A URL to PUT the object to. Storage decides its lifetime whatever ttl_s says
        (UPLOAD_SIGNED_URL_EXPIRATION_TIME: 60 s by default self-hosted, 2 hours on hosted Supabase):
        processors ask for fresh ones when their images are ready (the `running` callback)."""
        return self._signed_upload(path)[0]

    def signed_upload_urls(self, paths: Sequence[str], *, ttl_s: int) -> tuple[tuple[str, ...], datetime]:
        """Fresh upload URLs, and when the first expires: the `exp` Storage wrote into its token."""
        signed = [self._signed_upload(path) for path in paths]
        earliest = min((expires for _, expires in signed), default=datetime.now(UTC) + _UPLOAD_URL_LIFETIME)
        return tuple(url for url, _ in signed), earliest

    def _signed_upload(self, path: str) -> tuple[str, datetime]:
        options = CreateSignedUploadUrlOptions(upsert="true")
        response = self._call(
            "sign an upload", lambda: self._bucket.create_signed_upload_url(_key(path), options), path
        )
        return str(response["signed_url"]), _token_expiry(str(response["token"]))
