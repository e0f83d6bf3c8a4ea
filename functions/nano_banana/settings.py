"""All configuration, read once from the environment into one object."""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nano_banana.models import check_allowlist

DEV_JWT_SECRET = "nano-banana-dev-secret-not-for-production-0123456789"  # noqa: S105 (local dev only; refused with a database URL)


# base64 of "nano-banana-dev-webhook-secret!!"; only ever used on the embedded database of `make dev`.
DEV_WEBHOOK_SECRET = "whsec_bmFuby1iYW5hbmEtZGV2LXdlYmhvb2stc2VjcmV0ISE="  # noqa: S105


def _comma_list(value: str) -> list[str]:
    """A comma-separated setting's items, trimmed, empty ones dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class CoreSettings(BaseSettings):
    """What the local tools (`nano-banana dev-token`, `migrate`) need: where the database is and how
    tokens are signed. Nothing else is read or validated, so a shell set up for another backend (say
    `NANO_BANANA_GENERATOR=n8n` without its webhook) can still mint a local token."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True, frozen=True)

    database_url: SecretStr | None = Field(None, validation_alias=_env("NANO_BANANA_DATABASE_URL", "DATABASE_URL"))
    data_dir: Path = Field(Path(".data"), validation_alias="NANO_BANANA_DATA_DIR")
    db_connect_timeout_s: float = Field(3.0, gt=0, validation_alias="NANO_BANANA_DB_CONNECT_TIMEOUT_S")

    # Auth (Supabase access tokens).
    jwt_secret: SecretStr = Field(
        SecretStr(DEV_JWT_SECRET), validation_alias=_env("NANO_BANANA_JWT_SECRET", "SUPABASE_JWT_SECRET")
    )
    jwt_audience: str = Field("authenticated", validation_alias="NANO_BANANA_JWT_AUDIENCE")

    @model_validator(mode="after")
    def _production_needs_a_real_jwt_secret(self) -> CoreSettings:
        if self.database_url is not None and self.jwt_secret.get_secret_value() == DEV_JWT_SECRET:
            # Even with JWKS (asymmetric user tokens) the secret keys the event-stream tickets.
            raise ValueError("NANO_BANANA_JWT_SECRET must be set outside local dev")
        return self

    @property
    def embedded(self) -> bool:
        """True when running on the embedded Postgres of `make dev` (no database URL given)."""
        return self.database_url is None


