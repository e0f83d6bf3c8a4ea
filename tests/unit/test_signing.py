"""The URL signer: one store call per response for what is not cached, the same URL while it is young."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from nano_banana.adapters.blobs_local import LocalBlobStore
from nano_banana.errors import Unavailable
from nano_banana.signing import UrlSigner

pytestmark = pytest.mark.unit

TTL = 3600


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class CountingStore(LocalBlobStore):
    """The real local store, recording each bulk-signing call it is asked for."""

    def __init__(self, root: Path, clock: Clock) -> None:
        super().__init__(root, "http://127.0.0.1:9", b"k" * 32, clock)
        self.sign_calls: list[list[str]] = []

    def signed_urls(self, paths: Sequence[str], *, ttl_s: int) -> dict[str, str]:
        self.sign_calls.append(list(paths))
        return super().signed_urls(paths, ttl_s=ttl_s)


def _exp(url: str) -> int:
    return int(parse_qs(urlparse(url).query)["exp"][0])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> CountingStore:
    store = CountingStore(tmp_path, clock)
    for name in ("a", "b", "c"):
        store.put(f"jobs/j/1/{name}.png", b"\x89PNG", "image/png")
    return store


def test_one_call_then_the_same_urls_while_young(store: CountingStore, clock: Clock) -> None:
    signer = UrlSigner(store, ttl_s=TTL, clock=clock)
    paths = ["jobs/j/1/a.png", "jobs/j/1/b.png", "jobs/j/1/a.png"]
    first = signer.sign(paths)
    assert store.sign_calls == [["jobs/j/1/a.png", "jobs/j/1/b.png"]], "one call, each path once"
    clock.now += timedelta(seconds=TTL / 2 - 10)
    again = signer.sign(paths)
    assert again.urls == first.urls
    assert len(store.sign_calls) == 1, "nothing re-signed"
    assert again.expires_at == first.expires_at
    assert again.expires_at <= datetime.fromtimestamp(min(map(_exp, first.urls.values())), UTC)


def test_only_what_is_past_half_its_life_is_signed_again(store: CountingStore, clock: Clock) -> None:
    signer = UrlSigner(store, ttl_s=TTL, clock=clock)
    old = signer.sign(["jobs/j/1/a.png"]).urls
    clock.now += timedelta(seconds=TTL / 2 + 1)
    signed = signer.sign(["jobs/j/1/a.png", "jobs/j/1/b.png"])
    assert store.sign_calls[-1] == ["jobs/j/1/a.png", "jobs/j/1/b.png"]
    assert signed.urls["jobs/j/1/a.png"] != old["jobs/j/1/a.png"]
    mixed = signer.sign(["jobs/j/1/b.png", "jobs/j/1/c.png"])
    assert store.sign_calls[-1] == ["jobs/j/1/c.png"], "b is still young"
    assert mixed.urls["jobs/j/1/b.png"] == signed.urls["jobs/j/1/b.png"]


def test_every_url_handed_out_has_half_its_lifetime_left(store: CountingStore, clock: Clock) -> None:
    signer = UrlSigner(store, ttl_s=TTL, clock=clock)
    for _ in range(40):
        signed = signer.sign(["jobs/j/1/a.png", "jobs/j/1/b.png"])
        now = clock.now.timestamp()
        assert all(_exp(url) - now >= TTL / 2 for url in signed.urls.values())
        assert signed.expires_at.timestamp() - now >= TTL / 2 - 2
        clock.now += timedelta(seconds=97)
    assert 2 < len(store.sign_calls) < 40


def test_missing_objects_are_left_out_and_not_cached(store: CountingStore, clock: Clock) -> None:
    signer = UrlSigner(store, ttl_s=TTL, clock=clock)
    signed = signer.sign(["jobs/j/1/a.png", "jobs/j/1/gone.png"])
    assert list(signed.urls) == ["jobs/j/1/a.png"]
    store.put("jobs/j/1/gone.png", b"\x89PNG", "image/png")
    assert "jobs/j/1/gone.png" in signer.sign(["jobs/j/1/gone.png"]).urls
    empty = signer.sign([])
    assert empty.urls == {}
    assert empty.expires_at == clock.now + timedelta(seconds=TTL)


def test_the_cache_is_bounded(store: CountingStore, clock: Clock) -> None:
    signer = UrlSigner(store, ttl_s=TTL, clock=clock, max_entries=2)
    signer.sign(["jobs/j/1/a.png"])
    signer.sign(["jobs/j/1/b.png"])
    signer.sign(["jobs/j/1/a.png"])  # a is now the most recently used
    signer.sign(["jobs/j/1/c.png"])  # evicts b
    calls = len(store.sign_calls)
    signer.sign(["jobs/j/1/a.png", "jobs/j/1/c.png"])
    assert len(store.sign_calls) == calls
    signer.sign(["jobs/j/1/b.png"])
    assert store.sign_calls[-1] == ["jobs/j/1/b.png"]


class FlakyStore(CountingStore):
    """The real local store, made to fail like Supabase does after its retries while `down`."""

    down = False

    def signed_urls(self, paths: Sequence[str], *, ttl_s: int) -> dict[str, str]:
        if self.down:
            self.sign_calls.append(list(paths))
            raise Unavailable("storage unreachable while trying to sign")
        return super().signed_urls(paths, ttl_s=ttl_s)


def test_an_outage_answers_with_what_is_still_valid_and_backs_off(tmp_path: Path, clock: Clock) -> None:
    store = FlakyStore(tmp_path, clock)
    for name in ("a", "b"):
        store.put(f"jobs/j/1/{name}.png", b"\x89PNG", "image/png")
    signer = UrlSigner(store, ttl_s=TTL, clock=clock)
    old = signer.sign(["jobs/j/1/a.png"]).urls
    clock.now += timedelta(seconds=TTL * 0.75)  # a is past half its life, not expired
    store.down = True
    during = signer.sign(["jobs/j/1/a.png", "jobs/j/1/b.png"])
    assert during.urls == old, "the old URL still works; b has none"
    assert len(store.sign_calls) == 2
    signer.sign(["jobs/j/1/b.png"])
    assert len(store.sign_calls) == 2, "nobody waits on Storage again right away"
    with pytest.raises(Unavailable):
        signer.sign(["jobs/j/1/b.png"], degrade=False)
    clock.now += timedelta(seconds=TTL * 0.25)  # a has expired now
    assert signer.sign(["jobs/j/1/a.png"]).urls == {}, "an expired URL is never handed out"
    store.down = False
    clock.now += timedelta(seconds=6)
    back = signer.sign(["jobs/j/1/a.png", "jobs/j/1/b.png"])
    assert sorted(back.urls) == ["jobs/j/1/a.png", "jobs/j/1/b.png"]
    assert back.urls["jobs/j/1/a.png"] != old["jobs/j/1/a.png"]
