"""Assembles and runs the grpc.aio server: models, servicers, auth, errors, health, reflection,
the edge's check (Envoy's ``ext_authz``), metrics (``GET /metrics`` on the metrics port), tracing,
a watchdog, and an orderly shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from rerank.service.admission.holds import Holds
from rerank.service.backends.base import Backend, VariantChoice
from rerank.service.backends.cpu_features import detect as detect_cpu
from rerank.service.backends.loader import (
    candidate_variants,
    load_backend,
    runtime_note,
    table_choice,
    time_candidates,
)
from rerank.service.core.batch_sizing import BatchSizing, size_batches
from rerank.service.core.batching_config import BatchingConfig
from rerank.service.core.priority import run_lowered
from rerank.service.core.reranker import ServedModel
from rerank.service.core.tokenization import TokenizerPool
from rerank.service.errors import ConfigurationError, Unavailable
from rerank.service.model_check import check_files, check_scores
from rerank.service.model_folder import ModelFolderConfig, find_model_folders, read_model_folder
from rerank.service.protocol import (
    SERVICE_NAME,
    cohere_pb2,
    cohere_pb2_grpc,
    external_auth_pb2,
    external_auth_pb2_grpc,
    rerank_pb2_grpc,
    tei_pb2,
    tei_pb2_grpc,
    tei_rest_pb2,
    tei_rest_pb2_grpc,
)
from rerank.service.router.auth import ApiKeyInterceptor, Keyring
from rerank.service.router.cohere_service import CohereService
from rerank.service.router.edge import EdgeCheck
from rerank.service.router.guard import CallGuard
from rerank.service.router.limits import Callers, open_buckets
from rerank.service.router.metrics_endpoint import (
    MetricsEndpoint,
    exposition_registry,
    forget_process,
    server_metrics,
)
from rerank.service.router.rerank_service import RerankService
from rerank.service.router.tei_service import TeiFace, TeiInfo, TeiRerank, TeiRest
from rerank.service.router.validation import Limits
from rerank.service.settings import Settings
from rerank.service.telemetry import tracing

log = logging.getLogger("rerank")

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
MAX_METADATA_BYTES = 64 * 1024
WATCHDOG_SECONDS = 0.25
"""How often the watchdog asks each model whether its inference is stuck."""
PING_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 500),
    ("grpc.http2.max_ping_strikes", 0),
]
"""Envoy pings each replica's connections every second (a stopped replica's calls are then retried
elsewhere within seconds): gRPC's default policy would answer such pings with GOAWAY."""


def served_services() -> tuple[str, ...]:
    """Full names of the services this server registers (what reflection lists)."""
    return (
        SERVICE_NAME,
        cohere_pb2.DESCRIPTOR.services_by_name["CohereService"].full_name,
        tei_rest_pb2.DESCRIPTOR.services_by_name["TeiService"].full_name,
        tei_pb2.DESCRIPTOR.services_by_name["Rerank"].full_name,
        tei_pb2.DESCRIPTOR.services_by_name["Info"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name,
    )


def batching_config(settings: Settings) -> BatchingConfig:
    return BatchingConfig(
        max_batch_tokens=settings.max_batch_tokens,
        max_batch_pairs=settings.max_batch_pairs,
        max_queue_pairs=settings.max_queue_pairs,
        max_queue_seconds=settings.max_queue_seconds,
        batch_seconds=settings.batch_seconds,
        batch_tokens=settings.batch_tokens,
        stall_seconds=settings.stall_seconds,
        inference_nice=settings.inference_nice,
    )


def server_credentials(settings: Settings) -> grpc.ServerCredentials:
    """TLS for the service's own port; with a client CA, client certificates are required."""
    assert settings.grpc_tls_cert is not None and settings.grpc_tls_key is not None
    try:
        pair = (settings.grpc_tls_key.read_bytes(), settings.grpc_tls_cert.read_bytes())
        client_ca = settings.grpc_tls_client_ca.read_bytes() if settings.grpc_tls_client_ca else None
    except OSError as exc:
        raise ConfigurationError(f"TLS: {exc}") from None
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)


