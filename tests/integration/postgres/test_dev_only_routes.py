"""The studio's dev sign-in exists only on the embedded dev server, never in the deployed functions."""

from __future__ import annotations

import pytest

from nano_banana import bootstrap, http
from nano_banana.dev import create_app
from nano_banana.embedded_pg import EmbeddedPostgres
from nano_banana.errors import NotFound
from nano_banana.settings import Settings

pytestmark = pytest.mark.postgres


def test_the_deployed_api_router_has_no_dev_routes() -> None:
    with pytest.raises(NotFound):
        http.route(http.ROUTES, "POST", "/api/nano-banana/dev/session")
    assert not any("dev" in pattern.pattern for _, pattern, _ in http.ROUTES)


def test_a_server_on_a_real_database_has_no_dev_sign_in(embedded_pg: EmbeddedPostgres, tmp_path: object) -> None:
    settings = Settings(
        NANO_BANANA_DATABASE_URL=embedded_pg.uri,
        NANO_BANANA_JWT_SECRET="a-production-like-secret-0123456789abcdef",
        NANO_BANANA_DATA_DIR=tmp_path,
    )
    rt = bootstrap.build(settings)
    try:
        client = create_app(rt).test_client()
        r = client.post("/api/nano-banana/dev/session")
        assert r.status_code == 404
        assert r.get_json()["error"]["code"] == "not_found"
        assert client.get("/api/nano-banana/config").status_code == 200
    finally:
        rt.close()
