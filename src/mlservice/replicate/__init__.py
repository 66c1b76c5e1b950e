"""A Replicate-compatible HTTP API under ``/v1``, over the same jobs, wallet and history as ``/api``."""
