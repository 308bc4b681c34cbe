"""The platform mocks: one package per production system devbox imitates.

Each package has the same shape: ``config.py`` (its section of devbox.yaml), ``core.py`` (state and
rules, no sockets), ``store.py`` (SQLite persistence), protocol adapters (``http_api.py``,
``grpc_api.py``, ...) and ``component.py`` (the object the platform registers).
"""
