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
  ``JobRead`` of ``/api`` by default. Each API has a formatter for its flavour, registered by
  the composition root (:func:`mlservice.components.build_components`) in every process, and
  names the flavour at submit; the job keeps it (``jobs.webhook_flavour``) so workers render it
  the same way.
- :class:`mlservice.webhooks.deliverer.WebhookDeliverer`, started with every API and worker
  process, POSTs and retries them, signed as described in :mod:`mlservice.webhooks.signing`.

For another API (the Replicate-compatible one, say): add its formatter (``Job`` -> JSON-ready
dict, no I/O) to the ones the composition root registers, check the request's fields with
``webhooks.service.subscription(url, events, allow_private=...)`` and pass the flavour to
``jobs.service.submit(..., webhook_flavour=...)``.
"""
