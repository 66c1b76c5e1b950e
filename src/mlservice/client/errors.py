from __future__ import annotations

# Exit statuses of client commands (argparse itself exits 2 on a usage error).
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_JOB_FAILED = 3
EXIT_INTERRUPTED = 130


class ClientError(Exception):
    """A failure to report in one line, without a traceback, and the status to exit with."""

    def __init__(self, message: str, *, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class ApiError(ClientError):
    """The server refused a request; ``code`` is its machine-readable error code."""

    def __init__(self, message: str, *, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
