"""Assembles and runs the grpc.aio server: models, servicers, auth, errors, health, reflection,
and an orderly shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.backends.loader import load_backend
from service.core.batching import BatchingConfig
from service.core.reranker import ServedModel
from service.errors import ConfigurationError, Unavailable
from service.model_folder import find_model_folders, read_model_folder
from service.protocol import (
    SERVICE_NAME,
    cohere_pb2,
    cohere_pb2_grpc,
    rerank_pb2_grpc,
    tei_pb2,
    tei_pb2_grpc,
    tei_rest_pb2,
    tei_rest_pb2_grpc,
)
from service.router.auth import ApiKeyInterceptor, load_key_digests
from service.router.cohere_service import CohereService
from service.router.guard import CallGuard
from service.router.rerank_service import RerankService
from service.router.tei_service import TeiFace, TeiInfo, TeiRerank, TeiRest
from service.router.validation import Limits
from service.settings import Settings

log = logging.getLogger("rerank")

MAX_RESPONSE_BYTES = 64 * 1024 * 1024


def served_services() -> tuple[str, ...]:
    """Full names of the services this server registers (what reflection lists)."""
    return (
        SERVICE_NAME,
        cohere_pb2.DESCRIPTOR.services_by_name["CohereService"].full_name,
        tei_rest_pb2.DESCRIPTOR.services_by_name["TeiService"].full_name,
        tei_pb2.DESCRIPTOR.services_by_name["Rerank"].full_name,
        tei_pb2.DESCRIPTOR.services_by_name["Info"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    )


def batching_config(settings: Settings) -> BatchingConfig:
    return BatchingConfig(settings.max_batch_tokens, settings.max_batch_pairs, settings.max_queue_pairs)


class RerankServer:
    """Owns the loaded models and the running gRPC server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models: dict[str, ServedModel] = {}
        self.server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self.port: int | None = None
        self.calls = CallGuard()
        self._tokenizer_pool = ThreadPoolExecutor(settings.tokenizer_threads, thread_name_prefix="tokenize")

    def load_models(self) -> None:
        """Loads every model folder and warms it up; raises :class:`ConfigurationError`."""
        s = self.settings
        folders = find_model_folders(s.models_dir)
        if not folders:
            raise ConfigurationError(
                f"no model folders under {s.models_dir}; convert one with rerank-convert "
                "or point RERANK_MODELS_DIR / --models-dir at a folder of them"
            )
        for folder in folders:
            try:
                config = read_model_folder(folder)
                backend = load_backend(folder, config, variant=s.variant, device=s.device, threads=s.threads)
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
            if config.name in self.models:
                raise ConfigurationError(f"two model folders are both named {config.name!r}")
            backend.warm_up()
            self.models[config.name] = ServedModel(
                folder, config, backend, batching=batching_config(s), tokenizer_pool=self._tokenizer_pool
            )
        if s.default_model and s.default_model not in self.models:
            raise ConfigurationError(
                f"RERANK_DEFAULT_MODEL={s.default_model!r} is not served; "
                f"served models: {', '.join(sorted(self.models))}"
            )

    def _interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        s = self.settings
        try:
            digests = load_key_digests(s.api_keys, s.api_keys_file)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"API keys: {exc}") from None
        interceptors: list[grpc.aio.ServerInterceptor] = []
        if digests:
            interceptors.append(ApiKeyInterceptor(digests))
        elif not s.insecure_no_auth:
            raise ConfigurationError(
                "no API keys: set RERANK_API_KEYS or RERANK_API_KEYS_FILE "
                "(or --insecure-no-auth for a local experiment)"
            )
        else:
            log.warning("serving WITHOUT authentication (--insecure-no-auth)")
        # After auth: every call that reaches a handler is counted (for draining) and its
        # errors mapped (anything unexpected becomes an opaque INTERNAL).
        interceptors.append(self.calls)
        return interceptors

    async def start(self) -> int:
        """Loads the models, binds the port and reports SERVING; returns the bound port."""
        s = self.settings
        interceptors = self._interceptors()
        self.load_models()
        options = [
            ("grpc.max_receive_message_length", s.max_request_bytes),
            ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
        self.server = grpc.aio.server(interceptors=interceptors, options=options)
        limits = Limits(max_documents=s.max_documents)
        # Every face: the same models (batchers) and limits, only the shapes differ.
        rerank_pb2_grpc.add_RerankServiceServicer_to_server(RerankService(self.models, limits), self.server)
        cohere_pb2_grpc.add_CohereServiceServicer_to_server(CohereService(self.models, limits), self.server)
        tei = TeiFace(self.models, limits, s.default_model, s.tokenizer_threads)
        tei_rest_pb2_grpc.add_TeiServiceServicer_to_server(TeiRest(tei), self.server)
        tei_pb2_grpc.add_RerankServicer_to_server(TeiRerank(tei), self.server)
        tei_pb2_grpc.add_InfoServicer_to_server(TeiInfo(tei), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((*served_services(), reflection.SERVICE_NAME), self.server)
        address = f"{s.grpc_host}:{s.grpc_port}"
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise ConfigurationError(
                f"cannot listen on {address} (is the port in use?); choose another with RERANK_GRPC_PORT / --grpc-port"
            )
        await self.server.start()
        for model in self.models.values():
            model.batcher.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s on %s:%d", ", ".join(sorted(self.models)), s.grpc_host, self.port)
        return self.port

    async def stop(self, *, delay: float | None = None, hurry: asyncio.Event | None = None) -> None:
        """Drains, then stops. Every call in flight gets an answer:

        1. health turns NOT_SERVING, so Envoy's health checks move new traffic to other replicas;
        2. for ``delay`` seconds (default: the drain-delay setting) it keeps serving whatever
           still arrives, while Envoy notices;
        3. it stops accepting calls (new ones are refused; Envoy retries them elsewhere) and lets
           the calls in flight finish, for up to the grace period;
        4. what is still queued then is answered UNAVAILABLE, and the models close.

        Setting ``hurry`` (a second signal) cuts steps 2 and 3 short.
        """
        s = self.settings
        hurry = hurry or asyncio.Event()
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
        for model in self.models.values():
            await model.close()
        self._tokenizer_pool.shutdown(wait=False, cancel_futures=True)


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
