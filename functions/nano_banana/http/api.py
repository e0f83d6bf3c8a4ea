"""What the `api` entry point holds: the use cases' services, the token verifier, stream tickets, the URL signer."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nano_banana import usecases
from nano_banana.auth import TokenVerifier
from nano_banana.signing import UrlSigner
from nano_banana.tickets import StreamTickets

log = logging.getLogger("nano_banana")


BASE_PATH = "/api/nano-banana"


@dataclass(frozen=True)
class Api:
    """What the `api` entry point needs: the use cases' services, the token verifier, stream tickets and
    the URL signer."""

    services: usecases.Services
    verifier: TokenVerifier
    tickets: StreamTickets
    signer: UrlSigner
