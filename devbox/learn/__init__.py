"""Teaching the platform: ``devbox explain`` (a request or a service in plain sentences) and
``devbox tour`` (a guided walk through the running example that checks each step happened).

Both read the running platform only through its HTTP API (:class:`devbox.learn.reader.Reader`),
the same one the CLI and the dashboard use.
"""
