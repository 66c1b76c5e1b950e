from mlservice.errors import RETRY_AFTER_S, AppError, NotFound


class JobNotFound(NotFound):
    code = "job_not_found"


class FilesExpired(AppError):
    """The job is kept, but retention removed its input and artifact files."""

    status_code = 410
    code = "files_expired"


class JobNotCancelable(AppError):
    status_code = 409
    code = "job_not_cancelable"


class ModelUnavailable(AppError):
    status_code = 503
    code = "model_unavailable"


class FileTooLarge(AppError):
    status_code = 413
    code = "file_too_large"


class MissingInput(AppError):
    status_code = 422
    code = "missing_input"


class AccountInactive(AppError):
    """The account was deactivated: refused as authentication refuses it (401), even where this
    process still remembered the account as active."""

    status_code = 401
    code = "account_inactive"


class TooManyUnfinishedJobs(AppError):
    """The user's cap on unfinished (queued or running) jobs: nothing held, nothing written."""

    status_code = 429
    code = "too_many_unfinished_jobs"
    headers = {"Retry-After": str(RETRY_AFTER_S)}  # noqa: RUF012 (read only)


class TooManyStreams(AppError):
    """The user's cap on open event streams in one API process (``max_streams_per_user``)."""

    status_code = 429
    code = "too_many_streams"
    headers = {"Retry-After": str(RETRY_AFTER_S)}  # noqa: RUF012 (read only)


class ModelQueueFull(AppError):
    """The model's queue holds as many jobs as its cap allows: the service, not the user, is short
    of capacity (503), and nothing was held or written."""

    status_code = 503
    code = "model_queue_full"
    headers = {"Retry-After": str(RETRY_AFTER_S)}  # noqa: RUF012 (read only)