class Settings(CoreSettings):
    """Every setting, with the defaults `make dev` runs on. Names are the env vars in docs/configuration.md."""

    # Which implementation of each port runs (the database: CoreSettings.database_url).
    # Where event streams LISTEN (one connection per process). Unset: the database URL, with Supabase's
    # transaction pooler (port 6543, which cannot LISTEN) swapped for its session mode (port 5432).
    listen_database_url: SecretStr | None = Field(None, validation_alias="NANO_BANANA_LISTEN_DATABASE_URL")
    limits: Literal["memory", "firestore"] = Field("memory", validation_alias="NANO_BANANA_LIMITS")
    queue: Literal["inline", "cloudtasks"] = Field("inline", validation_alias="NANO_BANANA_QUEUE")
    storage: Literal["local", "supabase"] = Field("local", validation_alias="NANO_BANANA_STORAGE")
    generator: Literal["preview", "vertex", "n8n"] = Field("preview", validation_alias="NANO_BANANA_GENERATOR")

    # Local/dev.
    host: str = Field("127.0.0.1", validation_alias="NANO_BANANA_HOST")
    port: int = Field(8080, validation_alias=_env("PORT", "NANO_BANANA_PORT"))
    public_base_url: str | None = Field(None, validation_alias="NANO_BANANA_PUBLIC_URL")
    preview_delay_ms: int = Field(0, ge=0, le=600_000, validation_alias="NANO_BANANA_PREVIEW_DELAY_MS")
    log_level: str = Field("INFO", validation_alias="NANO_BANANA_LOG_LEVEL")
    # Background warm-up of a cold instance's clients (JWKS, Storage, Firestore, Cloud Tasks): off only
    # for measuring what it buys (bench/coldstart.py) and for tests that must see nothing in the background.
    warm_up: bool = Field(True, validation_alias="NANO_BANANA_WARM_UP")

    # Guardrails.
    max_file_bytes: int = Field(10 * 1024 * 1024, ge=1, validation_alias="NANO_BANANA_MAX_FILE_BYTES")
    max_pixels: int = Field(50_000_000, ge=1, validation_alias="NANO_BANANA_MAX_PIXELS")
    # All `reference` files of one multipart POST /jobs together (each also within max_file_bytes); more
    # references go as referencePaths (uploaded one at a time). Bounds what one request holds in memory.
    max_reference_bytes: int = Field(20 * 1024 * 1024, ge=0, validation_alias="NANO_BANANA_MAX_REFERENCE_BYTES")
    # Per-process memory for request bodies being uploaded and for decoded pixels (images.MemoryBudget).
    upload_memory_mb: int = Field(192, ge=16, validation_alias="NANO_BANANA_UPLOAD_MEMORY_MB")
    decode_memory_mb: int = Field(256, ge=16, validation_alias="NANO_BANANA_DECODE_MEMORY_MB")
    rate_per_hour: int = Field(10, ge=1, validation_alias="NANO_BANANA_RATE_PER_HOUR")
    max_active_per_project: int = Field(2, ge=1, validation_alias="NANO_BANANA_MAX_ACTIVE_PER_PROJECT")
    # Images a project may make per UTC calendar month (0 = no budget); a row in
    # pip_ai_project_budgets overrides it per project (docs/usage.md).
    project_monthly_images: int = Field(0, ge=0, validation_alias="NANO_BANANA_PROJECT_MONTHLY_IMAGES")
    timeout_s: int = Field(300, ge=1, le=3600, validation_alias="NANO_BANANA_TIMEOUT_S")
    # The sweep re-enqueues the generate task of a job still queued this long after its creation.
    requeue_grace_s: int = Field(30, ge=1, le=3600, validation_alias="NANO_BANANA_REQUEUE_GRACE_S")
    max_prompt_chars: int = Field(2000, ge=1, validation_alias="NANO_BANANA_MAX_PROMPT_CHARS")
    max_thread_turns: int = Field(20, ge=1, validation_alias="NANO_BANANA_MAX_THREAD_TURNS")
    default_variant_count: int = Field(2, ge=1, le=4, validation_alias="NANO_BANANA_DEFAULT_VARIANTS")

    # Data lifecycle (the sweep). Unset retention keeps everything until a user deletes it.
    retention_days: int | None = Field(None, ge=1, validation_alias="NANO_BANANA_RETENTION_DAYS")
    # Per sweep run, so one run stays within its time budget: jobs deleted (whole threads), input folders
    # scanned. bench/retention.py measures the time per job.
    retention_batch: int = Field(200, ge=1, le=5000, validation_alias="NANO_BANANA_RETENTION_BATCH")
    orphan_batch: int = Field(100, ge=1, le=1000, validation_alias="NANO_BANANA_ORPHAN_BATCH")
    # An upload no job references is deleted once older than this (far beyond any creation's duration).
    orphan_grace_s: int = Field(3600, ge=60, validation_alias="NANO_BANANA_ORPHAN_GRACE_S")

    # Auth: CoreSettings has the JWT secret and audience.
    jwks_url: str | None = Field(None, validation_alias="NANO_BANANA_JWKS_URL")

    # Supabase.
    supabase_url: str | None = Field(None, validation_alias="SUPABASE_URL")
    supabase_service_key: SecretStr | None = Field(
        None, validation_alias=_env("SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SERVICE_KEY")
    )
    bucket: str = Field("pip-ai-images", validation_alias="NANO_BANANA_BUCKET")
    signed_url_ttl_s: int = Field(3600, ge=10, le=7 * 86400, validation_alias="NANO_BANANA_SIGNED_URL_TTL_S")
    # Browser origins (the builder's) allowed to call the API cross-origin, comma-separated; "*" for any.
    cors_origins_list: str = Field("", validation_alias="NANO_BANANA_CORS_ORIGINS")
    db_pool_max: int = Field(5, ge=1, validation_alias="NANO_BANANA_DB_POOL_MAX")

    # Google Cloud.
    gcp_project: str | None = Field(None, validation_alias=_env("GOOGLE_CLOUD_PROJECT", "NANO_BANANA_GCP_PROJECT"))
    gcp_location: str = Field("us-central1", validation_alias=_env("NANO_BANANA_LOCATION", "GOOGLE_CLOUD_LOCATION"))
    vertex_location: str = Field("global", validation_alias="NANO_BANANA_VERTEX_LOCATION")
    model: str = Field("gemini-2.5-flash-image", validation_alias="NANO_BANANA_MODEL")
    # The models a job may ask for, comma-separated, the first the default (unset: NANO_BANANA_MODEL alone);
    # each must be in nano_banana/models.py's capability table.
    models_list: str = Field("", validation_alias="NANO_BANANA_MODELS")
    # Vertex AI takes images up to 7 MB inline; larger uploads (we accept 10 MB) are re-encoded to fit.
    vertex_inline_max_bytes: int = Field(7_000_000, ge=100_000, validation_alias="NANO_BANANA_VERTEX_INLINE_MAX_BYTES")
    vertex_base_url: str | None = Field(None, validation_alias="NANO_BANANA_VERTEX_BASE_URL")
    firestore_database: str = Field("(default)", validation_alias="NANO_BANANA_FIRESTORE_DATABASE")
    firestore_collection_prefix: str = Field("nano_banana", validation_alias="NANO_BANANA_FIRESTORE_PREFIX")
    tasks_queue: str = Field("nano-banana", validation_alias="NANO_BANANA_TASKS_QUEUE")
    tasks_endpoint: str | None = Field(None, validation_alias="NANO_BANANA_TASKS_ENDPOINT")
    generate_url: str | None = Field(None, validation_alias="NANO_BANANA_GENERATE_URL")
    expire_url: str | None = Field(None, validation_alias="NANO_BANANA_EXPIRE_URL")
    tasks_service_account: str | None = Field(None, validation_alias="NANO_BANANA_TASKS_SERVICE_ACCOUNT")
    scheduler_service_account: str | None = Field(None, validation_alias="NANO_BANANA_SCHEDULER_SERVICE_ACCOUNT")
    sweep_url: str | None = Field(None, validation_alias="NANO_BANANA_SWEEP_URL")
    verify_task_oidc: bool = Field(True, validation_alias="NANO_BANANA_VERIFY_TASK_OIDC")
    task_oidc_audience: str | None = Field(None, validation_alias="NANO_BANANA_TASK_OIDC_AUDIENCE")
    task_oidc_certs_url: str | None = Field(None, validation_alias="NANO_BANANA_TASK_OIDC_CERTS_URL")

    # Optional n8n processor (names kept from the original integration notes).
    n8n_webhook_url: str | None = Field(None, validation_alias="N8N_WEBHOOK_NANO_BANANA_PROCESSOR")
    n8n_secret: SecretStr | None = Field(None, validation_alias="N8N_NANO_BANANA_SECRET")
    callback_url: str | None = Field(None, validation_alias="NANO_BANANA_CALLBACK_URL")
    callback_tolerance_s: int = Field(300, ge=1, le=300, validation_alias="NANO_BANANA_CALLBACK_TOLERANCE_S")
    callback_max_bytes: int = Field(64 * 1024, ge=1024, validation_alias="NANO_BANANA_CALLBACK_MAX_BYTES")
    # A delivery still applying after this long is taken for dead: a duplicate of it may claim its webhook
    # id again (until then duplicates are answered 503). Overlapping a slow live one is safe (every
    # transition is a CAS, a repeated success is idempotent); a long TTL would outlast the processor's retries.
    callback_claim_ttl_s: int = Field(30, ge=1, le=3600, validation_alias="NANO_BANANA_CALLBACK_CLAIM_TTL_S")

    # Completion webhooks (docs/webhooks.md). Unset http hosts: 127.0.0.1 and localhost on the embedded
    # database of `make dev`, none in production.
    webhook_http_hosts_list: str | None = Field(None, validation_alias="NANO_BANANA_WEBHOOK_HTTP_HOSTS")
    webhook_allowed_hosts_list: str = Field("", validation_alias="NANO_BANANA_WEBHOOK_ALLOWED_HOSTS")
    webhook_ports_list: str = Field("", validation_alias="NANO_BANANA_WEBHOOK_PORTS")
    webhook_signing_secrets_list: SecretStr | None = Field(None, validation_alias="NANO_BANANA_WEBHOOK_SIGNING_SECRETS")
    webhook_target_url: str | None = Field(None, validation_alias="NANO_BANANA_WEBHOOK_URL")
    webhook_tasks_queue: str = Field("nano-banana-webhooks", validation_alias="NANO_BANANA_WEBHOOK_TASKS_QUEUE")

    @model_validator(mode="after")
    def _selected_backends_are_configured(self) -> Settings:
        if self.storage == "supabase" and (not self.supabase_url or self.supabase_service_key is None):
            raise ValueError("NANO_BANANA_STORAGE=supabase needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY")
        if self.generator == "n8n" and (not self.n8n_webhook_url or self.n8n_secret is None):
            raise ValueError(
                "NANO_BANANA_GENERATOR=n8n needs N8N_WEBHOOK_NANO_BANANA_PROCESSOR and N8N_NANO_BANANA_SECRET"
            )
        if self.queue == "cloudtasks" and not (self.generate_url and self.expire_url):
            raise ValueError("NANO_BANANA_QUEUE=cloudtasks needs NANO_BANANA_GENERATE_URL and NANO_BANANA_EXPIRE_URL")
        check_allowlist(self.models)
        return self

    @field_validator("webhook_signing_secrets_list")
    @classmethod
    def _secrets_are_whsec(cls, value: SecretStr | None) -> SecretStr | None:
        for secret in _comma_list(value.get_secret_value() if value is not None else ""):
            if not re.fullmatch(r"whsec_[A-Za-z0-9+/]{16,}={0,2}", secret):
                raise ValueError("NANO_BANANA_WEBHOOK_SIGNING_SECRETS: each secret is whsec_ and base64 (16+ bytes)")
        return value

    @field_validator("webhook_ports_list")
    @classmethod
    def _ports_are_ports(cls, value: str) -> str:
        if not all(p.isdigit() and 0 < int(p) < 65536 for p in _comma_list(value)):
            raise ValueError("NANO_BANANA_WEBHOOK_PORTS: comma-separated port numbers")
        return value

    @field_validator("cors_origins_list")
    @classmethod
    def _origins_are_origins(cls, value: str) -> str:
        for origin in _comma_list(value):
            if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?", origin):
                raise ValueError(f"NANO_BANANA_CORS_ORIGINS: {origin[:100]!r} is not an origin (scheme://host[:port])")
        return value

    @property
    def models(self) -> tuple[str, ...]:
        """The allowlist of models a job may name; the first is the default."""
        return tuple(dict.fromkeys(_comma_list(self.models_list))) or (self.model,)

    @property
    def cors_origins(self) -> frozenset[str]:
        return frozenset(_comma_list(self.cors_origins_list))

    @property
    def webhook_http_hosts(self) -> frozenset[str]:
        if self.webhook_http_hosts_list is None:
            return frozenset({"127.0.0.1", "localhost"}) if self.embedded else frozenset()
        return frozenset(h.lower() for h in _comma_list(self.webhook_http_hosts_list))

    @property
    def webhook_allowed_hosts(self) -> tuple[str, ...]:
        return tuple(h.lower() for h in _comma_list(self.webhook_allowed_hosts_list))

    @property
    def webhook_ports(self) -> frozenset[int]:
        return frozenset(int(p) for p in _comma_list(self.webhook_ports_list))

    @property
    def webhook_signing_secrets(self) -> list[str]:
        """Every listed secret signs each delivery (rotation: add the new one, then drop the old). `make dev`
        signs with a fixed development secret when none is set."""
        if self.webhook_signing_secrets_list is not None:
            return _comma_list(self.webhook_signing_secrets_list.get_secret_value())
        return [DEV_WEBHOOK_SECRET] if self.embedded else []

    @property
    def webhooks_configured(self) -> bool:
        """Whether this deployment delivers webhooks: on Cloud Tasks, to a webhook function (which holds the
        signing secrets, the api does not); in process, with secrets to sign them."""
        if self.queue == "cloudtasks":
            return bool(self.webhook_target_url)
        return bool(self.webhook_signing_secrets)

    @cached_property
    def base_url(self) -> str:
        return (self.public_base_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def callback_secrets(self) -> list[str]:
        """N8N_NANO_BANANA_SECRET may list several keys, comma-separated, for rotation."""
        if self.n8n_secret is None:
            return []
        return _comma_list(self.n8n_secret.get_secret_value())


def load_settings() -> Settings:
    return Settings()


def load_core_settings() -> CoreSettings:
    """Only what the local tools need (CoreSettings); unrelated settings are not validated."""
    return CoreSettings()
