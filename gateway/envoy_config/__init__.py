"""Envoy's configuration, rendered from the settings table.

:func:`~rerank.gateway.envoy_config.bootstrap.render` turns :class:`~rerank.service.settings.Settings`
(ports, body limit, route timeout, upstream endpoints, health-check and drain timings) into Envoy's
bootstrap configuration, a module per part:

* ``bootstrap.py``: the whole (admin, overload manager, listener and clusters) and its YAML;
* ``listener.py``: the listener, TLS and the route table (from :mod:`rerank.gateway.routes`);
* ``clusters.py``: the replicas (calls and the edge's checks alike) and their metrics ports;
* ``filters.py``: the HTTP filters and the Lua scripts they run (``lua/*.lua``, through
  ``lua_source.py``);
* ``access_log.py`` and ``local_reply.py``: the access-log line and Envoy's own error replies.

The repository's ``envoy.yaml`` is the rendering of the default settings (``make envoy.yaml``; a
test keeps them equal), and ``deploy/kubernetes`` holds the Kubernetes profile's rendering.

What the gateway does, and why each piece is there:

* one listener for REST (JSON, gRPC-JSON transcoding) and native gRPC (``codec_type: AUTO``);
* filters, in order (``filters.py``): a Lua filter that drops a client's ``x-rerank-*`` headers and
  answers gRPC over HTTP/1 at the edge (``lua/edge.lua``); the edge's check (``ext_authz``, gRPC,
  headers only: the API key, the key's limits and admission, by a replica, before the body is
  read; the contract in :mod:`rerank.service.admission.contract`); the stateful session that
  sends an admitted body to the replica holding its place; a buffer filter (a reliable 413 over
  the body limit); a Lua filter that drops headers gRPC cannot carry, checks that list fields are
  lists, records the gRPC status for the access log and cuts an error's echo of the request short
  (listed before the transcoder so that it runs after it on the way back); the transcoder, the
  router;
* one JSON access-log line per request on stdout (``access_log.py``): request id,
  method, path (without its query), status, gRPC status, duration, bytes, upstream host, the key's
  name and what admission did (from the edge's check); never a header's value, so never a key;
* ``GET /metrics``: routed, not transcoded, to the replicas' metrics ports (any replica shows the
  whole stack: :mod:`rerank.service.router.metrics_endpoint`), when Envoy fronts the stack's own
  replicas; with ``RERANK_UPSTREAMS`` each service is scraped on its own instead;
* errors Envoy makes itself become the same JSON shape as the service's errors
  (``{"code": <gRPC code>, "message", "details"}``), native gRPC clients keep plain text;
* upstream: HTTP/2, least-request balancing across replicas, active gRPC health checks, a ping
  on every connection each second (a frozen replica's calls are retried elsewhere within
  seconds), retries on reset / connect failure / refused stream / UNAVAILABLE under a retry
  budget, outlier detection.
"""
