"""Envoy's configuration, rendered from the settings table.

:func:`render` turns :class:`~rerank.service.settings.Settings` (ports, body limit, route timeout,
upstream endpoints, health-check and drain timings) into Envoy's bootstrap configuration, one
function per part. The repository's ``envoy.yaml`` is :func:`render` of the default settings
(``make envoy.yaml``; a test keeps them equal), and ``deploy/kubernetes`` holds the
Kubernetes profile's rendering.

What the gateway does, and why each piece is there:

* one listener for REST (JSON, gRPC-JSON transcoding) and native gRPC (``codec_type: AUTO``);
* filters, in order: with the stack's own replicas (``metrics_upstreams``), an early admission
  check (a Lua filter, :func:`lua_admission`: a large REST rerank body is refused with 429
  before it is read when the replicas asked say it would be), then a buffer filter (a reliable 413
  over the body limit), a Lua filter that
  drops the gRPC headers the transcoder leaves on JSON responses and moves the service's
  ``x-rerank-key`` (the caller's key *name*) into the access log (listed before the transcoder
  so that it runs after it on the way back), the transcoder, the router;
* one JSON access-log line per request on stdout (:data:`ACCESS_LOG_FORMAT`): request id,
  method, path (without its query), status, gRPC status, duration, bytes, upstream host, key
  name; never a header's value, so never a key;
* ``GET /metrics``: routed, not transcoded, to the replicas' metrics ports (any replica shows the
  whole stack: :mod:`rerank.service.telemetry.metrics_endpoint`), when Envoy fronts the stack's own
  replicas; with ``RERANK_UPSTREAMS`` each service is scraped on its own instead;
* errors Envoy makes itself become the same JSON shape as the service's errors
  (``{"code": <gRPC code>, "message", "details"}``), native gRPC clients keep plain text;
* upstream: HTTP/2, least-request balancing across replicas, active gRPC health checks,
  retries on reset / connect failure / refused stream / UNAVAILABLE under a retry budget,
  outlier detection.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from rerank.gateway.routes import METRICS_PATH, RESPONSE_BODY, SERVICES, STATIC_ROUTES
from rerank.service.router.status import HOLD_HEADER, REPLICA_HEADER
from rerank.service.settings import Settings

CLUSTER = "rerank_grpc"
METRICS_CLUSTER = "rerank_metrics"
HEALTH_SERVICE = "rerank.v1.RerankService"
FILTER_TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
FILTER_LUA = "envoy.filters.http.lua"
FILTER_BUFFER = "envoy.filters.http.buffer"
FILTER_SESSION = "envoy.filters.http.stateful_session"
SESSION_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession"
SESSION_STATE_TYPE = "type.googleapis.com/envoy.extensions.http.stateful_session.header.v3.HeaderBasedSessionState"
FILTER_ADMISSION = "rerank.admission"
"""The early admission check's Lua filter (a second Lua filter needs its own name)."""
ADMISSION_MIN_BYTES = 64 * 1024
"""Bodies from this size up are checked before they are read; smaller ones pay nothing."""
ADMISSION_TIMEOUT_MS = 250
"""How long the check may take; on timeout or any error the request goes on (fail open). A check
answers in a few milliseconds, but a burst on a busy machine can delay it by tens; a body whose
check times out goes on without a held place, and the service may refuse it after reading it.
The limit bounds what a stuck metrics port adds to a request of 64 KiB or more, which takes
seconds to score anyway."""
ADMISSION_PATHS = ("/v1/rerank", "/v2/rerank", "/rerank")
ADMISSION_CLUSTER = "rerank_admission_{}"
"""One cluster per replica's metrics port (``{}``: its index), so that the check picks which
replica it asks: each replica's queue is its own."""
ADMISSION_TRIES = 2
"""Replicas asked about one body, in turn, before it is refused early: a body is refused only
when two replicas would refuse it (all of them with two), not because the one asked is busy
while another is idle. More would add a check's latency to every refusal under overload, when
every replica refuses."""

Json = dict[str, Any]

HTTP_TO_GRPC = {
    400: 3,  # INVALID_ARGUMENT
    431: 3,  # INVALID_ARGUMENT: request headers too large
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND
    405: 12,  # UNIMPLEMENTED
    413: 8,  # RESOURCE_EXHAUSTED
    429: 8,  # RESOURCE_EXHAUSTED
    500: 13,  # INTERNAL
    501: 12,  # UNIMPLEMENTED
    502: 14,  # UNAVAILABLE
    503: 14,  # UNAVAILABLE
    504: 4,  # DEADLINE_EXCEEDED
}
"""Envoy's own replies carry the gRPC code a client would have got from the service (the
inverse of the transcoder's gRPC -> HTTP table); anything else is 2 (UNKNOWN)."""

METHOD_ROUTES = {"/v1/rerank": "POST", "/v1/models": "GET", "/v2/rerank": "POST", "/rerank": "POST", "/info": "GET"}
"""REST paths and their one method: any other method is 405 (not the transcoder's 404)."""


def replica_sessions(settings: Settings) -> dict[int, str]:
    """With several replicas: each replica's metrics port -> its gRPC address in the form of
    Envoy's header-based session state (base64 of ``host:port``), by which a request admitted by
    the early check goes to the replica that holds its place. Empty with one replica."""
    metrics = metrics_upstreams(settings)
    if len(metrics) < 2:
        return {}
    return {
        m.port: base64.b64encode(f"{g.host}:{g.port}".encode()).decode()
        for m, g in zip(metrics, upstreams(settings), strict=True)
    }


