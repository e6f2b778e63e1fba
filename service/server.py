"""Assembles and runs the grpc.aio server: models, servicer, auth, health, reflection, shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.core.model_folder import find_model_folders
from service.core.reranker import ServedModel
from service.protocol import SERVICE_NAME, rerank_pb2_grpc
from service.router.auth import ApiKeyInterceptor, load_key_digests
from service.router.rerank_service import RerankService
from service.settings import Settings

log = logging.getLogger("rerank")


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
        s = self.settings
        folders = find_model_folders(s.models_dir)
        if not folders:
            raise SystemExit(f"no model folders under {s.models_dir.resolve()}; convert one with rerank-convert")
        for folder in folders:
            model = ServedModel(folder, batching=s.batching, tokenizer_pool=self._tokenizer_pool,
                                variant=s.variant, device=s.device, threads=s.threads)
            if model.name in self.models:
                raise SystemExit(f"two model folders are both named {model.name!r}")
            self.models[model.name] = model

    async def start(self) -> int:
        s = self.settings
        interceptors = []
        digests = load_key_digests(s.api_keys, s.api_keys_file)
        if digests:
            interceptors.append(ApiKeyInterceptor(digests))
        elif not s.insecure_no_auth:
            raise SystemExit("no API keys: set RERANK_API_KEYS or RERANK_API_KEYS_FILE "
                             "(or pass --insecure-no-auth for a local experiment)")
        else:
            log.warning("serving WITHOUT authentication (--insecure-no-auth)")
        self.load_models()
        options = [
            ("grpc.max_receive_message_length", s.limits.max_request_bytes),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ]
        self.server = grpc.aio.server(interceptors=interceptors, options=options)
        rerank_pb2_grpc.add_RerankServiceServicer_to_server(RerankService(self.models, s.limits), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
        self.port = self.server.add_insecure_port(f"{s.host}:{s.port}")
        if not self.port:
            raise SystemExit(f"cannot listen on {s.host}:{s.port}")
        await self.server.start()
        for model in self.models.values():
            model.batcher.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s on %s:%d", ", ".join(sorted(self.models)), s.host, self.port)
        return self.port

    async def stop(self) -> None:
        """Drains: health turns NOT_SERVING, in-flight calls get the grace period, then models close."""
        await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(self.settings.grace_seconds)
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
