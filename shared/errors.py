"""Every error noisyfit reports to a user, in one place.

    NoisyfitError                                  code, HTTP status, message (what to change), field
    ├── SpecError               422 invalid_spec           a job spec that cannot run as asked
    │   └── GridError           422 invalid_spec           a sweep grid that cannot be expanded
    ├── VersionError            422 invalid_version        a data-set version that cannot be made as asked
    ├── BadDataset              400 bad_dataset            an upload noisyfit cannot train on
    │   └── UploadTooLarge      400 upload_too_large
    ├── BadArtifactName         422 invalid_artifact_name
    ├── InvalidCursor           422 invalid_cursor
    ├── Unauthorized            401 unauthorized
    │   └── SignInRequired      401 sign_in_required       no live dashboard session (pages lead to /ui/login)
    ├── Forbidden               403 forbidden
    │   └── CsrfRejected        403 csrf_rejected          a dashboard form without its session's token
    ├── NotFound                404 not_found
    │   └── ObjectMissing       404 not_found              no object under that key
    ├── Conflict                409 conflict
    │   ├── IdempotencyConflict 409 idempotency_conflict
    │   ├── JobFinished         409 job_finished
    │   └── JobActive           409 job_active
    ├── RequestTooLarge         413 request_too_large
    ├── StorageQuotaExceeded    413 storage_quota_exceeded
    ├── LimitError              429 too_many_active_jobs
    │   └── TimeQuotaExceeded   429 job_time_quota_exceeded
    ├── Unavailable             503                        a service the request needs is down
    │   ├── QueueUnavailable    503 queue_unavailable
    │   ├── StoreUnavailable    503 store_unavailable
    │   ├── StreamUnavailable   503 stream_unavailable
    │   └── DatabaseUnavailable 503 database_unavailable   (a job's error, when it outlasts every attempt)
    └── JobFailure                  training_failed        why a job that started did not succeed
        ├── DatasetUnavailable  409 dataset_unavailable    (also refuses a job no live worker can load)
        ├── ResumeMismatch          resume_mismatch
        ├── OutOfMemory             out_of_memory
        ├── TimeLimitExceeded       time_limit
        └── Diverged                diverged

Each class carries its machine-readable `code` and its HTTP `status`: the API maps every one to
one JSON shape in one handler (api/errors.py), and the worker records a JobFailure's code and
message as the failed job's error. No other module defines an error a user sees.
"""


class NoisyfitError(Exception):
    """A refusal or failure a user can act on; `message` says what to change."""

    code = "error"
    status = 400
    hint = ""  # what to do, added to every message of the class

    def __init__(self, message: str, field: str | None = None):
        self.message = f"{message}; {self.hint}" if self.hint else message
        super().__init__(self.message)
        self.field = field


class SpecError(NoisyfitError, ValueError):
    """A spec (or a library call of the engine) that cannot run as asked; `field` names the part."""

    code, status = "invalid_spec", 422


class GridError(SpecError):
    """A sweep grid that cannot be expanded; `field` names the grid entry to change."""


class VersionError(NoisyfitError, ValueError):
    """A data-set version that cannot be made as asked (shared/versions.py); `field` names the
    entry to change (`changes[3]`, `drop[0]`, `from_job`)."""

    code, status = "invalid_version", 422


class BadDataset(NoisyfitError):
    """An upload that is not a data set noisyfit can train on."""

    code = "bad_dataset"

    def __init__(self, message: str, field: str = "file"):
        super().__init__(message, field)


class UploadTooLarge(BadDataset):
    """An upload larger than the limits: the file, what it unpacks or decodes to, or what it takes to check."""

    code = "upload_too_large"


class BadArtifactName(NoisyfitError, ValueError):
    """An artifact name outside the safe pattern."""

    code, status = "invalid_artifact_name", 422

    def __init__(self, message: str):
        super().__init__(message, "name")


class InvalidCursor(NoisyfitError):
    code, status = "invalid_cursor", 422


class Unauthorized(NoisyfitError):
    code, status = "unauthorized", 401
    headers = {"WWW-Authenticate": "Bearer"}


class SignInRequired(Unauthorized):
    """No dashboard session, a tampered or expired one, or its key was revoked."""

    code = "sign_in_required"
    headers: dict[str, str] = {}


class Forbidden(NoisyfitError):
    code, status = "forbidden", 403


class CsrfRejected(Forbidden):
    code = "csrf_rejected"


class NotFound(NoisyfitError):
    code, status = "not_found", 404


class ObjectMissing(NotFound, LookupError):
    """No object under that key (the key stays in `key`, out of the message)."""

    def __init__(self, key: str):
        super().__init__("no such artifact; GET /v1/jobs/{id}/artifacts lists them", "name")
        self.key = key


class Conflict(NoisyfitError):
    code, status = "conflict", 409


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class JobFinished(Conflict):
    code = "job_finished"


class JobActive(Conflict):
    code = "job_active"


class RequestTooLarge(NoisyfitError):
    code, status = "request_too_large", 413


class StorageQuotaExceeded(NoisyfitError):
    code, status = "storage_quota_exceeded", 413


class LimitError(NoisyfitError):
    code, status = "too_many_active_jobs", 429


class TimeQuotaExceeded(LimitError):
    """The user's job run time in the last 24 h reached the quota; `Retry-After` says when it frees up."""

    code = "job_time_quota_exceeded"

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}


class Unavailable(NoisyfitError):
    """A service the request needs does not answer; nothing was changed."""

    status = 503
    headers = {"Retry-After": "5"}


class QueueUnavailable(Unavailable):
    code = "queue_unavailable"


class StoreUnavailable(Unavailable):
    code, hint = "store_unavailable", "retry later"


class StreamUnavailable(Unavailable):
    code, hint = "stream_unavailable", "job status (GET /v1/jobs/{id}) still answers"


class DatabaseUnavailable(Unavailable):
    code = "database_unavailable"


class JobFailure(NoisyfitError):
    """A job that started and could not finish; recorded as its error {code, message}."""

    code = "training_failed"


class DatasetUnavailable(JobFailure):
    """A data set that cannot be loaded (a job's error), or that no live worker holds (409 at
    submission); the message says which files to put where."""

    code, status = "dataset_unavailable", 409


class ResumeMismatch(JobFailure, ValueError):
    """A resume checkpoint that belongs to another spec."""

    code = "resume_mismatch"


class OutOfMemory(JobFailure):
    code = "out_of_memory"


class TimeLimitExceeded(JobFailure):
    code = "time_limit"


class Diverged(JobFailure):
    """The loss or the weights became non-finite: the run can only produce noise from here."""

    code = "diverged"