def lua_admission(max_request_bytes: int, replicas: int = 1, sessions: dict[int, str] | None = None) -> str:
    """The early admission check, on the request path before the buffer filter: a ``POST`` on a
    REST rerank path whose ``content-length`` is at least :data:`ADMISSION_MIN_BYTES` is first
    put to a replica's ``GET /admission?bytes=N`` (:mod:`rerank.service.telemetry.metrics_endpoint`;
    no model: Envoy has not read the body, so the service answers for all its models), through
    that replica's :data:`ADMISSION_CLUSTER` (``replicas`` of them). The replicas are asked in
    turn, starting from the next one each time; if the one asked refuses (or does not answer),
    the next is asked, up to :data:`ADMISSION_TRIES`. If every replica asked refuses, Envoy
    replies with 429, the shortest ``Retry-After`` and that replica's JSON error at once, without
    reading the body; if none answered (an error, :data:`ADMISSION_TIMEOUT_MS` passing), the
    request goes on and the service's exact check after parsing decides, as without this filter.
    Chunked bodies (no ``content-length``) are not checked, nor bodies over ``max_request_bytes``:
    the buffer filter refuses those (413), and a body that overflows Envoy's buffers while this
    filter waits for the check's answer stalled until the request timeout (a 408 after 30 s).

    An admitted body's 200 carries the token of the place held for it, which goes on the request
    (``x-rerank-hold``); with ``sessions`` (:func:`replica_sessions`), also which replica holds it,
    which becomes the stateful-session header that sends the request there (``x-rerank-replica``).
    A client's own values of either are dropped, and so is the session header on responses."""
    paths = ", ".join(f'["{p}"] = true, ["{p}/"] = true' for p in ADMISSION_PATHS)
    clusters = ", ".join(f'"{ADMISSION_CLUSTER.format(i)}"' for i in range(replicas))
    table = ", ".join(f'["{port}"] = "{session}"' for port, session in (sessions or {}).items())
    return f"""\
local PATHS = {{{paths}}}
local CHECKS = {{{clusters}}}
local TRIES = math.min({ADMISSION_TRIES}, #CHECKS)
local REPLICAS = {{{table}}}
-- Which replica is asked first, in turn (per worker thread: Lua state is per worker).
local turn = 0

function envoy_on_response(handle)
  handle:headers():remove("{REPLICA_HEADER}")
end

-- What the check did, for the access log: admission (held, admitted, refused, or unchecked: no
-- replica answered, and the service's own check after the body decides alone) and
-- admission_checks (replicas asked). Fetched anew each time: objects from before an httpCall
-- are no longer valid after it.
local function note(handle, key, value)
  handle:streamInfo():dynamicMetadata():set("rerank", key, value)
end

function envoy_on_request(handle)
  local headers = handle:headers()
  -- The hold token and the replica are ours to set: never what a client sent.
  headers:remove("{HOLD_HEADER}")
  headers:remove("{REPLICA_HEADER}")
  if headers:get(":method") ~= "POST" then
    return
  end
  local path = string.match(headers:get(":path") or "", "^[^?]*")
  if not PATHS[path] then
    return
  end
  local size = tonumber(headers:get("content-length") or "")
  if size == nil or size < {ADMISSION_MIN_BYTES} or size > {max_request_bytes} then
    return
  end
  local authorization = headers:get("authorization")
  turn = turn % #CHECKS + 1
  local refusal, refusal_body, delay = nil, nil, nil
  for try = 0, TRIES - 1 do
    local cluster = CHECKS[(turn + try - 1) % #CHECKS + 1]
    local ok, reply, body = pcall(function()
      return handle:httpCall(cluster, {{
        [":method"] = "GET",
        [":path"] = "/admission?bytes=" .. string.format("%d", size),
        [":authority"] = cluster,
        -- Only a caller with a valid key is refused early; the service answers the others (401).
        ["authorization"] = authorization,
      }}, "", {ADMISSION_TIMEOUT_MS})
    end)
    note(handle, "admission_checks", string.format("%d", try + 1))
    local status = ok and reply ~= nil and reply[":status"] or nil
    if status == "200" then
      -- Admitted: the place the service holds for this body is taken by the call it becomes.
      if reply["{HOLD_HEADER}"] ~= nil then
        note(handle, "admission", "held")
        -- headers from before the call are no longer valid: fetched anew.
        local request = handle:headers()
        request:replace("{HOLD_HEADER}", reply["{HOLD_HEADER}"])
        local replica = REPLICAS[reply["{REPLICA_HEADER}"] or ""]
        if replica ~= nil then
          request:replace("{REPLICA_HEADER}", replica)
        end
      else
        note(handle, "admission", "admitted")
      end
      return
    end
    if status == "429" and body ~= nil then
      -- Refused here: the next replica may have room. Of the refusals, the shortest delay.
      local seconds = tonumber(reply["retry-after"] or "1") or 1
      if refusal == nil or seconds < delay then
        refusal, refusal_body, delay = reply, body, seconds
      end
    end
  end
  if refusal == nil then
    note(handle, "admission", "unchecked")
    return
  end
  -- Envoy's own reply: the local-reply mapper keeps this body as it is (it keys on "refused").
  note(handle, "admission", "refused")
  note(handle, "grpc_status", "8")
  if refusal["x-rerank-key"] ~= nil then note(handle, "key", refusal["x-rerank-key"]) end
  handle:respond({{
    [":status"] = "429",
    ["content-type"] = "application/json",
    ["retry-after"] = refusal["retry-after"] or "1",
    ["x-rerank-admission"] = "early",
  }}, refusal_body)
end
"""


