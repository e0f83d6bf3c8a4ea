"""Stream tickets: one job, one user, until they expire; neither kind of token passes for the other."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from nano_banana.auth import TokenVerifier
from nano_banana.errors import Unauthenticated
from nano_banana.tickets import StreamTickets

pytestmark = pytest.mark.unit
SECRET = "a-real-supabase-jwt-secret-of-decent-length"


def test_a_ticket_names_its_user_for_its_job_only() -> None:
    tickets = StreamTickets(SECRET)
    job, user = uuid.uuid4(), uuid.uuid4()
    ticket = tickets.issue(job, user, datetime.now(UTC) + timedelta(minutes=5))
    assert tickets.user_for(ticket, job) == user
    with pytest.raises(Unauthenticated):
        tickets.user_for(ticket, uuid.uuid4())


def test_expired_forged_and_foreign_tickets_are_refused() -> None:
    tickets = StreamTickets(SECRET)
    job, user = uuid.uuid4(), uuid.uuid4()
    expired = tickets.issue(job, user, datetime.now(UTC) - timedelta(seconds=1))
    other_key = StreamTickets("another-secret-another-secret-another").issue(
        job, user, datetime.now(UTC) + timedelta(1)
    )
    # Signed with the JWT secret itself (a Supabase access token's key): not a ticket.
    raw_secret = jwt.encode(
        {"sub": str(user), "job": str(job), "aud": "nano-banana/events", "exp": 2**31}, SECRET, algorithm="HS256"
    )
    unsigned = jwt.encode({"sub": str(user), "job": str(job), "aud": "nano-banana/events"}, None, algorithm="none")
    for bad in (expired, other_key, raw_secret, unsigned, "", "a.b.c"):
        with pytest.raises(Unauthenticated):
            tickets.user_for(bad, job)


def test_a_ticket_is_not_an_access_token() -> None:
    ticket = StreamTickets(SECRET).issue(uuid.uuid4(), uuid.uuid4(), datetime.now(UTC) + timedelta(minutes=5))
    with pytest.raises(Unauthenticated):
        TokenVerifier(secret=SECRET, audience="authenticated", jwks_url=None).user_id(f"Bearer {ticket}")
