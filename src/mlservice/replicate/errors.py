"""The errors of ``/v1`` that ``/api`` does not have; each is answered as a problem document with its code."""

from __future__ import annotations

from mlservice.errors import AppError, NotFound


class VersionNotFound(NotFound):
    code = "version_not_found"


class UploadedFileNotFound(NotFound):
    code = "file_not_found"


class InvalidFileInput(AppError):
    status_code = 422
    code = "invalid_file_input"


class InvalidCursor(AppError):
    status_code = 400
    code = "invalid_cursor"


class TooManyFiles(AppError):
    status_code = 409
    code = "too_many_files"