def lua_response() -> str:
    """Lua shared by every route's response hook: ``record_and_strip(handle)`` (the filter runs
    after the transcoder on the way back):

    * the service's ``x-rerank-key`` (the caller's key *name*) goes into the request's dynamic
      metadata, for the access log, and out of the response;
    * the call's gRPC status goes there too: from ``grpc-status`` when the response has it in its
      headers, from the trailers of a native gRPC response, and, for a JSON error (whose status
      the transcoder turned into the HTTP status and the body's ``code``), from the HTTP status
      by the inverse of the transcoder's table (exact for every code the service sends);
    * JSON responses lose the gRPC headers the transcoder leaves on them.
    """
    table = ", ".join(f'["{status}"] = "{code}"' for status, code in HTTP_TO_GRPC.items())
    return f"""\
local HTTP_TO_GRPC = {{{table}}}

function is_json(headers)
  local ct = headers:get("content-type")
  return ct ~= nil and string.sub(string.lower(ct), 1, 16) == "application/json"
end

local function remember(handle, name, value)
  handle:streamInfo():dynamicMetadata():set("rerank", name, value)
end

-- Objects got from handle are valid until the script yields (bodyChunks): callers fetch the
-- headers anew after this.
function record_and_strip(handle)
  local headers = handle:headers()
  local key = headers:get("x-rerank-key")
  if key ~= nil then
    remember(handle, "key", key)
    headers:remove("x-rerank-key")
  end
  local status = headers:get("grpc-status")
  local ct = string.lower(headers:get("content-type") or "")
  if string.sub(ct, 1, 16) == "application/json" then
    headers:remove("grpc-status")
    headers:remove("grpc-message")
    headers:remove("grpc-accept-encoding")
    if status == nil then
      local http = headers:get(":status")
      status = http == "200" and "0" or HTTP_TO_GRPC[http] or "2"
    end
    remember(handle, "grpc_status", status)
  elseif string.sub(ct, 1, 16) == "application/grpc" then
    if status == nil then
      for _ in handle:bodyChunks() do end  -- passed on as they come; the status is in the trailers
      local trailers = handle:trailers()
      status = trailers and trailers:get("grpc-status")
    end
    if status ~= nil then
      remember(handle, "grpc_status", status)
    end
  end
end
"""


LUA_DROP_HEADERS = """\
-- Request headers become the service's gRPC metadata, whose keys are 0-9 a-z _ . - (Envoy has
-- lowercased them) and whose values, but for "-bin" keys, are printable ASCII. HTTP allows more
-- (a key "a|b", a Latin-1 value); the service's gRPC library fails the whole call for such a key
-- (a 500, "Illegal header key") and logs a traceback for such a value. They are dropped here,
-- and so are a REST request's grpc-* headers, which describe a gRPC message it does not send
-- ("grpc-encoding: snappy" failed the call with a 500; "grpc-timeout" would set its deadline;
-- gRPC-Web is transcoded as REST here), and any client's x-envoy-* headers, which would steer
-- Envoy itself (x-envoy-upstream-rq-timeout-ms: 1 was a 504).
function drop_non_grpc_headers(headers)
  local ct = headers:get("content-type") or ""
  local rest = not (ct == "application/grpc" or string.find(ct, "^application/grpc[+;]") ~= nil)
  local dropped = {}
  for key, value in pairs(headers) do
    if string.sub(key, 1, 1) ~= ":" and (string.find(key, "[^0-9a-z_%.%-]") ~= nil
        or (rest and string.sub(key, 1, 5) == "grpc-") or string.sub(key, 1, 8) == "x-envoy-"
        or (string.sub(key, -4) ~= "-bin" and string.find(value, "[^ -~]") ~= nil)) then
      dropped[#dropped + 1] = key
    end
  end
  for _, key in ipairs(dropped) do headers:remove(key) end
end
"""
"""Lua every route's request hook calls: ``drop_non_grpc_headers(headers)``."""

LUA_RESPONSE = lua_response() + LUA_DROP_HEADERS
"""What every route's Lua script starts with (the default one and the TEI routes')."""
LUA_DEFAULT_RESPONSE = (
    LUA_RESPONSE
    + """
function envoy_on_response(handle)
  record_and_strip(handle)
end
"""
)

LIST_FIELDS = {"/v1/rerank": "documents", "/v2/rerank": "documents"}
"""REST paths whose body's named field must be a JSON list. The transcoder would read a lone
string or object there as a list of one (``repeated google.protobuf.Value``), so Envoy refuses it
before transcoding."""

