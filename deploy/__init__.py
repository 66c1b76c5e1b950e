"""mlservice's deployments: the compose one (``docker-compose.yml``, ``Dockerfile``, ``nginx.conf``)
and :mod:`deploy.local`, the same layout as processes on this machine.

A package so that ``nginx.conf`` is package data of the launcher that renders it, found next to
the code whether it runs from a checkout or an install. Not part of the service (``src/mlservice``)
or of its image: a tool for operators and tests.
"""
