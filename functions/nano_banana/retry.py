"""Full-jitter exponential backoff bounded by a deadline (one schedule for every outbound retry)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delay before retry n (1-based): uniform(0, min(cap, base * 2**(n-1))) — AWS's "full jitter"."""

    base_s: float = 1.0
    cap_s: float = 20.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))