LUA_LIST_FIELDS = (
    "LIST_FIELDS = {"
    + ", ".join(f'["{path}"] = "{field}"' for path, field in LIST_FIELDS.items())
    + "}\n"
    + r"""
-- The first character of the value of the top-level key `key` in the JSON object `text` (nil
-- when absent). Jumps from one structural character to the next with string.find, so a body of
-- megabytes is not walked character by character.
function top_level_value(text, key)
  local depth, i = 0, 1
  while true do
    local j = string.find(text, '[{}%[%]"]', i)
    if j == nil then return nil end
    local c = string.sub(text, j, j)
    if c == '"' then
      local k = j + 1
      while true do
        local q = string.find(text, '["\\]', k)
        if q == nil then return nil end
        if string.sub(text, q, q) == "\\" then k = q + 2 else k = q; break end
      end
      if depth == 1 and string.sub(text, j + 1, k - 1) == key then
        local at = string.match(text, "^%s*:%s*()", k + 1)
        if at ~= nil then return string.sub(text, at, at) end
      end
      i = k + 1
    else
      if c == "{" or c == "[" then depth = depth + 1 else depth = depth - 1 end
      i = j + 1
    end
  end
end

function envoy_on_request(handle)
  local headers = handle:headers()
  drop_non_grpc_headers(headers)
  if headers:get(":method") ~= "POST" then return end
  local path = string.gsub(string.match(headers:get(":path") or "", "^[^?]*"), "/$", "")
  local field = LIST_FIELDS[path]
  if field == nil then return end
  local body = handle:body()
  if body == nil then return end
  local first = top_level_value(body:getBytes(0, body:length()), field)
  if first ~= nil and first ~= "[" then
    local kinds = {['"'] = "a string", ["{"] = "an object", ["t"] = "a boolean", ["f"] = "a boolean", ["n"] = "null"}
    local kind = kinds[first] or "a number"
    handle:respond({[":status"] = "400"},
      field .. " is " .. kind .. '; it must be a list of strings or {"text": string} objects')
  end
end
"""
)
"""Envoy-side request check for :data:`LIST_FIELDS` (null too: the transcoder would make it a list
of one null). The reply goes through the local-reply mappers: ``{"code": 3, ...}``."""

LUA_TEI_ERRORS = (
    LUA_RESPONSE
    + """
-- The raw (still JSON-escaped) string value of the first "key":"..." in text, or nil.
function json_string(text, key)
  local pattern = '"' .. key .. '":"'
  local start = string.find(text, pattern, 1, true)
  if start == nil then return nil end
  local i = start + #pattern
  local j = i
  while j <= #text do
    local c = string.sub(text, j, j)
    if c == "\\\\" then
      j = j + 2
    elseif c == '"' then
      return string.sub(text, i, j - 1)
    else
      j = j + 1
    end
  end
  return nil
end

-- TEI's error shape and statuses: {"error", "error_type"}; validation is a 422, no texts at all
-- a 400 "empty", overloaded 429, unhealthy 503. The status must be set before the body is read
-- (Envoy ignores a :status changed after handle:body()), so whether the request had no texts is
-- noted on the way in.
TEI_ERRORS = {
  ["400"] = {"422", "validation"}, ["401"] = {"401", "unauthorized"}, ["404"] = {"422", "validation"},
  ["413"] = {"413", "validation"}, ["429"] = {"429", "overloaded"}, ["503"] = {"503", "unhealthy"},
}

function envoy_on_request(handle)
  drop_non_grpc_headers(handle:headers())
  if UNWRAP == nil then return end
  local body = handle:body()
  local text = body ~= nil and body:getBytes(0, body:length()) or ""
  local absent = string.find(text, '"texts"', 1, true) == nil and string.find(text, '"query"', 1, true) ~= nil
  local empty = absent or string.find(text, '"texts"%s*:%s*%[%s*%]') ~= nil
  handle:streamInfo():dynamicMetadata():set("rerank.tei", "empty", empty and "1" or "0")
end

function envoy_on_response(handle)
  record_and_strip(handle)
  local headers = handle:headers()
  if not is_json(headers) then return end
  local status = headers:get(":status")
  if status == "200" and UNWRAP == nil then return end
  local mapped = TEI_ERRORS[status] or {status, "backend"}
  local noted = handle:streamInfo():dynamicMetadata():get("rerank.tei")
  if status == "400" and noted ~= nil and noted["empty"] == "1" then
    mapped = {"400", "empty"}
  end
  if status ~= "200" then headers:replace(":status", mapped[1]) end
  local body = handle:body()
  if body == nil then return end
  local text = body:getBytes(0, body:length())
  if status == "200" then
    -- {"<field>": X} -> X: the transcoder prints the whole message.
    local inner = string.match(text, '^%s*{%s*"' .. UNWRAP .. '"%s*:%s*(.*)}%s*$')
    if inner ~= nil then body:setBytes(inner) end
    return
  end
  local message = json_string(text, "message") or ""
  body:setBytes('{"error":"' .. message .. '","error_type":"' .. mapped[2] .. '"}')
end
"""
)
"""TEI's routes: its error bodies and statuses (the transcoder's ``{"code", "message"}`` errors
rewritten on the way out; this filter runs after the transcoder on responses)."""


ACCESS_LOG_FORMAT: dict[str, str] = {
    "time": "%START_TIME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "method": "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%",
    "path": "%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "grpc_status": "%DYNAMIC_METADATA(rerank:grpc_status)%",
    "duration_ms": "%DURATION%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "upstream_host": "%UPSTREAM_HOST%",
    "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
    "key": "%DYNAMIC_METADATA(rerank:key)%",
    "admission": "%DYNAMIC_METADATA(rerank:admission)%",
    "admission_checks": "%DYNAMIC_METADATA(rerank:admission_checks)%",
    "flags": "%RESPONSE_FLAGS%",
}
"""Envoy's access-log line, one JSON object per request. ``path`` and ``method`` are the
client's (a REST call's, before transcoding); ``key`` is the API key's name (never the key),
``grpc_status`` the call's gRPC code (REST calls too), both put there by :func:`lua_response`'s Lua."""


