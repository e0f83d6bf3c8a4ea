"""What a processor reports its model used (the callback's optional `usage`) is recorded on the job and
shown by GET /jobs/{id}; a report without it leaves the counts null; a bad one is refused."""

from __future__ import annotations

import pytest

from tests.callback.test_callback import Start, _callback_url, _running_job, n8n_stack  # noqa: F401 (a fixture)
from tests.support.openapi import validate, validate_error

pytestmark = pytest.mark.callback

REPORTED = {"promptTokens": 268, "outputTokens": 2580, "totalTokens": 2848, "generationMs": 4321}


def test_a_reported_usage_is_recorded_and_rendered(n8n_stack: Start) -> None:  # noqa: F811
    server, fake = n8n_stack()
    fake.usage = REPORTED
    s = server.session()
    job = server.wait_for(s, server.create_job(s, variant_count=2).json()["jobId"], {"succeeded"})
    validate(job, "Job")
    assert job["usage"] == {
        "model": job["model"],
        "images": 2,
        "promptTokens": 268,
        "outputTokens": 2580,
        "totalTokens": 2848,
    }
    assert job["timings"]["generationMs"] == 4321
    assert 0 <= job["timings"]["queuedMs"] <= job["timings"]["totalMs"]


def test_a_failure_report_records_its_usage_and_no_images(n8n_stack: Start) -> None:  # noqa: F811
    server, fake = n8n_stack("fail")
    fake.usage = {"promptTokens": 268, "totalTokens": 268}
    s = server.session()
    job = server.wait_for(s, server.create_job(s).json()["jobId"], {"failed"})
    assert job["usage"]["images"] == 0
    assert (job["usage"]["promptTokens"], job["usage"]["outputTokens"], job["usage"]["totalTokens"]) == (268, None, 268)
    assert job["timings"]["generationMs"] is None


def test_no_usage_reported_leaves_the_counts_null(n8n_stack: Start) -> None:  # noqa: F811
    server, _ = n8n_stack()
    s = server.session()
    job = server.wait_for(s, server.create_job(s).json()["jobId"], {"succeeded"})
    assert job["usage"]["totalTokens"] is None
    assert job["usage"]["images"] == 2


@pytest.mark.parametrize("usage", [{"totalTokens": -1}, {"tokens": 5}, {"generationMs": "soon"}])
def test_a_malformed_usage_is_422_and_changes_nothing(n8n_stack: Start, usage: dict[str, object]) -> None:  # noqa: F811
    server, fake = n8n_stack("never")
    s = server.session()
    job = _running_job(server, fake, s)
    r = fake.call_back(
        _callback_url(server),
        {
            "jobId": job["id"],
            "status": "failed",
            "error": {"code": "generation_failed", "message": "x"},
            "usage": usage,
        },
    )
    assert r.status_code == 422, r.text
    validate_error(r.json(), "invalid_request")
    assert server.job(s, job["id"])["status"] == "running"
