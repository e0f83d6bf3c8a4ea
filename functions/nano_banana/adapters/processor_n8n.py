"""Processor mode: hand the job to an n8n workflow, signed; the result comes back through /callback."""

from __future__ import annotations

import json
import logging
import random
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import httpx

from nano_banana import webhooks
from nano_banana.errors import ProcessorUnavailable
from nano_banana.models import image_size
from nano_banana.ports import Clock, ProcessorJob

log = logging.getLogger("nano_banana")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class N8nProcessor:
    """POSTs the job to N8N_WEBHOOK_NANO_BANANA_PROCESSOR with Standard Webhooks headers (one signature per
    configured key, so n8n verifies whichever side rotated first). Only a 2xx JSON answer naming this job
    (`{"accepted": true, "jobId": ...}`) is a hand-off; anything else (an empty 200 from a workflow that
    never took the job, another job's id, a 401, a timeout) is retried with full-jitter backoff while the
    job's deadline allows."""

    def __init__(
        self,
        url: str,
        keys: Sequence[str],
        *,
        clock: Clock = _utc_now,
        timeout_s: float = 10.0,
        base_backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        client: httpx.Client | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not keys:
            raise ValueError("the n8n processor needs N8N_NANO_BANANA_SECRET")
        self._url = url
        self._secrets = tuple(keys)
        self._clock = clock
        self._timeout_s = timeout_s
        self._base = base_backoff_s
        self._cap = max_backoff_s
        self._client = client or httpx.Client()
        self._rng = rng or random.Random()

    @staticmethod
    def payload(work: ProcessorJob) -> dict[str, object]:
        job, request = work.job, work.request
        return {
            "jobId": str(job.id),
            "projectId": str(job.project_id),
            "prompt": request.prompt,
            "context": [{"prompt": turn.prompt} for turn in request.history],
            "inputUrl": work.input_url,
            "inputMimeType": request.image_mime,
            "outputPrefix": work.output_prefix,
            "uploadUrls": list(work.upload_urls),
            "uploadMethod": "PUT",
            "variantCount": request.variant_count,
            "aspectRatio": request.aspect_ratio,
            # Per job (docs/models.md): the model to call, `imageConfig.imageSize` when the model takes
            # one (else null), and the references to send after the input, in order.
            "model": request.model,
            "imageSize": image_size(request.model, request.resolution),
            "references": [
                {"url": url, "mimeType": ref.mime_type}
                for url, ref in zip(work.reference_urls, request.references, strict=True)
            ],
            "deadlineAt": job.deadline_at.isoformat().replace("+00:00", "Z"),
            "callbackUrl": work.callback_url,
            "attempt": job.attempt,
        }

    def _headers(self, body: bytes) -> dict[str, str]:
        now, msg_id = self._clock(), f"msg_{secrets.token_hex(12)}"
        signed = [webhooks.sign(body, key, msg_id=msg_id, now=now) for key in self._secrets]
        return {
            "Content-Type": "application/json",
            **signed[0],
            "webhook-signature": " ".join(h["webhook-signature"] for h in signed),
        }

    @staticmethod
    def _refusal(response: httpx.Response, job_id: str) -> str | None:
        """Why this answer is not n8n taking the job, or None when it is."""
        if not 200 <= response.status_code < 300:
            return f"n8n answered {response.status_code}"
        try:
            answer = response.json()
        except ValueError:
            return f"n8n answered {response.status_code} without a JSON body"
        if not isinstance(answer, dict) or answer.get("accepted") is not True or answer.get("jobId") != job_id:
            return f"n8n answered {response.status_code} without accepting job {job_id}"
        return None

    def submit(self, work: ProcessorJob, *, deadline: datetime) -> None:
        body = json.dumps(self.payload(work), separators=(",", ":")).encode()
        attempt = 0
        last = "no attempt was made"
        while (remaining := (deadline - self._clock()).total_seconds()) > 0.5:
            attempt += 1
            try:
                response = self._client.post(
                    self._url, content=body, headers=self._headers(body), timeout=min(self._timeout_s, remaining)
                )
                refusal = self._refusal(response, str(work.job.id))
                if refusal is None:
                    log.info(
                        "job handed to n8n",
                        extra={"event": "processor_submitted", "jobId": str(work.job.id), "attempt": attempt},
                    )
                    return
                last = refusal
            except httpx.HTTPError as exc:
                last = f"n8n did not answer ({type(exc).__name__})"
            delay = self._rng.uniform(0, min(self._cap, self._base * 2 ** (attempt - 1)))
            log.warning(
                "n8n submit failed",
                extra={"event": "processor_retry", "jobId": str(work.job.id), "attempt": attempt, "reason": last},
            )
            time.sleep(max(0.0, min(delay, (deadline - self._clock()).total_seconds() - 0.5)))
        raise ProcessorUnavailable(f"the processor could not take the job before the deadline: {last}")
