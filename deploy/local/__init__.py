"""The scaled-out layout as real processes on loopback: nginx → N APIs → RabbitMQ → N workers.

:class:`LocalDeployment` runs ``mlservice migrate``, then ``mlservice serve`` processes (API only,
``MLSERVICE_WORKERS=0``), ``mlservice worker`` processes and an nginx in front of the APIs, each a
child process with its log under ``<var_dir>/logs``. They share ``var_dir``: the JWT secret the
first API generates there, the uploads (``files/``) and, unless given, the model cache.

nginx runs in the foreground (``daemon off``) with its prefix, pid file, temp paths and logs in
``<var_dir>/nginx``; its config is rendered from ``deploy/nginx.conf``, the compose deployment's,
so both load balancers are the same but for addresses. The system's nginx (``/etc/nginx``, its
service) is never touched, and nothing is installed from here: ``make nginx`` installs Debian's
nginx when there is none.

``make deploy-local`` (or ``python -m deploy.local``) runs it until Ctrl-C; tests use it as a
context manager. Modules: :mod:`.processes` (child processes, ports, HTTP probes), :mod:`.nginx`
(finding, configuring and starting nginx), :mod:`.deployment` (the whole layout) and :mod:`.cli`
(the command line).
"""

from __future__ import annotations

from deploy.local.deployment import LocalDeployment
from deploy.local.nginx import DEFAULT_NGINX_TEMPLATE, find_nginx, render_nginx_conf, require_nginx
from deploy.local.processes import DeploymentError, ManagedProcess, free_port, http_get

__all__ = [
    "DEFAULT_NGINX_TEMPLATE",
    "DeploymentError",
    "LocalDeployment",
    "ManagedProcess",
    "find_nginx",
    "free_port",
    "http_get",
    "render_nginx_conf",
    "require_nginx",
]
