"""Observability: health checks, trace context and metrics.

``_health`` serves the standard gRPC health service on agentwire's
transport; ``_trace_context`` parses and carries W3C trace context as AutoGen
does; ``_tracing`` makes OpenTelemetry spans when the ``tracing`` extra is
installed and asked for; ``_metrics`` exposes a gateway's statistics to
Prometheus. Nothing here is imported by ``import agentwire``: each module is
loaded by the code that uses it, and the optional libraries
(``opentelemetry-api``, ``prometheus-client``, ``h11``) only when their
feature is used.
"""
