"""Signed read URLs for API responses: one store call per response, and the same URL while it is young.

Every job, list page, thread, block and stream event carries signed URLs. On Supabase Storage each
signature is a network round trip, and each one is a different URL (a fresh token), so signing path by
path made a list page of 20 jobs with 4 variants about 100 sequential calls, and made the builder
download every image again on each poll or stream event. The signer asks the store once per response
for whatever it has not signed recently (the store's bulk endpoint), and hands a URL out again while at
least half of its lifetime remains: a client always gets at least ttl/2 to use it, and repeated reads
return identical URLs the browser can cache.

When Storage cannot sign (an outage past the adapter's retries, a lock, or a refusal of our own key or
bucket: the adapter turns every one of them into Unavailable), responses still go out: a cached URL
that has not expired is handed out however old, anything else is left out (rendered as null), and for
the next few seconds nobody waits on Storage again (each failed call can cost the adapter's retries and
timeouts). The job's state comes from Postgres; an outage of the images should not take the API, its
streams or a cancel's answer down with it. Callers for whom a missing URL means something else
(`/signed-urls`, where it would read as "not found") ask with `degrade=False` and get the 503.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from nano_banana.errors import Unavailable
from nano_banana.ports import BlobStore, Clock

log = logging.getLogger("nano_banana")

_MARGIN = timedelta(seconds=2)  # stores round the expiry down to the second, and the call takes time
_BACK_OFF = timedelta(seconds=5)  # after a failed call, answer without Storage for this long


@dataclass(frozen=True, slots=True)
class Signed:
    urls: dict[str, str]  # path → URL; paths with no object behind them are absent
    expires_at: datetime  # the earliest expiry among them (now + ttl when there are none)


class UrlSigner:
    def __init__(self, blobs: BlobStore, *, ttl_s: int, clock: Clock, max_entries: int = 4096) -> None:
        self._blobs = blobs
        self._ttl = timedelta(seconds=ttl_s)
        self._clock = clock
        self._max = max_entries
        self._cache: OrderedDict[str, tuple[str, datetime]] = OrderedDict()
        self._lock = threading.Lock()
        self._down_until: datetime | None = None

    def sign(self, paths: Iterable[str], *, degrade: bool = True) -> Signed:
        wanted = list(dict.fromkeys(paths))
        now = self._clock()
        found = self._cached(wanted, outliving=now + self._ttl / 2)  # young enough to hand out again
        missing = [p for p in wanted if p not in found]
        if missing:
            expires = now + self._ttl - _MARGIN
            try:
                signed = self._signed_urls(missing, now)
            except Unavailable:
                if not degrade:
                    raise
                found |= self._cached(missing, outliving=now)  # however old, as long as it still works
                signed = {}
            with self._lock:
                for path, url in signed.items():
                    found[path] = self._cache[path] = (url, expires)
                    self._cache.move_to_end(path)
                while len(self._cache) > self._max:
                    self._cache.popitem(last=False)
        earliest = min((expires for _, expires in found.values()), default=now + self._ttl)
        return Signed({p: found[p][0] for p in wanted if p in found}, earliest)

    def _cached(self, paths: list[str], *, outliving: datetime) -> dict[str, tuple[str, datetime]]:
        """The cached URLs among `paths` that expire after `outliving` (marked as recently used)."""
        found = {}
        with self._lock:
            for path in paths:
                cached = self._cache.get(path)
                if cached is not None and cached[1] > outliving:
                    self._cache.move_to_end(path)
                    found[path] = cached
        return found

    def _signed_urls(self, paths: list[str], now: datetime) -> dict[str, str]:
        down_until = self._down_until
        if down_until is not None and now < down_until:
            raise Unavailable("storage could not sign URLs a moment ago")
        try:
            signed = self._blobs.signed_urls(paths, ttl_s=int(self._ttl.total_seconds()))
        except Unavailable:
            self._down_until = now + _BACK_OFF
            log.warning(
                "storage cannot sign URLs; answering without them for a few seconds",
                extra={"event": "signing_unavailable", "paths": len(paths)},
            )
            raise
        self._down_until = None
        return signed
