"""The routes of ``/v1``, one module per resource; :mod:`mlservice.replicate.router` mounts them."""
