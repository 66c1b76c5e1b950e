"""Observability: Prometheus metrics, structured logs and the request id that ties them together.

Each app and each worker process owns its own :class:`~mlservice.observability.metrics.ServiceMetrics`
(a private registry), so several apps in one process never collide. Logs are stdlib ``logging``
records; fields passed as ``extra=`` and the fields bound to the current context
(:func:`~mlservice.observability.context.bind`) come out as ``key=value`` on the console or as
keys of a JSON object per line.
"""