def _tei_script(unwrap: str | None) -> str:
    return ("UNWRAP = nil\n" if unwrap is None else f'UNWRAP = "{unwrap}"\n') + LUA_TEI_ERRORS


LUA_ROUTE_SCRIPTS = {"tei_rerank": _tei_script(RESPONSE_BODY["rerank.v1.TeiService.Rerank"]), "tei": _tei_script(None)}
FACE_ROUTES = {
    "/rerank": ("rerank.v1.TeiService.Rerank", "tei_rerank"),
    "/info": ("rerank.v1.TeiService.Info", "tei"),
}
"""REST path -> (its gRPC method, the Lua script that reshapes its responses: the face's own
format). The route must match both paths: the transcoder rewrites the path to the method's and
clears the route cache, so a transcoded response is routed by the gRPC path, while its own
errors (malformed JSON) are answered on the REST path."""


@dataclass(frozen=True)
class Upstream:
    """One endpoint of the service: an address or a DNS name (re-resolved), and a port."""

    host: str
    port: int

    @property
    def is_address(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def upstreams(settings: Settings) -> list[Upstream]:
    """``RERANK_UPSTREAMS`` when set, else the stack's replicas on consecutive loopback ports."""
    if settings.upstreams:
        found = []
        for item in settings.upstreams.split(","):
            host, _, port = item.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"RERANK_UPSTREAMS: {item.strip()!r} is not host:port")
            found.append(Upstream(host.strip("[]"), int(port)))
        return found
    return [Upstream("127.0.0.1", settings.grpc_port + i) for i in range(settings.replicas)]


Descriptor = Path | bytes
"""The transcoder's descriptor set: a file Envoy reads, or its bytes, inlined (for a
configuration that must not depend on the image's file layout, e.g. a Kubernetes ConfigMap)."""


def _seconds(value: float) -> str:
    return f"{value:g}s"


def metrics_upstreams(settings: Settings) -> list[Upstream]:
    """Where ``GET /metrics`` goes: the stack's replicas' metrics ports (consecutive from
    ``RERANK_METRICS_PORT``), each of which serves the whole stack's metrics. None (no route)
    with ``RERANK_UPSTREAMS`` (separate services are scraped one by one, where they run) or
    without a metrics port."""
    if settings.upstreams or not settings.metrics_port:
        return []
    return [Upstream("127.0.0.1", settings.metrics_port + i) for i in range(settings.replicas)]


def render(
    settings: Settings, *, descriptor: Descriptor, endpoints: list[Upstream] | None = None, assets: Path | None = None
) -> Json:
    """Envoy's bootstrap configuration for ``settings``. ``assets``: the folder of the files Envoy
    serves itself (the OpenAPI document, the API page); default: the descriptor's folder, or the
    packaged ``gateway/assets``."""
    endpoints = endpoints if endpoints is not None else upstreams(settings)
    if assets is None:
        assets = descriptor.parent if isinstance(descriptor, Path) else packaged_assets()
    metrics = metrics_upstreams(settings)
    clusters = [cluster(settings, endpoints)]
    if metrics:
        clusters.append(metrics_cluster(metrics))
        clusters += [admission_cluster(i, m) for i, m in enumerate(metrics)]
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": settings.admin_port}}},
        # Caps concurrent downstream connections (and silences Envoy's warning about having none).
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
                        "DownstreamConnectionsConfig",
                        "max_active_downstream_connections": 10000,
                    },
                }
            ]
        },
        "static_resources": {
            "listeners": [listener(settings, descriptor, assets)],
            "clusters": clusters,
        },
    }


def packaged_assets() -> Path:
    """The installed package's ``gateway/assets`` folder."""
    from importlib import resources

    return Path(str(resources.files("gateway") / "assets"))


def listener(settings: Settings, descriptor: Descriptor, assets: Path) -> Json:
    chain: Json = {
        "filters": [
            {
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": http_connection_manager(settings, descriptor, assets),
            }
        ]
    }
    if settings.tls_cert is not None:
        chain["transport_socket"] = downstream_tls(settings)
    return {
        "name": "rerank_listener",
        "address": {"socket_address": {"address": settings.rest_host, "port_value": settings.rest_port}},
        "filter_chains": [chain],
    }


