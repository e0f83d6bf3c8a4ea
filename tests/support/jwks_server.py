"""A JWKS endpoint on loopback: public keys as Supabase projects with asymmetric signing keys publish
them (`/auth/v1/.well-known/jwks.json`), and tokens signed with the matching private keys.
Used by tests/unit/test_jwks.py and bench/coldstart.py."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


class JwksServer:
    """Serves `keys` ({kid: (private key, "ES256" | "RS256")}) and counts how often it was fetched."""

    def __init__(self, keys: dict[str, tuple[Any, str]]) -> None:
        self.keys = keys
        published = []
        for kid, (private, alg) in keys.items():
            algorithm = ECAlgorithm if alg.startswith("ES") else RSAAlgorithm
            jwk = json.loads(algorithm.to_jwk(private.public_key()))
            published.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
        body = json.dumps({"keys": published}).encode()
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="jwks-server", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/auth/v1/.well-known/jwks.json"

    def token(self, kid: str, user_id: uuid.UUID | None = None, **claims: Any) -> str:
        """A Supabase-shaped access token signed with the key `kid` (claims override the defaults)."""
        private, alg = self.keys[kid]
        now = int(time.time())
        base = {
            "sub": str(user_id or uuid.uuid4()),
            "aud": "authenticated",
            "role": "authenticated",
            "iat": now,
            "exp": now + 600,
        }
        return jwt.encode({**base, **claims}, private, algorithm=alg, headers={"kid": kid})

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
