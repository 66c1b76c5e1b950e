"""Retention: what piles up is removed once its time is over, in small batches.

What goes, and when (``MLSERVICE_RETENTION_*``, see :mod:`mlservice.settings`): ``Idempotency-Key``
records, ``/v1`` uploads (rows and bytes), a finished job's input and artifact files, settled
webhook deliveries, revoked API keys and request history. Ledger entries, balances and job rows
(status, cost, result) are never removed: a job whose files went says so (``files_expired_at``),
and its files answer 410 ``files_expired``.

Each batch is a unit of work of its own (at most ``retention_batch_size`` rows, so no long locks,
no big transactions). A row that names a file is changed before its file is deleted: in the same
transaction with database storage, right after its commit with local files, so no row ever names
a missing file without saying so. The sweep runs in every process that runs workers; deleting by
id is idempotent, so several at once are safe.
"""