def downstream_tls(settings: Settings) -> Json:
    """TLS 1.2+ on the listener, ALPN offering HTTP/2 (so gRPC works) and HTTP/1.1; with a client
    CA, clients must present a certificate it signed (mutual TLS). Plain HTTP is not accepted."""
    assert settings.tls_cert is not None and settings.tls_key is not None
    common: Json = {
        "alpn_protocols": ["h2", "http/1.1"],
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        "tls_certificates": [
            {
                "certificate_chain": {"filename": str(settings.tls_cert.resolve())},
                "private_key": {"filename": str(settings.tls_key.resolve())},
            }
        ],
    }
    context: Json = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": common,
    }
    if settings.tls_client_ca is not None:
        common["validation_context"] = {"trusted_ca": {"filename": str(settings.tls_client_ca.resolve())}}
        context["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def http_connection_manager(settings: Settings, descriptor: Descriptor, assets: Path) -> Json:
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
        "HttpConnectionManager",
        "stat_prefix": "rerank_ingress",
        "codec_type": "AUTO",
        # Slow clients: headers, then the whole request, within a bound; a request may then wait
        # for its answer up to the route timeout, so a stream is idle-timed out only after that.
        "request_headers_timeout": _seconds(settings.headers_timeout),
        "request_timeout": _seconds(settings.request_timeout),
        "stream_idle_timeout": _seconds(settings.route_timeout + 10),
        "common_http_protocol_options": {"idle_timeout": _seconds(settings.idle_timeout), "max_headers_count": 100},
        # The service's gRPC server accepts more metadata than this: an oversized header is
        # Envoy's 431, never the service's RESOURCE_EXHAUSTED.
        "max_request_headers_kb": settings.max_header_kb,
        "http2_protocol_options": {"max_concurrent_streams": settings.max_streams_per_connection},
        "route_config": {
            "name": "rerank_routes",
            "virtual_hosts": [virtual_host(settings, assets)],
            # The API page's script (about 1.7 MB) is a direct response.
            "max_direct_response_body_size_bytes": MAX_STATIC_BYTES,
        },
        "http_filters": http_filters(settings, descriptor),
        "local_reply_config": local_reply_config(early_admission=bool(metrics_upstreams(settings))),
        "access_log": [access_log()],
    }


def access_log() -> Json:
    """One JSON line per request on Envoy's stdout (:data:`ACCESS_LOG_FORMAT`)."""
    return {
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {
                "json_format": ACCESS_LOG_FORMAT,
                # The path without its query string: a client could put anything there.
                "formatters": [
                    {
                        "name": "envoy.formatter.req_without_query",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.formatter.req_without_query.v3."
                            "ReqWithoutQuery"
                        },
                    }
                ],
            },
        },
    }


MAX_STATIC_BYTES = 4 * 1024 * 1024


def virtual_host(settings: Settings, assets: Path) -> Json:
    # Answered by Envoy itself, without a key: the OpenAPI document, the API page and its files.
    routes: list[Json] = [_static_route(r.path, assets / r.asset, r.content_type) for r in STATIC_ROUTES]
    if metrics_upstreams(settings):
        routes += [_method_not_allowed(METRICS_PATH, "GET"), metrics_route()]
    routes += [_method_not_allowed(path, method) for path, method in METHOD_ROUTES.items()]
    routes += [_face_route(settings, path, method, script) for path, (method, script) in FACE_ROUTES.items()]
    # Native gRPC: no buffer filter (a message over the limit is then the service's own
    # RESOURCE_EXHAUSTED, not a 413 that gRPC clients read as UNKNOWN). The transcoder turns a
    # REST request's content type into application/grpc too, but only after the buffer filter
    # has run on it; the face routes above match their gRPC paths first.
    routes.append(
        {
            "match": {
                "prefix": "/",
                "headers": [{"name": "content-type", "string_match": {"prefix": "application/grpc"}}],
            },
            "route": upstream_route(settings),
            "typed_per_filter_config": {
                FILTER_BUFFER: {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
                    "disabled": True,
                }
            },
        }
    )
    # Everything else: transcoded REST (incl. GET /health, which the service serves without a key).
    routes.append({"match": {"prefix": "/"}, "route": upstream_route(settings)})
    return {
        "name": "rerank",
        "domains": ["*"],
        "routes": routes,
        # Retries resend the request, so Envoy must keep it: up to the body limit.
        "request_body_buffer_limit": settings.max_request_bytes,
    }


def _method_not_allowed(path: str, method: str) -> Json:
    """405 for any other method on ``path``; the transcoder must be off here or it answers first."""
    return {
        "match": {
            "safe_regex": {"regex": f"{path}/?"},
            "headers": [{"name": ":method", "string_match": {"exact": method}, "invert_match": True}],
        },
        "direct_response": {"status": 405, "body": {"inline_string": "Method Not Allowed"}},
        "response_headers_to_add": [{"header": {"key": "allow", "value": method}}],
        "typed_per_filter_config": {FILTER_TRANSCODER: _filter_disabled()},
    }


