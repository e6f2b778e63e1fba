"""What the gateway and the service agree on about the edge's check: one declaration, that the
gateway renders Envoy's configuration from (:mod:`rerank.gateway.envoy_config.filters`) and that
the service implements (:mod:`rerank.service.router.edge`). Standard library only.

How the edge asks: Envoy's ``ext_authz`` HTTP filter, in gRPC mode, calls
``envoy.service.auth.v3.Authorization/Check`` on a replica (the service's own gRPC server,
through the replicas' cluster) with the request's method, path and :data:`CHECKED_HEADERS`,
before it reads the body. The answer is either:

* **OK**: the request goes on, with :data:`HOLD_HEADER` (the token of what the check charged and
  held for it) and, where the replica knows its address, :data:`REPLICA_HEADER` (Envoy's
  header-based stateful session then sends the request to that replica); or
* **denied**: Envoy answers the client itself with the check's status, headers and body (the
  service's own error: 401 for a missing or wrong key, 429 with ``Retry-After`` for a key over
  its limit or a body the queue has no room for), the body never read.

Either way the check's dynamic metadata (:data:`METADATA_NAMESPACE`) names the key and the
admission outcome for Envoy's access log. When the check cannot be asked (no replica answers
within :data:`CHECK_TIMEOUT_SECONDS`), the request goes on unchecked, and the service checks it
as it checks any direct call: the edge's check is a fast path, never the only guard.
"""

from __future__ import annotations

CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"
"""The gRPC method Envoy's ``ext_authz`` filter calls."""
CHECK_TIMEOUT_SECONDS = 0.25
"""How long Envoy waits for a check; then the request goes on unchecked (fail open: the service
checks the key, the limits and the queue again when the call reaches it)."""

CHECKED_HEADERS = ("authorization", "content-length", "content-type")
"""The request headers Envoy sends to the check (with the method and the path): the key, the
body's size, and whether the request is native gRPC. No other header reaches it."""

HEADER_PREFIX = "x-rerank-"
"""Request headers with this prefix are the edge's to set: Envoy drops every one a client sends
before anything reads them."""
HOLD_HEADER = HEADER_PREFIX + "hold"
"""On an admitted request: the token of what the check charged to the key and held in the
queue for it (:class:`~rerank.service.admission.holds.Holds`), taken by the call it becomes."""
REPLICA_HEADER = HEADER_PREFIX + "replica"
"""On an admitted request: the replica that holds its place, in the form of Envoy's header-based
stateful session (base64 of ``host:port``), so that the request goes there. Envoy removes it
from responses."""
EARLY_HEADER = HEADER_PREFIX + "admission"
"""On a 429 the check answered: ``early`` (the request's body was never read)."""
EARLY = "early"

METADATA_NAMESPACE = "envoy.filters.http.ext_authz"
"""Where Envoy keeps the check's dynamic metadata (its access log reads it from there)."""
KEY_METADATA = "key"
"""The API key's name (never the key), on every checked request with a valid key, denied or not."""
ADMISSION_METADATA = "admission"
"""What admission did: one of :data:`OUTCOMES`."""
CHECKS_METADATA = "admission_checks"
"""How many replicas were asked about the request's body (the check's own and its peer's)."""
HELD, ADMITTED, REFUSED, UNAVAILABLE = "held", "admitted", "refused", "unavailable"
OUTCOMES = (HELD, ADMITTED, REFUSED, UNAVAILABLE)
"""``held``: a place is held for the body on the replica the request is sent to; ``admitted``:
let through with nothing held (a body of unknown size, a draining replica, a call that is not a
rerank); ``refused``: the queue has no room for it (429 before the body is read);
``unavailable``: the replica's inference is stalled and no peer admitted it."""

PEER_HEADER = HEADER_PREFIX + "peer"
"""On a check one replica forwards to another (its peer) because it has no room itself: the
secret the stack's replicas share, so that only a replica can ask a peer to hold a place
without charging the key again (the forwarding replica charged it)."""
