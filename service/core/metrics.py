"""Metrics, recorded where the work happens (as TEI does), read by Prometheus, ListModels and
the bench.

:class:`Metrics` holds one server's Prometheus metric families (every name starts with
``rerank_``; ``docs/operating.md`` lists them with their TEI equivalents). Each served model
records through its :class:`ModelMetrics`: the scheduler its batches, queue waits and queue
gauges, the tokenizer pool its tokenization times, admission its rejections; the call guard
(:mod:`rerank.service.router.guard`) records requests by method, model, key name and status code.

``ModelMetrics`` also keeps plain running totals for ``ListModels``' ``ModelStats``: they are
this process's own, while ``/metrics`` may show every replica's (multiprocess mode,
:mod:`rerank.service.router.metrics_endpoint`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rerank.service.admission import contract
from rerank.service.admission.holds import OUTCOMES as HOLD_OUTCOMES

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: a millisecond (a cached tokenization, a one-pair batch on a GPU) to a minute
(Envoy's default route timeout)."""
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Pairs per micro-batch (64 by default; RERANK_MAX_BATCH_PAIRS can raise it)."""
BATCH_TOKEN_BUCKETS = tuple(2**i for i in range(6, 18))
"""Padded tokens per micro-batch: 64 to 131072 (8192 by default; one long pair runs alone)."""
PADDING_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Share of a micro-batch's tokens that were padding."""

NONE = "-"
"""Label value for "not known": no model resolved, no API key."""
EDGE_OUTCOMES = ("unauthenticated", "rate_limited", *contract.OUTCOMES, "passed")
"""The outcomes ``rerank_edge_checks_total`` counts: denied for the key (unauthenticated,
rate_limited), admission's outcomes for a rerank call (:data:`~rerank.service.admission.contract.OUTCOMES`),
or passed (a call that is not a rerank: listing models, a health check, metrics)."""