def _static_route(path: str, file: Path, content_type: str) -> Json:
    return {
        "match": {"path": path},
        "direct_response": {"status": 200, "body": {"filename": str(file)}},
        "response_headers_to_add": [
            {"header": {"key": "content-type", "value": content_type}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        ],
        "typed_per_filter_config": {FILTER_TRANSCODER: _filter_disabled()},
    }


def metrics_route() -> Json:
    """``GET /metrics`` to a replica's metrics port, as it is (not transcoded). The key check,
    when there is one, is the service's; a replica that does not answer is retried on another."""
    return {
        "match": {"path": METRICS_PATH},
        "route": {
            "cluster": METRICS_CLUSTER,
            "timeout": "10s",
            "retry_policy": retry_on_another_host("reset,connect-failure,refused-stream,5xx"),
        },
        "typed_per_filter_config": {FILTER_TRANSCODER: _filter_disabled()},
    }


def _face_route(settings: Settings, path: str, method: str, script: str) -> Json:
    """``path`` (and ``method``'s gRPC path) upstream, responses reshaped by the Lua ``script``."""
    service, _, name = method.rpartition(".")
    grpc_path = re.escape(f"/{service}/{name}")
    return {
        "match": {"safe_regex": {"regex": f"{path}/?|{grpc_path}"}},
        "route": upstream_route(settings),
        "typed_per_filter_config": {
            FILTER_LUA: {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute",
                "name": script,
            }
        },
    }


def _filter_disabled() -> Json:
    return {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}


def upstream_route(settings: Settings) -> Json:
    return {
        "cluster": CLUSTER,
        "timeout": _seconds(settings.route_timeout),
        # Rerank is idempotent: a request that never got an answer is retried on another replica.
        # No per_try_timeout: an expired try is retried under "reset", which would run the same
        # inference again.
        "retry_policy": retry_on_another_host("reset,connect-failure,refused-stream,unavailable"),
    }


def retry_on_another_host(retry_on: str) -> Json:
    """Up to two retries under ``retry_on``, each on a replica not tried yet."""
    return {
        "retry_on": retry_on,
        "num_retries": 2,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 3,
    }


def http_filters(settings: Settings, descriptor: Descriptor) -> list[Json]:
    early: list[Json] = []
    sessions = replica_sessions(settings)
    replicas = len(metrics_upstreams(settings))
    if replicas:
        # Before the buffer filter, which would read the whole body first. Only where Envoy
        # fronts the stack's own replicas (their metrics ports); with RERANK_UPSTREAMS there is
        # no metrics cluster, and the service's own check (after the body) is the only one.
        early.append(
            {
                "name": FILTER_ADMISSION,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                    "default_source_code": {
                        "inline_string": lua_admission(settings.max_request_bytes, replicas, sessions)
                    },
                },
            }
        )
        if sessions:
            # Where the admission check left a replica's session header, the request goes to
            # that replica (it holds the request's place); elsewhere load balancing as usual.
            early.append(
                {
                    "name": FILTER_SESSION,
                    "typed_config": {
                        "@type": SESSION_FILTER_TYPE,
                        "session_state": {
                            "name": "envoy.http.stateful_session.header",
                            "typed_config": {
                                "@type": SESSION_STATE_TYPE,
                                "name": REPLICA_HEADER,
                            },
                        },
                    },
                }
            )
    return [
        *early,
        # Bodies over the limit get a 413 before anything is transcoded (the transcoder's own
        # limit does not give a reliable 413: large bodies reached the service as 429).
        {
            "name": FILTER_BUFFER,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": settings.max_request_bytes,
            },
        },
        # Before the transcoder, so that it runs after it on the response path. Never remove
        # these headers at route level: that breaks REST errors and native gRPC alike.
        {
            "name": FILTER_LUA,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": LUA_DEFAULT_RESPONSE + LUA_LIST_FIELDS},
                "source_codes": {name: {"inline_string": code} for name, code in LUA_ROUTE_SCRIPTS.items()},
            },
        },
        {"name": FILTER_TRANSCODER, "typed_config": transcoder(settings, descriptor)},
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        },
    ]


def transcoder(settings: Settings, descriptor: Descriptor) -> Json:
    source = (
        {"proto_descriptor_bin": base64.b64encode(descriptor).decode()}
        if isinstance(descriptor, bytes)
        else {"proto_descriptor": str(descriptor)}
    )
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        **source,
        "services": list(SERVICES),
        "print_options": {
            "preserve_proto_field_names": True,  # relevance_score, not relevanceScore
            "always_print_primitive_fields": True,  # "index": 0 is printed
        },
        "convert_grpc_status": True,  # gRPC errors -> JSON bodies
        # Unknown query parameters would otherwise send raw JSON to the service (a stream reset,
        # then 503 after retries).
        "ignore_unknown_query_parameters": True,
        # Unknown path or method -> 404 here, not an upstream reset.
        "request_validation_options": {"reject_unknown_method": True},
        "max_request_body_size": settings.max_request_bytes,
        "max_response_body_size": 8 * settings.max_request_bytes,  # return_documents echoes the request
    }


def local_reply_config(*, early_admission: bool = False) -> Json:
    """Envoy's own replies (413, 404, 405, 503, 504, ...) as ``{"code", "message", "details"}``;
    with ``early_admission``, the early check's 429 (already that JSON) as it is."""
    mappers: list[Json] = [
        # Native gRPC: keep Envoy's text as grpc-message. The transcoder rewrites a REST request's
        # content-type to application/grpc too, but also adds x-envoy-original-path.
        {
            "filter": {
                "and_filter": {
                    "filters": [
                        {
                            "header_filter": {
                                # Native gRPC only: gRPC-Web is transcoded as REST here, and
                                # its errors are JSON like any REST request's (found by fuzzing).
                                "header": {
                                    "name": "content-type",
                                    "string_match": {"safe_regex": {"regex": "application/grpc([+;].*)?"}},
                                }
                            }
                        },
                        {
                            "header_filter": {
                                "header": {"name": "x-envoy-original-path", "present_match": True, "invert_match": True}
                            }
                        },
                    ]
                }
            },
            "body_format_override": {"text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"}},
        }
    ]
    if early_admission:
        # The early admission check's 429 already carries the service's JSON error: as it is.
        mappers.append(
            {
                "filter": {
                    "metadata_filter": {
                        "matcher": {
                            "filter": "rerank",
                            "path": [{"key": "admission"}],
                            "value": {"string_match": {"exact": "refused"}},
                        },
                        "match_if_key_not_found": False,
                    }
                },
                "body_format_override": {
                    "text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"},
                    "content_type": "application/json",
                },
            }
        )
    for status, code in HTTP_TO_GRPC.items():
        mappers.append(
            {
                "filter": {
                    "status_code_filter": {
                        "comparison": {
                            "op": "EQ",
                            "value": {"default_value": status, "runtime_key": f"local_reply.status_{status}"},
                        }
                    }
                },
                "body_format_override": {"json_format": {"code": code, "message": "%LOCAL_REPLY_BODY%", "details": []}},
            }
        )
    # Any other error: code 2 (UNKNOWN).
    mappers.append(
        {
            "filter": {
                "status_code_filter": {
                    "comparison": {
                        "op": "GE",
                        "value": {"default_value": 300, "runtime_key": "local_reply.status_ge_300"},
                    }
                }
            },
            "body_format_override": {"json_format": {"code": 2, "message": "%LOCAL_REPLY_BODY%", "details": []}},
        }
    )
    # What is left are Envoy's own 200s: the files it serves (the OpenAPI document, the API page), as they are.
    return {"mappers": mappers, "body_format": {"text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"}}}


