"""Standard Webhooks signatures (the `standardwebhooks` package) for callbacks and processor requests.

The HMAC key is the UTF-8 bytes of N8N_NANO_BANANA_SECRET (no `whsec_`/base64 step), so n8n's Crypto
node computes the same signature: HMAC-SHA256(secret, "{webhook-id}.{webhook-timestamp}.{raw body}"),
base64, sent as `webhook-signature: v1,<base64>`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets as random_ids
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from nano_banana.errors import InvalidSignature

MAX_TOLERANCE_S = 300  # the package's own window; ours may only be narrower


def sign(body: bytes, secret: str, *, msg_id: str | None = None, now: datetime | None = None) -> dict[str, str]:
    """Headers that make `body` verifiable with `secret`."""
    msg_id = msg_id or f"msg_{random_ids.token_hex(12)}"
    at = now or datetime.now(UTC)
    signature = Webhook(secret.encode()).sign(msg_id, at, body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())), "webhook-signature": signature}


def verify(body: bytes, headers: Mapping[str, str], secrets: Sequence[str], *, tolerance_s: int, now: datetime) -> str:
    """The webhook id, if any of the (rotating) secrets signed exactly this body and these headers
    within the tolerance; InvalidSignature otherwise. Constant-time comparison inside the package."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    if not secrets:
        raise InvalidSignature("callbacks are not configured (no N8N_NANO_BANANA_SECRET)")
    if not (msg_id and stamp and lowered.get("webhook-signature")) or len(msg_id) > 255:
        raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    if not stamp.isdigit() or abs(now.timestamp() - int(stamp)) > min(tolerance_s, MAX_TOLERANCE_S):
        raise InvalidSignature("webhook-timestamp is outside the accepted window")
    # The package computes the scheme's signature; its own verify() reads the wall clock, and we need the
    # injected clock (skew tests) and a configurable window, so the comparison happens here.
    try:
        text = body.decode()
        offered = [
            base64.b64decode(sig, validate=True)
            for version, _, sig in (item.partition(",") for item in lowered["webhook-signature"].split(" "))
            if version == "v1"
        ]
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise InvalidSignature("the signature is malformed") from exc
    at = datetime.fromtimestamp(int(stamp), tz=UTC)
    for secret in secrets:
        expected = base64.b64decode(Webhook(secret.encode()).sign(msg_id, at, text).split(",", 1)[1])
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return msg_id
    raise InvalidSignature("no signature matches")