class Metrics:
    """The Prometheus metric families of one server.

    ``registry`` is where they are registered (None: nowhere, as in multiprocess mode, where the
    values go to files that a collector reads back). Several servers in one process (tests)
    each get their own registry."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.registry = registry
        r = registry
        self.requests = Counter(
            "rerank_requests",
            "Calls answered, by gRPC method, model, API key name and gRPC status code (REST calls are "
            "transcoded gRPC calls). Health checks are not counted.",
            ["method", "model", "key", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            "rerank_request_duration_seconds",
            "Time from a call reaching the service to its answer, by gRPC method and model.",
            ["method", "model"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "rerank_requests_in_flight",
            "Calls being answered now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.tokenization_duration = Histogram(
            "rerank_tokenization_duration_seconds",
            "Time to tokenize one request (query and documents), on a tokenizer thread.",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.queue_duration = Histogram(
            "rerank_queue_duration_seconds",
            "Time a request waited in the queue, from queued (tokenized) to its first pair on the model.",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "rerank_inference_duration_seconds",
            "Time one micro-batch took on the model (padding included).",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "rerank_batch_size", "Pairs in one micro-batch.", ["model"], buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "rerank_batch_tokens",
            "Padded tokens in one micro-batch (longest sequence x pairs).",
            ["model"],
            buckets=BATCH_TOKEN_BUCKETS,
            registry=r,
        )
        self.padding_ratio = Histogram(
            "rerank_batch_padding_ratio",
            "Share of one micro-batch's tokens that were padding.",
            ["model"],
            buckets=PADDING_BUCKETS,
            registry=r,
        )
        self.pairs = Counter("rerank_pairs", "Sequences scored by the model.", ["model"], registry=r)
        self.tokens = Counter(
            "rerank_tokens",
            "Tokens scored by the model, special tokens included, padding not (what responses' usage counts).",
            ["model"],
            registry=r,
        )
        self.padded_tokens = Counter(
            "rerank_padded_tokens", "Tokens fed to the model, padding included.", ["model"], registry=r
        )
        self.queue_pairs = Gauge(
            "rerank_queue_pairs",
            "Pairs waiting for the model.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_seconds = Gauge(
            "rerank_queue_estimated_seconds",
            "Estimated seconds to work through what is queued (the batch in flight included), as of the last "
            "change; across replicas, the largest.",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.rejected = Counter(
            "rerank_rejected_requests",
            "Requests refused before queueing, by reason: queue_time (would wait longer than "
            "RERANK_MAX_QUEUE_SECONDS), queue_full (RERANK_MAX_QUEUE_PAIRS), request_too_large (more pairs than "
            "the queue holds), tokenizer_queue (RERANK_TOKENIZER_QUEUE), rate_limited (the API key's rps or "
            "tpm), draining (the server is stopping), stalled (inference is stuck on this replica).",
            ["model", "reason"],
            registry=r,
        )
        self.early_holds = Counter(
            "rerank_early_holds",
            "Tokens the edge's check placed for requests before Envoy read their bodies, by outcome: placed, "
            "taken (the call came while its place was held), lapsed (it did not come in time), late (a lapsed "
            "token's call came after all: its queue time checked again), invalid (a token this replica never "
            "placed, already taken, or presented with another key).",
            ["outcome"],
            registry=r,
        )
        for outcome in HOLD_OUTCOMES:
            self.early_holds.labels(outcome)
        self.edge_checks = Counter(
            "rerank_edge_checks",
            "Requests Envoy asked this replica about before reading their bodies (its ext_authz check), by API "
            "key name and outcome: unauthenticated, rate_limited, held (here or at the peer asked), admitted, "
            "refused (429 before the body was read), unavailable (inference stuck), passed (not a rerank). A "
            "peer's question is not counted.",
            ["key", "outcome"],
            registry=r,
        )

    def record_hold(self, outcome: str) -> None:
        """One outcome of a hold (:class:`~rerank.service.admission.holds.Holds`)."""
        self.early_holds.labels(outcome).inc()

    def model(self, name: str) -> ModelMetrics:
        return ModelMetrics(name, self)


class ModelMetrics:
    """One model's metrics: running totals since the server started (ListModels, the bench),
    and, when ``families`` is given, the same events recorded into Prometheus."""

    def __init__(self, model: str = "model", families: Metrics | None = None) -> None:
        self.model = model
        self.families = families
        self.requests = 0
        self.rejected_requests = 0
        self.cancelled_requests = 0
        self.pairs = 0
        self.batches = 0
        self.padded_tokens = 0
        self.real_tokens = 0
        self.inference_seconds = 0.0
        self.queue_pairs = 0
        if families is not None:
            # Every series of the model exists from the start, at zero: a rate() needs two samples,
            # and a dashboard shows 0 rather than "no data".
            m = model
            for family in (families.tokenization_duration, families.queue_duration, families.inference_duration):
                family.labels(m)
            for family in (families.batch_size, families.batch_tokens, families.padding_ratio):
                family.labels(m)
            for counter in (families.pairs, families.tokens, families.padded_tokens):
                counter.labels(m)
            families.queue_pairs.labels(m).set(0)
            families.queue_seconds.labels(m).set(0)

    def record_batch(self, *, pairs: int, padded_tokens: int, real_tokens: int, seconds: float) -> None:
        """One micro-batch ran: ``pairs`` sequences, ``padded_tokens`` fed (``real_tokens`` of
        them not padding), in ``seconds``."""
        self.batches += 1
        self.pairs += pairs
        self.padded_tokens += padded_tokens
        self.real_tokens += real_tokens
        self.inference_seconds += seconds
        f = self.families
        if f is not None:
            m = self.model
            f.inference_duration.labels(m).observe(seconds)
            f.batch_size.labels(m).observe(pairs)
            f.batch_tokens.labels(m).observe(padded_tokens)
            f.padding_ratio.labels(m).observe(1.0 - real_tokens / padded_tokens if padded_tokens else 0.0)
            f.pairs.labels(m).inc(pairs)
            f.tokens.labels(m).inc(real_tokens)
            f.padded_tokens.labels(m).inc(padded_tokens)

    def reject(self, reason: str) -> None:
        """A request was refused before it was queued (see :attr:`Metrics.rejected` for the reasons)."""
        self.rejected_requests += 1
        if self.families is not None:
            self.families.rejected.labels(self.model, reason).inc()

    def record_tokenization(self, seconds: float) -> None:
        if self.families is not None:
            self.families.tokenization_duration.labels(self.model).observe(seconds)

    def record_queue_wait(self, seconds: float) -> None:
        if self.families is not None:
            self.families.queue_duration.labels(self.model).observe(seconds)

    def set_queue(self, pairs: int, seconds: float) -> None:
        """What waits now: ``pairs``, and ``seconds`` of estimated work."""
        self.queue_pairs = pairs
        if self.families is not None:
            self.families.queue_pairs.labels(self.model).set(pairs)
            self.families.queue_seconds.labels(self.model).set(seconds)

    @property
    def padding_fraction(self) -> float:
        """Share of the tokens fed to the model that were padding."""
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0
