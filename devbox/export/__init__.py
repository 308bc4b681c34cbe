"""``devbox export``: this project on the real backends, for when one machine is not enough.

:mod:`devbox.export.stack` owns what both targets share: each service as an image with the env
devbox injects (pointed at the real backends instead of the platform), the backends behind devbox's
protocols (Polaris server, OpenTelemetry Collector + Jaeger, Prometheus, Alertmanager) and their
config derived from the project's rules. :mod:`devbox.export.compose` writes a compose file,
:mod:`devbox.export.k8s` Kubernetes manifests.
"""
