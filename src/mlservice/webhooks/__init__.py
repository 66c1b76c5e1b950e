"""Webhooks: signed POSTs about a job's progress, delivered from an outbox with retries.

How it fits together:

- A job gets a webhook when it is submitted: ``jobs.service.submit(..., webhook_url=...,
  webhook_events=..., webhook_flavour=...)``, the fields first checked with
  :func:`mlservice.webhooks.service.subscription` (422 on a bad URL or event name).
- Events: ``start`` when a worker first claims the job; ``completed`` when it succeeds, fails
  (a worker, or the sweeper after the last attempt) or is canceled. Our models produce their
  output at once, at completion: a filter naming ``output`` but not ``completed`` gets one
  ``output`` event when the job succeeds, and nothing else is ever sent as ``output``. There are
  no ``logs`` events (models write no logs); the name is accepted in filters. A retried job
  sends ``start`` once.
- The code that makes an event happen calls :func:`enqueue` in its unit of work; the delivery
  row, with the body already rendered, commits with the change or not at all (outbox).
- The body is the job as the API that created it shows it, at the moment of the event: the
  ``JobRead`` of ``/api`` by default. Another API registers a formatter for its flavour
  (:func:`register_formatter`) and names the flavour at submit; the job keeps it (in its
  ``input_meta``, under a key ``/api`` does not show) so workers render it the same way.
- :class:`mlservice.webhooks.deliverer.WebhookDeliverer`, started with every API and worker
  process, POSTs and retries them, signed as described in :mod:`mlservice.webhooks.signing`.

For another API (the Replicate-compatible one, say)::

    from mlservice.webhooks import register_formatter

    register_formatter("replicate", prediction_json)  # Job -> JSON-ready dict, at import time
    sub = webhooks.service.subscription(url, events, allow_private=settings.webhook_allow_private)
    await jobs.service.submit(..., webhook_url=sub.url if sub else None,
                              webhook_events=sub.events if sub else None, webhook_flavour="replicate")
"""

from mlservice.webhooks.outbox import EVENTS, announces, enqueue, register_formatter, subscribe

__all__ = ["EVENTS", "announces", "enqueue", "register_formatter", "subscribe"]
