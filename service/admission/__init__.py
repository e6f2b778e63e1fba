"""Admission: whether a request may wait for the model, decided once, the same way everywhere.

One component, in three parts:

* :mod:`~rerank.service.admission.queue`: the cost of a request in padded tokens, the queue's
  state as admission reads it and the one refusal rule (a request that would wait longer than
  ``max_queue_seconds`` is refused at once, with a retry delay);
* :mod:`~rerank.service.admission.estimate`: what a request costs before it is tokenized, from
  its characters, or from its body's size before the body is even read;
* :mod:`~rerank.service.admission.holds`: the places the edge's check holds for bodies on their
  way, each bound to the key it was charged to, the price it was admitted at, this replica and a
  short expiry, and taken once;

and :mod:`~rerank.service.admission.contract`, what the gateway and the service agree on: how the
edge asks (Envoy's ``ext_authz`` filter calls the service's ``envoy.service.auth.v3.Authorization``
``Check`` with the request's headers, before its body is read), which headers carry the decision,
and what Envoy's access log reads from it. The gateway renders Envoy from it;
:mod:`rerank.service.router.edge` implements the check (API key, the key's limits, then admission).
"""
