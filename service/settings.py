"""The one settings object, read from `FLYWHEEL_*` environment variables at start-up.

Nested areas use `__`: `FLYWHEEL_FEEDBACK__DATABASE_URL=postgresql+psycopg://...`.
Every path defaults to somewhere under `data_dir` (inside the project), so nothing is
written to the home directory. This is the only module that reads the environment;
everything else receives values through constructors.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from feedback.log_stream import LogStreamSettings
from monitoring.drift_schedule import DriftTarget
from monitoring.settings import MonitoringSettings
from service.token_strength import MIN_TOKEN_BITS, strong_enough

PROJECT_ROOT = Path(__file__).resolve().parent.parent
UNSAFE_TOKENS = {"", "changeme", "admin", "secret", "dev-admin-token"}


class ServingSettings(BaseModel):
    workers: int = Field(1, ge=1, le=64)
    """BentoML worker processes; each loads its own onnxruntime session."""
    providers: list[str] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    """onnxruntime execution providers in order of preference."""
    require_gpu: bool = False
    """Refuse to start unless onnxruntime really runs on CUDA."""
    intra_op_threads: int = Field(1, ge=1)
    """onnxruntime intra-op threads per worker."""
    allow_tf32: bool = False
    """Let CUDA multiply float32 matrices in TF32 (faster on Ampere and newer GPUs,
    a 10-bit mantissa). Off: GPU probabilities agree with the CPU's to 1e-5."""
    batching: Literal["auto", "on", "off"] = "auto"
    """Coalesce rows of concurrent requests into one model call: `auto` does it on
    CUDA only, where a bigger batch is cheaper; on CPU a direct call is faster."""
    max_batch_rows: int = Field(1024, ge=1)
    """Most rows one model call takes when coalescing."""
    max_request_rows: int = Field(10_000, ge=1)
    """Most instances one /predict request may carry."""
    max_body_bytes: int = Field(2_000_000, ge=1024)
    """Largest request body accepted, in bytes."""
    reload_poll_s: float = Field(1.0, gt=0)
    """How often each worker checks for a promoted pack or a new policy."""
    trace_requests: bool = False
    """Open an OpenTelemetry span per API request (exported where BentoML's tracing
    config says). Off, BentoML's tracing middleware passes API paths straight
    through, which it otherwise costs on every request even with no exporter."""
    request_timeout_s: float = Field(30.0, gt=0)
    """Longest BentoML lets one request run (a promotion replays the gate inside
    its request) before it answers 504."""
    freeze_gc: bool = True
    """Freeze the start-up heap and raise GC thresholds (cuts tail latency)."""

    def pack_options(self) -> dict[str, Any]:
        """How `ModelPack.load` loads a pack to serve under these settings."""
        return {
            "providers": self.providers,
            "require_gpu": self.require_gpu,
            "intra_op_threads": self.intra_op_threads,
            "allow_tf32": self.allow_tf32,
        }


class GuardrailSettings(BaseModel):
    policy_path: Path | None = None
    """Guardrail policy served at start-up instead of the pack's own `policy.yaml`
    (until replaced by the admin endpoint)."""


class FeedbackSettings(BaseModel):
    database_url: str | None = None
    """SQLAlchemy URL; default is an SQLite file under data_dir."""
    migrate_on_start: bool = True
    """Run Alembic migrations when the service starts."""
    report_rate_per_minute: int = Field(60, ge=1)
    """Reports one client may submit per minute (per worker)."""
    gate_max_newly_broken: int = Field(0, ge=0)
    """Promotion gate: regression cases a candidate may break."""
    gate_max_metric_drop: float = Field(0.01, ge=0, le=1)
    """Promotion gate: allowed absolute drop of test accuracy / macro-F1."""
    gate_shadow_min_rows: int = Field(200, ge=1)
    """Promotion gate: rows a candidate's shadow run must have answered."""
    gate_shadow_accuracy_margin: float = Field(0.02, ge=0, le=1)
    """Promotion gate: how far the candidate's estimated accuracy in shadow may
    fall below the served model's."""
    gate_shadow_min_confident_agreement: float = Field(0.95, ge=0, le=1)
    """Promotion gate: least agreement in shadow on rows the served model
    answered with probability >= 0.9."""
    shadow_queue_requests: int = Field(1000, ge=1)
    """Sampled requests waiting for the shadow candidate; more are dropped."""
    shadow_flush_s: float = Field(1.0, gt=0)
    """How often each worker writes its shadow tallies to the store."""
    retention_check_s: float = Field(3600.0, gt=0)
    """How often logged predictions older than the policy's retention are purged."""
    # The review queue (admin pages): which logged answers wait for a person.
    review_margin: float = Field(0.2, ge=0, le=1)
    """An answer whose top-1 minus top-2 probability is below this is low-margin."""
    review_sample_share: float = Field(0.1, ge=0, le=1)
    """Share of low-margin answers sampled into the review queue."""
    audit_share: float = Field(0.0, ge=0, le=1)
    """Share of the other answers sampled into the review queue as audits."""
    review_interval_s: float = Field(30.0, gt=0)
    """How often the prediction log is sampled into the review queue: once per
    window of this length across every replica on the store (a lease)."""
    review_max_items: int = Field(1000, ge=1)
    """Most items one sampling run queues (abstentions first, then low-margin,
    then audit rows, each a uniform sample of its kind): at high traffic the
    shares alone would queue more than people can answer."""


