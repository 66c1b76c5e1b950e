"""nginx for a local deployment: the binary, its config rendered from the compose deployment's
``deploy/nginx.conf``, and the foreground process with everything under its own prefix.

Nothing here installs nginx (``make nginx`` does) or touches the system's nginx (``/etc/nginx``,
its service).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from deploy.local.processes import DeploymentError, ManagedProcess

# deploy/nginx.conf: data of the `deploy` package, next to this one, from a checkout or an install;
# the compose deployment's own file, so both load balancers stay the same but for addresses.
DEFAULT_NGINX_TEMPLATE = Path(__file__).resolve().parent.parent / "nginx.conf"
UPSTREAM_NAME = "mlservice_api"


def find_nginx() -> str | None:
    # /usr/sbin is not on every user's PATH, and that is where Debian puts nginx.
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def require_nginx() -> str:
    """The nginx binary; installing one is the Makefile's business (``make nginx``), not ours."""
    found = find_nginx()
    if found is None:
        raise DeploymentError("nginx is not installed: `make nginx` installs Debian's, then retry")
    return found


def render_nginx_conf(template: str, *, listen: str, upstreams: Sequence[str], prefix: Path) -> str:
    """``template`` (deploy/nginx.conf) with local addresses and temp paths under ``prefix``.

    Replaces the ``server`` lines of ``upstream mlservice_api`` by one per address in ``upstreams``
    (keeping the first line's parameters), the single ``listen`` line by ``listen``, and adds the
    temp paths, which otherwise default to the system nginx's directories.
    """
    block = re.search(rf"(upstream\s+{UPSTREAM_NAME}\s*\{{)(.*?)(\n\s*\}})", template, re.DOTALL)
    if block is None:
        raise DeploymentError(f"the nginx template has no `upstream {UPSTREAM_NAME}` block")
    server_line = re.compile(r"^(?P<indent>[ \t]*)server[ \t]+\S+(?P<params>[^;\n]*);[ \t]*\n", re.MULTILINE)
    servers = list(server_line.finditer(block.group(2)))
    if not servers:
        raise DeploymentError(f"`upstream {UPSTREAM_NAME}` in the nginx template has no server lines")
    indent, params = servers[0].group("indent"), servers[0].group("params")
    local_servers = "".join(f"{indent}server {address}{params};\n" for address in upstreams)
    # The local servers take the place of the first template server; the other ones go.
    body = block.group(2)
    body = body[: servers[0].start()] + local_servers + server_line.sub("", body[servers[0].start() :])
    rendered = template[: block.start(2)] + body + template[block.end(2) :]

    listens = re.findall(r"^[ \t]*listen[ \t]+[^;\n]+;", rendered, re.MULTILINE)
    if len(listens) != 1:
        raise DeploymentError(f"the nginx template must have exactly one listen line, not {len(listens)}")
    rendered = re.sub(
        r"^([ \t]*)listen[ \t]+[^;\n]+;", rf"\g<1>listen {listen};", rendered, count=1, flags=re.MULTILINE
    )

    http = re.search(r"^([ \t]*)http\s*\{[ \t]*\n", rendered, re.MULTILINE)
    if http is None:
        raise DeploymentError("the nginx template has no http block")
    temp = prefix / "temp"
    temp_paths = "".join(
        f'    {directive}_temp_path "{temp / name}";\n'
        for directive, name in (
            ("client_body", "client_body"),
            ("proxy", "proxy"),
            ("fastcgi", "fastcgi"),
            ("uwsgi", "uwsgi"),
            ("scgi", "scgi"),
        )
    )
    local_note = "    # Added by deploy.local: temp files stay under its own prefix.\n"
    return rendered[: http.end()] + local_note + temp_paths + "\n" + rendered[http.end() :]


def start_nginx(
    nginx: str,
    template: Path,
    *,
    listen: str,
    upstreams: Sequence[str],
    nginx_dir: Path,
    logs_dir: Path,
    access_log: Path,
) -> ManagedProcess:
    """nginx in the foreground with prefix, config, pid file and temp paths in ``nginx_dir``, its
    access log appended to ``access_log`` and its error log to ``<logs_dir>/nginx-error.log``."""
    nginx_dir.mkdir(exist_ok=True)
    (nginx_dir / "temp").mkdir(exist_ok=True)
    config = render_nginx_conf(
        template.read_text(encoding="utf-8"), listen=listen, upstreams=upstreams, prefix=nginx_dir
    )
    config_path = nginx_dir / "nginx.conf"
    config_path.write_text(config, encoding="utf-8")
    globals_ = f'daemon off; pid "{nginx_dir / "nginx.pid"}";'
    if os.geteuid() == 0:
        # Workers would otherwise run as nobody, who may not reach the temp paths in var_dir.
        globals_ += f" user {pwd.getpwuid(0).pw_name};"
    error_log = logs_dir / "nginx-error.log"
    # The access log goes to stdout, the error log to stderr (as in the container); -e is where
    # nginx writes errors before it has read its config.
    command = [nginx, "-p", str(nginx_dir), "-c", str(config_path), "-e", str(error_log), "-g", globals_]
    check = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)  # noqa: S603
    if check.returncode != 0:
        raise DeploymentError(f"nginx rejects {config_path}:\n{check.stderr}")
    offset = error_log.stat().st_size if error_log.exists() else 0
    with access_log.open("ab") as out, error_log.open("ab") as err:
        popen = subprocess.Popen(  # noqa: S603
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            cwd=nginx_dir,
        )
    return ManagedProcess("nginx", popen, error_log, offset)
