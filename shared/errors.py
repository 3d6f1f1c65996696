"""Every error noisyfit reports to a user, in one place.

    NoisyfitError                      code, HTTP status, message (what to change), field
    ├── SpecError          422 invalid_spec      a job spec that cannot run as asked
    └── JobFailure                               why a job that started did not succeed
        └── Diverged           diverged          its loss or weights became NaN or infinite

Each class carries its machine-readable `code` and its HTTP `status`: the API maps them to one
JSON shape in one handler (api/errors.py), and the worker records the same codes as a failed
job's error.
"""


class NoisyfitError(Exception):
    """A refusal or failure a user can act on; `message` says what to change."""

    code = "error"
    status = 400

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class SpecError(NoisyfitError, ValueError):
    """A spec (or a library call of the engine) that cannot run as asked; `field` names the part."""

    code, status = "invalid_spec", 422


class JobFailure(NoisyfitError):
    """A job that started and could not finish; recorded as its error {code, message}."""

    code = "training_failed"


class Diverged(JobFailure):
    """The loss or the weights became non-finite: the run can only produce noise from here."""

    code = "diverged"
