from mlservice.errors import AppError, NotFound


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
