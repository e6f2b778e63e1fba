"""Envoy gateway and the stack: what runs in front of the service, and what runs them.

* ``envoy_config/``: Envoy's configuration, rendered from the settings table (``routes.py``: what
  it publishes, declared once; ``openapi.py`` and ``descriptor.py``: the REST routes' OpenAPI
  document and the transcoder's descriptor set, built at install time);
* ``processes.py``: child processes, supervised (the one implementation, used by the stack, the
  tests and the benchmarks); ``envoy.py``: Envoy as such a child; ``ports.py``: free ports to
  hand to one (outside the kernel's range for outgoing connections);
* ``stack.py`` (``rerank-stack``), ``proxy.py`` (``rerank-gateway``), ``kubernetes.py`` (the
  Kubernetes profile's manifests) and ``probe.py`` (the image's health check): the commands.
"""
