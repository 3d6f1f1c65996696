"""Settings of every noisyfit process, read once from the environment (prefix NOISYFIT_)."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOISYFIT_", extra="ignore")

    database_url: str = "sqlite:///./var/noisyfit.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = "noisyfit"
    s3_secret_key: str = "noisyfit-secret"
    s3_bucket: str = "noisyfit"
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    data_dir: Path = Path("./var/data")
    admin_token: str = ""
    allow_download: bool = False
    # Signs the dashboard's session cookies (/ui). Empty: derived from ADMIN_TOKEN, or a random
    # secret per process when that is empty too (sessions then end when the API restarts).
    session_secret: str = ""
    # A dashboard session lasts this long after signing in.
    session_ttl_s: int = 12 * 3600

    # Metrics stream: events kept per job in Redis, and how long a finished job's stream lives.
    stream_maxlen: int = 10_000
    stream_ttl_s: int = 7 * 24 * 3600
    # A queued or running job per user beyond this answers 429 (Table 2 with 3 seeds is 120 jobs).
    max_active_jobs_per_user: int = 500
    # A job runs at most this long (from its first start); a spec's time_limit_s may ask less.
    max_job_seconds: int = 24 * 3600
    # A training process checks its limit between steps; one still running this long past it
    # (stuck outside a step) is killed by its worker, and the job fails as over time.
    time_limit_grace_s: float = 60.0
    # Seconds of job run time a user may use per rolling 24 h; past it a submission answers 429 (0: no quota).
    job_time_quota_s: int = 0
    # Presigned download URLs live this long.
    presign_ttl_s: int = 300
    # A running job's lease: renewed by the worker's heartbeat, taken over when it lapses.
    lease_ttl_s: int = 60
    heartbeat_s: float = 10.0
    # A job handed out this many times without finishing is failed instead of requeued.
    max_attempts: int = 5
    # A worker that takes a job of a sweep also takes up to fuse_max_runs - 1 queued jobs of that
    # sweep that can train with it (shared.fusion) and trains them together in one process
    # (worker.fused): each keeps its own lease, status, events, cancel, artifacts and result,
    # which are those it gets alone. false: every job trains alone.
    fuse: bool = True
    fuse_max_runs: int = Field(8, ge=1, le=64)
    # Celery redelivers an unacknowledged task after this long; longer than any training job.
    visibility_timeout_s: int = 7 * 24 * 3600
    # Request bodies: uploads (POST /v1/datasets) and everything else.
    max_upload_bytes: int = 512 * 1024 * 1024
    max_request_bytes: int = 1024 * 1024
    # A sweep's specs together (its cells × the base, as JSON): bounds what one request stores.
    max_sweep_bytes: int = 16 * 1024 * 1024
    # An upload is checked in a child process (shared.upload_sandbox) that may use this much
    # address space and CPU time, a few at once; the archive may unpack to max_unpacked_bytes.
    max_unpacked_bytes: int = 1024 * 1024 * 1024
    upload_check_memory_bytes: int = 3 * 1024 * 1024 * 1024
    upload_check_cpu_s: int = 300
    upload_checks_at_once: int = 2
    # The normalised data sets a user may keep stored, in bytes.
    storage_quota_bytes: int = 10 * 1024 * 1024 * 1024

    # Prepended to every Redis key (metrics streams and the Celery queue), so that several
    # deployments or test sessions can share one Redis server.
    redis_key_prefix: str = ""
    # An idle Server-Sent Events stream sends a heartbeat comment this often.
    sse_heartbeat_s: float = 15.0
    # An open event stream asks the database this often whether its API key is still live
    # (a revoked key's streams end within about this long) and whether its job finished;
    # 500 open streams cost about a tenth of a core at 10 s.
    sse_recheck_s: float = 10.0
    # The API requeues running jobs whose lease lapsed this often (0: never; run it elsewhere).
    reaper_interval_s: float = 30.0
    # A queued job no worker took this long after its message was sent is sent again: the message
    # may be lost (Redis restarted without persistence, or the API died between storing and
    # sending). A duplicate costs a worker one database look (start_attempt takes a job once).
    resend_after_s: float = 600.0
    # A worker reports the data sets it holds this often; three missed reports and it is not live.
    worker_report_s: float = 10.0
    # Packing (worker/packing.py). A CPU worker runs floor(cores / cores_per_job) jobs at once, each
    # pinned to its own cores (0: all cores, one job at a time). A GPU worker runs up to jobs_per_gpu
    # at once, admitting each by the memory it needs while gpu_memory_margin_mib stay free.
    cores_per_job: int = Field(0, ge=0)
    jobs_per_gpu: int = Field(8, ge=1)
    gpu_memory_margin_mib: int = Field(1024, ge=0)
    # Data sets resident on the device across jobs (worker/resident.py): a holder process keeps a
    # built-in data set's images on the worker's device and lends them to its jobs. auto: on a GPU
    # worker; on: a CPU worker too (shared memory; no faster than the fork server's copy); off.
    resident_data: Literal["auto", "on", "off"] = "auto"
    # A message whose job does not fit beside the running ones waits this long for room on its
    # worker, then goes back to the queue for another worker.
    admission_wait_s: float = Field(30.0, gt=0)
    # Object store calls: connect/read timeouts and attempts on connection errors.
    s3_timeout_s: float = 30.0
    # Presigned URLs name this host instead of s3_endpoint when set (the store as users reach it).
    s3_public_endpoint: str = ""
    s3_attempts: int = 3


@lru_cache
def get_settings() -> Settings:
    return Settings()