def cluster(settings: Settings, endpoints: list[Upstream]) -> Json:
    dns = any(not e.is_address for e in endpoints)
    interval = _seconds(settings.health_check_interval)
    result: Json = {
        "name": CLUSTER,
        # A DNS name (a Kubernetes headless Service) is re-resolved: one host per address.
        "type": "STRICT_DNS" if dns else "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "LEAST_REQUEST",
        "load_assignment": {
            "cluster_name": CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": e.host, "port_value": e.port}}}}
                        for e in endpoints
                    ]
                }
            ],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                # Mandatory: gRPC (and grpc_health_check) needs HTTP/2 upstream.
                "explicit_http_config": {
                    "http2_protocol_options": {"connection_keepalive": {"interval": "30s", "timeout": "5s"}}
                },
            }
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    # Retries may add at most 20 % to the requests in flight (at least 16 at once): enough
                    # to carry a dead replica's share, never a retry storm.
                    "retry_budget": {"budget_percent": {"value": 20.0}, "min_retry_concurrency": 16},
                    "max_connections": 1024,
                    "max_pending_requests": 100000,
                    "max_requests": 100000,
                }
            ]
        },
        "health_checks": [
            {
                "timeout": "1s",
                "interval": interval,
                # The default is 60 s while the cluster has had no traffic: a replica that comes up
                # after Envoy would stay unhealthy for a minute.
                "no_traffic_interval": interval,
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {"service_name": HEALTH_SERVICE},
            }
        ],
        # When fewer than half the hosts are healthy Envoy uses them all ("panic mode", its
        # default, stated on purpose): a lone replica still gets requests while it drains or
        # before its first passing check, instead of 503 "no healthy upstream".
        "common_lb_config": {"healthy_panic_threshold": {"value": 50}},
        "outlier_detection": {
            # Eject a replica after 2 consecutive gateway failures (connect failure, reset,
            # 502/503/504); application errors (INTERNAL -> 500) must not eject.
            "consecutive_gateway_failure": 2,
            "enforcing_consecutive_gateway_failure": 100,
            "enforcing_consecutive_5xx": 0,
            "interval": "5s",
            "base_ejection_time": "10s",
            "max_ejection_percent": 100,
        },
    }
    if settings.upstream_tls_ca is not None:
        # The services serve TLS (RERANK_GRPC_TLS_CERT): verify their chain against this CA.
        result["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "validation_context": {"trusted_ca": {"filename": str(settings.upstream_tls_ca.resolve())}},
                },
            },
        }
    if dns:
        result["dns_refresh_rate"] = "5s"
        result["dns_lookup_family"] = "V4_PREFERRED"
    return result


def metrics_cluster(endpoints: list[Upstream]) -> Json:
    """The replicas' metrics ports: plain HTTP/1.1, round robin (any replica has it all)."""
    return _plain_cluster(METRICS_CLUSTER, endpoints)


def admission_cluster(index: int, endpoint: Upstream) -> Json:
    """Replica ``index``'s metrics port alone, for the early check (:data:`ADMISSION_CLUSTER`)."""
    return _plain_cluster(ADMISSION_CLUSTER.format(index), [endpoint])


def _plain_cluster(name: str, endpoints: list[Upstream]) -> Json:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": e.host, "port_value": e.port}}}}
                        for e in endpoints
                    ]
                }
            ],
        },
    }


def to_yaml(config: Json, *, header: str = "") -> str:
    """YAML text of a rendered configuration (keys in rendering order)."""

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style: Literal["|"] | None = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    body = yaml.dump(config, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
    return header + body


DEFAULT_HEADER = """\
# Envoy's configuration for rerank's default settings, with one replica.
#
# RENDERED, do not edit: `python -m rerank.gateway.envoy_config > envoy.yaml` (make envoy.yaml) writes it
# from service/settings.py and gateway/envoy_config.py, and a test keeps it equal to them.
# rerank-stack and rerank-gateway render their own copy from the settings they are given.
# Run from the repository root after `make install`:  envoy -c envoy.yaml
"""
REPOSITORY_DESCRIPTOR = Path("gateway/assets/rerank.pb")
"""The descriptor set's path from the repository root (where ``make install`` builds it)."""


def render_default() -> str:
    """The repository's ``envoy.yaml``."""
    return to_yaml(render(Settings(), descriptor=REPOSITORY_DESCRIPTOR), header=DEFAULT_HEADER)


if __name__ == "__main__":
    import sys

    sys.stdout.write(render_default())