class DeploymentSettings(BaseModel):
    name: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
    """Deployment whose served pack and policy (a row in the store) this service
    follows and changes; services sharing a database keep apart by name."""
    pack_tag: str | None = None
    """Start from this pack in BentoML's model store (`name:version` or
    `name:latest`) instead of `pack_dir`; a built bento names the pack it carries."""
    shared_packs_dir: Path | None = None
    """Directory every replica of the deployment mounts (e.g. the prediction log's
    shared volume): a served pack is copied there before the deployment's row names
    it, and a replica whose own model store lacks the pack the row names takes it
    from there. None: a pack reaches a replica only through its own model store."""


class LeaseSettings(BaseModel):
    """Once-per-window jobs (the scheduled drift run and its retraining trigger)
    shared by every replica on one store, through a lease row per job."""

    ttl_s: float = Field(30.0, gt=0)
    """A lease not renewed for this long is free: how soon another replica takes
    over a job whose holder died. Renewed every third of it while the job runs."""
    poll_s: float = Field(5.0, gt=0)
    """How often each replica checks whether the current window's run is due."""


class PredictionLogSettings(BaseModel):
    """The prediction log: per-worker write-ahead segments, compacted to Parquet."""

    dir: Path | None = None
    """Where segments live; default data_dir/prediction-log. May be a volume that
    several replicas share (file names carry a per-process writer id)."""
    fsync_interval_s: float = Field(1.0, ge=0)
    """How often the open segment is fsynced; 0 fsyncs every batch before its
    answer. A SIGKILL loses nothing either way; a machine crash (power, kernel)
    can lose up to this many seconds of answered rows."""
    rotate_bytes: int = Field(64 * 1024 * 1024, ge=4096)
    """A segment is closed (and compacted) once it holds this many bytes."""
    rotate_age_s: float = Field(60.0, gt=0)
    """... or once it is this old, also when idle."""
    compact: bool = True
    """Rewrite closed segments as Parquet (snappy, row groups) in the background."""
    compaction_nice: int = Field(19, ge=0, le=19)
    """CPU priority (nice) of compaction: 19, the lowest, lets answers go first;
    compaction catches up when the CPU has slack."""
    compaction_process: bool = True
    """Compact in a process of its own per worker (`feedback.log_compactor`), not
    in a thread of the worker: a thread holds the worker's interpreter lock while
    it compacts, and column requests then waited for it (a quarter of their
    throughput on 2 cores). False: a thread (one process less per worker)."""
    row_group_rows: int = Field(2048, ge=256)
    """Rows per Parquet row group: what a lookup by id reads at most per file.
    Fewer, larger groups make the footer a reader parses once per file shorter
    (500k rows: 1.3 ms at 2,048 rows, 3.3 ms at 1,024) and each lookup's read
    longer (0.5 ms against 0.4 ms)."""
    retention_days: float | None = Field(None, ge=0)
    """Delete segments whose newest row is older than this (the policy's
    `log_retention_days` applies too; the shorter wins). None: keep."""
    retention_bytes: int | None = Field(None, ge=0)
    """Delete the oldest closed segments while all of them exceed this size."""
    on_slow_storage: Literal["wait", "shed"] = "wait"
    """When an append cannot be made at once: `wait` (up to `max_wait_s`, retrying
    a failed write) or `shed` (at once); then 503 with Retry-After, never an
    answer without its logged row."""
    max_wait_s: float = Field(1.0, gt=0)
    """Longest an answer waits for its append under `wait`."""
    sample_rate: float = Field(1.0, gt=0, le=1)
    """Share of answered rows logged (1: all). Exported in /metrics; a report by
    id of an unsampled row says so in its 404."""


