"""What Envoy publishes, declared once for the renderer (:mod:`rerank.gateway.envoy_config`) and the
OpenAPI generator (:mod:`rerank.gateway.openapi`). Standard library only: the build step imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

SERVICES = ("rerank.v1.RerankService", "rerank.v1.CohereService", "rerank.v1.TeiService")
"""The services the transcoder publishes as REST (their ``google.api.http`` routes)."""

RESPONSE_BODY = {"rerank.v1.TeiService.Rerank": "ranks"}
"""Methods whose JSON response is one field of the printed message (what ``response_body``
would say; Envoy 1.40's transcoder supports that only for google.api.HttpBody, so a Lua script
unwraps it)."""

PUBLIC_METHODS = frozenset({"rerank.v1.RerankService.Health"})
"""Transcoded methods that need no API key."""


@dataclass(frozen=True)
class StaticRoute:
    """A route Envoy answers itself (``direct_response`` from a packaged file), without a key."""

    path: str
    asset: str
    """File under ``gateway/assets/``."""
    content_type: str
    summary: str


STATIC_ROUTES = (
    StaticRoute("/openapi.json", "openapi.json", "application/json", "This OpenAPI 3 description of every REST route."),
    StaticRoute("/docs", "docs/index.html", "text/html; charset=utf-8", "Interactive API page (Swagger UI)."),
    StaticRoute("/docs/swagger-ui-bundle.js", "docs/swagger-ui-bundle.js", "text/javascript", "Swagger UI's script."),
    StaticRoute("/docs/swagger-ui.css", "docs/swagger-ui.css", "text/css", "Swagger UI's style sheet."),
)

METRICS_PATH = "/metrics"
"""Prometheus exposition, routed by Envoy to the replicas' metrics ports (``metrics_route`` in
the renderer); it needs a key unless ``RERANK_METRICS_REQUIRE_KEY=false``."""

METHOD_ROUTES = {"/v1/rerank": "POST", "/v1/models": "GET", "/v2/rerank": "POST", "/rerank": "POST", "/info": "GET"}
"""REST paths and their one method: any other method is 405 (not the transcoder's 404)."""

FACE_ROUTES = {"/rerank": "rerank.v1.TeiService.Rerank", "/info": "rerank.v1.TeiService.Info"}
"""REST paths whose responses a face reshapes into its own format (TEI's), by their gRPC method."""

LIST_FIELDS = {"/v1/rerank": "documents", "/v2/rerank": "documents"}
"""REST paths whose body's named field must be a JSON list. The transcoder would read a lone
string or object there as a list of one (``repeated google.protobuf.Value``), so Envoy refuses it
before transcoding."""