def calibrate(backend: Backend, config: ModelFolderConfig, batching: BatchingConfig) -> BatchSizing:
    """The micro-batch size the model runs fastest at on this machine, and its speed there
    (:func:`~rerank.service.core.batch_sizing.size_batches`; only timed at ``batch_tokens`` when set)."""
    sizing = size_batches(
        backend.run,
        token=config.template.timing_token,
        max_length=config.max_length,
        max_batch_tokens=batching.max_batch_tokens,
        max_batch_pairs=batching.max_batch_pairs,
        pinned=batching.batch_tokens,
        streams=backend.streams,
        shares_head=bool(config.graph.get("shared_prefix")),
        batch_seconds=batching.batch_seconds,
    )
    log.info(
        "%s: micro-batches of %d padded tokens (%s), %.0f padded tokens/s there; timed: %s",
        config.name,
        sizing.batch_tokens,
        sizing.reason,
        sizing.tokens_per_second,
        ", ".join(f"{tokens} tokens {rate:.0f}/s" for tokens, rate in sizing.measured.items()),
    )
    return sizing


class RerankServer:
    """Owns the loaded models and the running gRPC server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models: dict[str, ServedModel] = {}
        self.server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self.port: int | None = None
        self.metrics_port: int | None = None
        try:
            self.keyring = Keyring.load(settings.api_keys, settings.api_keys_file)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"API keys: {exc}") from None
        self.metrics = server_metrics(settings.metrics_dir)
        self.calls = CallGuard(self.keyring, self.metrics)
        self._metrics_endpoint = MetricsEndpoint(
            exposition_registry(self.metrics, settings.metrics_dir),
            keyring=self.keyring,
            require_key=settings.metrics_require_key and bool(self.keyring),
        )
        self.holds = Holds(record=self.metrics.record_hold)
        """The edge's check's places for bodies on their way, shared by every model's batcher."""
        self.callers = Callers(self.keyring, open_buckets(settings.limits_store), self.holds)
        self.edge = EdgeCheck(
            self.models,
            self.callers,
            metrics=self.metrics,
            metrics_require_key=settings.metrics_require_key and bool(self.keyring),
            max_request_bytes=settings.max_request_bytes,
            replica_address=settings.replica_address,
            peers=[p.strip() for p in settings.peers.split(",") if p.strip()],
            peer_secret=settings.peer_secret,
            draining=lambda: self._draining,
        )
        self._tokenizers = TokenizerPool(settings.tokenizer_threads, settings.tokenizer_queue)
        self._draining = False
        """Set when :meth:`stop` begins: the edge's check then admits without holding a place here."""
        self._stalls: dict[str, str] = {}
        """Models whose inference the watchdog found stuck, and why."""
        self._watchdog: asyncio.Task[None] | None = None

    def load_models(self) -> None:
        """Loads every model folder, chooses its variant and warms it up; raises :class:`ConfigurationError`."""
        s = self.settings
        folders = find_model_folders(s.models_dir)
        if not folders:
            raise ConfigurationError(
                f"no model folders under {s.models_dir}; convert one with rerank-convert "
                "or point RERANK_MODELS_DIR / --models-dir at a folder of them"
            )
        cpu = detect_cpu()
        log.info("CPU %s (%s)", cpu.summary(), cpu.source)
        note = runtime_note(s.device)
        if note:
            log.info(note)
        for folder in folders:
            try:
                config = read_model_folder(folder)
                keys = candidate_variants(config, variant=s.variant, device=s.device, cpu=cpu)
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
            if config.name in self.models:
                raise ConfigurationError(f"two model folders are both named {config.name!r}")
            backend, choice = self._load_fastest(folder, config, keys, table_choice(config, keys, cpu))
            log.info(
                "%s: serving variant %s (%s, %s): %s%s",
                config.name,
                choice.key,
                config.variants[choice.key].runtime,
                backend.precision,
                choice.reason,
                "".join(f"; {k} {ms:.1f} ms" for k, ms in choice.milliseconds.items()),
            )
            if s.max_input_length is not None and s.max_input_length < config.max_length:
                # After the folder's checks, which score its check pairs at the folder's own length.
                config = dataclasses.replace(config, max_length=s.max_input_length)
            batching = batching_config(s)
            sizing = calibrate(backend, config, batching)  # (its untimed runs build each size's kernels)
            backend.warm_up(sizing.batch_tokens)
            self.models[config.name] = ServedModel(
                folder,
                config,
                backend,
                batching=batching,
                tokenizers=self._tokenizers,
                sizing=sizing,
                metrics=self.metrics.model(config.name),
                choice=choice,
                cpu=cpu,
                holds=self.holds,
            )
        if s.default_model and s.default_model not in self.models:
            raise ConfigurationError(
                f"RERANK_DEFAULT_MODEL={s.default_model!r} is not served; "
                f"served models: {', '.join(sorted(self.models))}"
            )

    def _load_fastest(
        self, folder: Path, config: ModelFolderConfig, keys: list[str], chosen: VariantChoice | None
    ) -> tuple[Backend, VariantChoice]:
        """Checks and loads every candidate variant (each must pass the start-up checks), times
        them when there are several, and keeps the fastest; or only ``chosen`` (from the
        converter's timing table)."""
        s = self.settings
        if chosen is not None:
            keys = [chosen.key]
        backends: dict[str, Backend] = {}
        for key in keys:
            check_files(folder, config, key, verify_checksums=s.verify_checksums)
            try:
                backends[key] = load_backend(
                    folder, config, variant=key, device=s.device, threads=s.threads, streams=s.streams
                )
            except Exception as exc:
                raise ConfigurationError(f"{folder / config.variants[key].file}: cannot be loaded: {exc}") from exc
            check_scores(folder, config, backends[key])
        choice = chosen or time_candidates(backends, config, pinned=bool(s.variant))
        backend = backends.pop(choice.key)
        backends.clear()  # the others' sessions and compiled models go now, not at exit
        return backend, choice

    def _interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        s = self.settings
        # First: every call is counted (for draining and in the metrics, refused ones included),
        # its errors mapped (anything unexpected becomes an opaque INTERNAL) and its context kept.
        interceptors: list[grpc.aio.ServerInterceptor] = [self.calls]
        if self.keyring:
            interceptors.append(ApiKeyInterceptor(self.keyring))
        elif not s.insecure_no_auth:
            raise ConfigurationError(
                "no API keys: set RERANK_API_KEYS or RERANK_API_KEYS_FILE "
                "(or --insecure-no-auth for a local experiment)"
            )
        else:
            log.warning("serving WITHOUT authentication (--insecure-no-auth)")
        return interceptors

    async def start(self) -> int:
        """Loads the models, binds the port and reports SERVING; returns the bound port."""
        s = self.settings
        interceptors = self._interceptors()
        if s.otlp_endpoint:
            tracing.configure(s.otlp_endpoint)
        # On a thread of lowered priority: the runtimes' thread pools created while loading inherit it.
        run_lowered(s.inference_nice, self.load_models)
        options = [
            ("grpc.max_receive_message_length", s.max_request_bytes),
            ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
            ("grpc.so_reuseport", 0),
            # Above Envoy's header cap (RERANK_MAX_HEADER_KB): an oversized header is Envoy's 431,
            # never a RESOURCE_EXHAUSTED carrying gRPC's own wording.
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            *PING_OPTIONS,
        ]
        self.server = grpc.aio.server(interceptors=interceptors, options=options)
        limits = Limits(s.max_documents, s.max_query_chars, s.max_document_chars)
        callers = self.callers
        # Every face: the same models (batchers), limits and callers; only the shapes differ.
        faces = (self.models, limits, callers, s.default_model)
        rerank_pb2_grpc.add_RerankServiceServicer_to_server(RerankService(*faces), self.server)
        cohere_pb2_grpc.add_CohereServiceServicer_to_server(CohereService(*faces), self.server)
        tei = TeiFace(self.models, limits, s.default_model, s.tokenizer_threads, callers)
        tei_rest_pb2_grpc.add_TeiServiceServicer_to_server(TeiRest(tei), self.server)
        tei_pb2_grpc.add_RerankServicer_to_server(TeiRerank(tei), self.server)
        tei_pb2_grpc.add_InfoServicer_to_server(TeiInfo(tei), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(self.edge, self.server)
        reflection.enable_server_reflection((*served_services(), reflection.SERVICE_NAME), self.server)
        address = f"{s.grpc_host}:{s.grpc_port}"
        try:
            if s.grpc_tls_cert is not None and s.grpc_tls_key is not None:
                self.port = self.server.add_secure_port(address, server_credentials(s))
            else:
                self.port = self.server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise ConfigurationError(
                f"cannot listen on {address} (is the port in use?); choose another with RERANK_GRPC_PORT / --grpc-port"
            )
        self.metrics_port = self._metrics_endpoint.start(s.grpc_host, s.metrics_port)
        await self.server.start()
        for model in self.models.values():
            model.batcher.start()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._watchdog = asyncio.create_task(self._watch())
        log.info("serving %s on %s:%d", ", ".join(sorted(self.models)), s.grpc_host, self.port)
        log.info(
            "metrics on http://%s:%d/metrics%s",
            s.grpc_host,
            self.metrics_port,
            f" (the sum of every process sharing {s.metrics_dir})" if s.metrics_dir else "",
        )
        return self.port

    async def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def _watch(self) -> None:
        """The watchdog: health follows inference, and held places lapse on time. While a model's inference is stuck
        (:meth:`~rerank.service.core.batching.DynamicBatcher.stall`) the replica reports NOT_SERVING
        (gRPC health, ``/health`` 503), so Envoy moves traffic away; once it works again, SERVING."""
        while True:
            await asyncio.sleep(WATCHDOG_SECONDS)
            self.holds.expire()  # places whose body never came go now, not at the next check
            stalls = {name: why for name, model in self.models.items() if (why := model.batcher.stall()) is not None}
            if stalls.keys() == self._stalls.keys():
                self._stalls = stalls
                continue
            for name in stalls.keys() - self._stalls.keys():
                log.error("%s: inference is stuck (%s): NOT_SERVING", name, stalls[name])
            for name in self._stalls.keys() - stalls.keys():
                log.warning("%s: inference works again", name)
            self._stalls = stalls
            if not self._draining:
                status = health_pb2.HealthCheckResponse
                await self._set_health(status.NOT_SERVING if stalls else status.SERVING)

    @property
    def stalls(self) -> dict[str, str]:
        """Models whose inference the watchdog finds stuck, and why (empty: all work)."""
        return dict(self._stalls)

    async def stop(self, *, delay: float | None = None, hurry: asyncio.Event | None = None) -> None:
        """Drains, then stops. Every call in flight gets an answer:

        1. health turns NOT_SERVING, so Envoy's health checks move new traffic to other replicas,
           and the edge's check admits every body without holding a place here (so that Envoy
           sends it where it routes, and a replica on its way out refuses nothing);
        2. for ``delay`` seconds (default: the drain-delay setting) it keeps serving whatever
           still arrives, while Envoy notices;
        3. it stops accepting calls (new ones are refused; Envoy retries them elsewhere) and lets
           the calls in flight finish, for up to the grace period;
        4. what is still queued then is answered UNAVAILABLE, and the models close.

        Setting ``hurry`` (a second signal) cuts steps 2 and 3 short.
        """
        s = self.settings
        hurry = hurry or asyncio.Event()
        self._draining = True
        await self.health.enter_graceful_shutdown()
        delay = s.drain_delay if delay is None else delay
        if delay > 0:
            log.info("draining: NOT_SERVING, still serving for %.1f s", delay)
            await _until(hurry, delay)
        if self.server is not None:
            # grpc stops accepting at once and cancels whatever outlives its grace; ours ends first.
            stopping = asyncio.create_task(self.server.stop(s.grace_period + 5))
            idle = asyncio.create_task(self.calls.wait_idle(s.grace_period))
            await asyncio.wait([idle, asyncio.create_task(hurry.wait())], return_when=asyncio.FIRST_COMPLETED)
            if self.calls.in_flight:
                log.warning("grace period over: answering %d calls in flight UNAVAILABLE", self.calls.in_flight)
            for model in self.models.values():
                model.batcher.refuse(Unavailable("the server is shutting down; retry the request"))
            await self.calls.wait_idle(5)
            await stopping
        if self._watchdog is not None:
            self._watchdog.cancel()
        await self.edge.close()
        for model in self.models.values():
            await model.close()
        self._tokenizers.shutdown()
        self._metrics_endpoint.stop()
        if s.metrics_dir is not None:
            forget_process(s.metrics_dir, os.getpid())
        tracing.shutdown()


async def _until(event: asyncio.Event, timeout: float) -> None:
    """Sleeps ``timeout`` seconds, or less if ``event`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


async def serve(settings: Settings) -> None:
    """Runs until SIGTERM or SIGINT, then drains (:meth:`RerankServer.stop`): SIGTERM (an
    orchestrator) with the drain delay, SIGINT (Ctrl-C) without; a second signal hurries it."""
    server = RerankServer(settings)
    await server.start()
    received: list[int] = []
    first, hurry = asyncio.Event(), asyncio.Event()

    def on_signal(signum: int) -> None:
        received.append(signum)
        (hurry if first.is_set() else first).set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    await first.wait()
    log.info("stopping (%s)", signal.Signals(received[0]).name)
    await server.stop(delay=0 if received[0] == signal.SIGINT else None, hurry=hurry)


__all__ = ["RerankServer", "serve"]
