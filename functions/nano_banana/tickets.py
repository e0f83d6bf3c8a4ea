"""Event-stream tickets: what a browser's EventSource puts in the URL instead of the user's token.

EventSource cannot send an Authorization header, so the stream URL must carry a credential, and URLs end
up in request logs (Cloud Run logs every request URL with its query string). A Supabase access token
there would be a bearer secret for the whole API, for an hour. A ticket is a JWT of its own kind instead:
signed with a key derived from the JWT secret (so neither kind of token passes for the other), audience
`nano-banana/events`, good for one job's stream, for one user, until shortly after the job's deadline.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import datetime

import jwt

from nano_banana.errors import Unauthenticated

AUDIENCE = "nano-banana/events"


class StreamTickets:
    def __init__(self, jwt_secret: str) -> None:
        self._key = hmac.new(jwt_secret.encode(), b"nano-banana/stream-tickets/v1", hashlib.sha256).digest()

    def issue(self, job_id: uuid.UUID, user_id: uuid.UUID, expires_at: datetime) -> str:
        claims = {"sub": str(user_id), "job": str(job_id), "aud": AUDIENCE, "exp": int(expires_at.timestamp())}
        return jwt.encode(claims, self._key, algorithm="HS256")

    def user_for(self, ticket: str, job_id: uuid.UUID) -> uuid.UUID:
        """The user a ticket was issued to, if it is genuine, unexpired and for this job."""
        try:
            claims = jwt.decode(
                ticket,
                self._key,
                algorithms=["HS256"],
                audience=AUDIENCE,
                options={"require": ["sub", "job", "aud", "exp"]},
            )
            if claims["job"] != str(job_id):
                raise Unauthenticated("the ticket is for another job")
            return uuid.UUID(claims["sub"])
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise Unauthenticated("the stream ticket is invalid or expired") from exc