class SecuritySettings(BaseModel):
    admin_token: SecretStr | None = None
    """Bearer token for /admin routes; admin routes are refused while unset."""
    api_key: SecretStr | None = None
    """If set, /predict and /report need `Authorization: Bearer <api_key>`."""


class UISettings(BaseModel):
    session_max_age_s: int = Field(8 * 3600, ge=60)
    """How long a login to the admin pages (/admin/ui/) lasts, in seconds."""
    cookie_secure: bool = False
    """Mark the session cookie Secure: set it when the pages are served over HTTPS."""
    evidently_url: str | None = None
    """Evidently UI address the admin pages link to, e.g. http://127.0.0.1:8001."""
    page_rows: int = Field(50, ge=1, le=500)
    """Rows per page in the admin pages' queues."""


class HttpSettings(BaseModel):
    """How the HTTP edge treats a request before any route sees it."""

    trusted_proxies: str = ""
    """Comma-separated addresses or networks (e.g. `10.0.0.5,10.1.0.0/16`) whose
    X-Forwarded-For / X-Forwarded-Proto headers are believed; empty: nobody's, so
    a client is always its peer address."""
    max_header_bytes: int = Field(16_384, ge=1024)
    """Largest total size of a request's header names and values (431 beyond)."""
    max_headers: int = Field(100, ge=8)
    """Most header fields one request may carry (431 beyond)."""

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: str) -> str:
        entries = [e.strip() for e in value.split(",") if e.strip()]
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return ",".join(entries)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLYWHEEL_",
        env_nested_delimiter="__",
        extra="forbid",
        # Errors must not echo values: they can hold tokens and database passwords.
        hide_input_in_errors=True,
    )

    environment: Literal["development", "production"] = "development"
    """`production` refuses unsafe values (no or weak admin token)."""
    data_dir: Path = PROJECT_ROOT / "data"
    """Root of all state: packs, database, BentoML home, drift output."""
    pack_dir: Path | None = None
    """Model pack served at start-up; default data_dir/packs/penguins (the only
    location built automatically when missing)."""
    serving: ServingSettings = ServingSettings()
    guardrails: GuardrailSettings = GuardrailSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    prediction_log: PredictionLogSettings = PredictionLogSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    security: SecuritySettings = SecuritySettings()
    deployment: DeploymentSettings = DeploymentSettings()
    ui: UISettings = UISettings()
    leases: LeaseSettings = LeaseSettings()
    log_stream: LogStreamSettings = LogStreamSettings()
    http: HttpSettings = HttpSettings()

    @model_validator(mode="after")
    def _safe_for_production(self) -> Settings:
        if self.environment == "production":
            token = self.security.admin_token
            value = token.get_secret_value() if token else ""
            if value in UNSAFE_TOKENS or not strong_enough(value):
                raise ValueError(
                    "production needs FLYWHEEL_SECURITY__ADMIN_TOKEN with at least "
                    f"{MIN_TOKEN_BITS} bits of entropy (no repeats), e.g. from "
                    "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
                )
            key = self.security.api_key
            if key is not None and not strong_enough(key.get_secret_value()):
                raise ValueError(
                    "production needs FLYWHEEL_SECURITY__API_KEY, when set, with at "
                    f"least {MIN_TOKEN_BITS} bits of entropy (no repeats)"
                )
        return self

    @property
    def active_pack_dir(self) -> Path:
        return self.pack_dir or self.data_dir / "packs" / "penguins"

    @property
    def database_url(self) -> str:
        return (
            self.feedback.database_url or f"sqlite:///{self.data_dir / 'flywheel.db'}"
        )

    @property
    def bentoml_home(self) -> Path:
        """BENTOML_HOME for the commands that start BentoML."""
        return self.data_dir / "bentoml"

    @property
    def model_store_dir(self) -> Path:
        """BentoML's model store, which holds every pack that is or was served."""
        return self.bentoml_home / "models"

    @property
    def prediction_log_dir(self) -> Path:
        return self.prediction_log.dir or self.data_dir / "prediction-log"

    @property
    def regression_dir(self) -> Path:
        return self.data_dir / "regression"

    @property
    def drift_dir(self) -> Path:
        return self.data_dir / "drift"

    @property
    def evidently_workspace(self) -> Path:
        return self.data_dir / "evidently"

    @property
    def drift_target(self) -> DriftTarget:
        """Where scheduled drift runs read and write."""
        return DriftTarget(
            self.database_url,
            self.drift_dir,
            self.evidently_workspace,
            self.prediction_log_dir,
            # The deployment's replicas share the run's state through the store.
            state_key=f"drift:{self.deployment.name}",
        )
