"""A job as ``/api`` shows it (``JobRead``, ``JobSummary``): the REST answers, the web pages and the
default body of webhooks."""

from __future__ import annotations

from datetime import datetime

from mlservice.jobs.schemas import ArtifactRead, JobError, JobProgress, JobRead, JobSummary
from mlservice.jobs.tables import Job


def files_expired_at(job: Job) -> datetime | None:
    """When retention removed the job's files; None while they are kept, and for a job that had
    none (retention marks those too, so as not to look at them again, but "its files expired"
    would say something untrue of them)."""
    if job.input_file is None and not job.artifacts:
        return None
    return job.files_expired_at


def job_summary(job: Job) -> JobSummary:
    return JobSummary(
        id=job.id,
        model=job.model_slug,
        status=job.status,
        cost=job.cost,
        attempts=job.attempts,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        processing_ms=job.processing_ms,
        error_code=job.error_code,
        progress=(
            None if job.progress is None else JobProgress(fraction=job.progress, message=job.progress_message)
        ),
        cancel_at=job.cancel_at,
    )


def job_read(job: Job) -> JobRead:
    error = None
    if job.error_code:
        error = JobError(code=job.error_code, message=job.error_message or "")
    input_info = dict(job.input_meta)
    if job.input_text is not None:
        input_info["text"] = job.input_text
    artifacts = [
        ArtifactRead(name=name, url=f"/api/jobs/{job.id}/artifacts/{name}", **meta)
        for name, meta in sorted((job.artifacts or {}).items())
    ]
    return JobRead(
        **job_summary(job).model_dump(),
        params=job.params,
        input=input_info,
        output=job.output,
        artifacts=artifacts,
        error=error,
        files_expired_at=files_expired_at(job),
        logs=job.logs,
    )
