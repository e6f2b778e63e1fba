"""Assembles and runs the grpc.aio server: models, servicers, auth, errors, health, reflection,
and an orderly shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.backends.loader import load_backend
from service.core.batching import BatchingConfig
from service.core.reranker import ServedModel
from service.errors import ConfigurationError
from service.model_folder import find_model_folders, read_model_folder
from service.protocol import SERVICE_NAME, rerank_pb2_grpc
from service.router.auth import ApiKeyInterceptor, load_key_digests
from service.router.rerank_service import RerankService
from service.router.status import ErrorInterceptor
from service.router.validation import Limits
from service.settings import Settings

log = logging.getLogger("rerank")

MAX_RESPONSE_BYTES = 64 * 1024 * 1024


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
        # After auth: a call that reaches a handler gets typed errors mapped, and anything
        # unexpected becomes an opaque INTERNAL.
        interceptors.append(ErrorInterceptor())
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
        service = RerankService(self.models, Limits(max_documents=s.max_documents))
        rerank_pb2_grpc.add_RerankServiceServicer_to_server(service, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
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

    async def stop(self) -> None:
        """Drains: health turns NOT_SERVING, in-flight calls get the grace period, then models close."""
        await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(self.settings.grace_period)
        for model in self.models.values():
            await model.close()
        self._tokenizer_pool.shutdown(wait=False, cancel_futures=True)


async def serve(settings: Settings) -> None:
    """Runs until SIGINT or SIGTERM, then shuts down gracefully."""
    server = RerankServer(settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.stop()


__all__ = ["RerankServer", "serve"]
