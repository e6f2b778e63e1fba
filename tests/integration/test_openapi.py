"""``GET /openapi.json`` describes exactly what Envoy serves, and ``GET /docs`` renders it.

The document is validated with ``openapi-spec-validator``; the routes it describes are compared
with the routes Envoy is configured to serve (the rendered configuration's direct responses plus
the transcoder's ``google.api.http`` rules in the descriptor set) and probed through the running
Envoy; the API page is loaded in headless Chromium, which must render every route, and its
screenshot is kept (``build/test-artifacts/``)."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest
from google.protobuf import descriptor_pb2
from openapi_spec_validator import validate

from rerank.gateway.descriptor import descriptor_set
from rerank.gateway.envoy_config.bootstrap import render
from rerank.gateway.envoy_config.clusters import METRICS_CLUSTER
from rerank.gateway.openapi import http_rules
from rerank.service.settings import Settings
from tests.support import API_KEY, REPO

ARTIFACTS = REPO / "build" / "test-artifacts"


@pytest.fixture
def document(rest_anonymous):
    response = rest_anonymous.get("/openapi.json")  # no key
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    return response.json()


def described(document) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item}


def envoy_routes() -> set[tuple[str, str]]:
    """(method, path) of every route Envoy serves: its own answers (direct responses on an exact
    path, in the rendered configuration), the metrics route (rendered when the service has a
    metrics port, as rerank-stack's always has) and the transcoder's HTTP rules."""
    config = render(Settings(metrics_port=9000), descriptor=descriptor_set())
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    direct = {("get", r["match"]["path"]) for r in routes if "direct_response" in r and "path" in r["match"]}
    direct |= {("get", r["match"]["path"]) for r in routes if r.get("route", {}).get("cluster") == METRICS_CLUSTER}
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set().read_bytes())
    return direct | {(verb, path) for verb, path, _ in http_rules(files)}


def test_the_document_is_valid_openapi(document):
    validate(document)
    assert document["openapi"].startswith("3.")


def test_every_route_envoy_serves_is_described_and_no_other(document):
    assert described(document) == envoy_routes()
    assert {"/v1/rerank", "/v2/rerank", "/rerank", "/info", "/v1/models", "/health", "/metrics"} <= set(
        document["paths"]
    )


def test_every_described_route_answers_through_envoy(document, stack):
    with httpx.Client(base_url=stack.rest, timeout=30) as client:
        for method, path in sorted(described(document)):
            response = client.request(method.upper(), path, json={} if method == "post" else None)
            public = document["paths"][path][method].get("security") == []
            expected = {200} if public else {401}  # without a key: served, or refused by the service
            assert response.status_code in expected, (method, path, response.status_code, response.text[:200])
        # Anything else: asked without a key, the edge refuses before telling what exists.
        assert client.get("/not-described").status_code == 401
        keyed = {"authorization": f"Bearer {API_KEY}"}
        assert client.get("/not-described", headers=keyed).status_code == 404


def test_schemas_follow_the_json_mapping(document):
    schemas = document["components"]["schemas"]
    assert schemas["rerank.v1.ModelStats"]["properties"]["requests"]["type"] == "string"  # int64 as a string
    assert schemas["rerank.v1.RerankResult"]["properties"]["index"]["type"] == "integer"
    tei = document["paths"]["/rerank"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert tei["type"] == "array"  # the bare array Envoy's Lua unwraps
    assert "top_n" in schemas["rerank.v1.CohereRerankRequest"]["properties"]
    for request in ("RerankRequest", "CohereRerankRequest", "TeiRerankRequest"):  # our extension on the last two
        assert schemas[f"rerank.v1.{request}"]["properties"]["instruction"]["type"] == "string"
    assert "sigmoid" in document["paths"]["/v2/rerank"]["post"]["summary"]


def test_docs_page_renders_every_route_in_headless_chromium(document, stack, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "install Chromium: make browser (apt-get install chromium)"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,2400",
        "--virtual-time-budget=15000",
    ]
    url = f"{stack.rest}/docs"
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    screenshot = tmp_path / "docs.png"
    subprocess.run([chromium, *flags, f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(screenshot, ARTIFACTS / "docs.png")
    assert screenshot.stat().st_size > 10_000
    # Swagger UI rendered one block per operation, from the document Envoy served.
    for path in document["paths"]:
        assert f'data-path="{path}"' in dom, path
    page = (REPO / "gateway" / "assets" / "docs" / "index.html").read_text()
    assert "http://" not in page and "https://" not in page  # everything from Envoy, no CDN
