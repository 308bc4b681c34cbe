"""Polaris's client-side rules, shared by the naming server (``devbox.mocks.naming``) and the SDK.

What a Polaris SDK decides on the caller's side lives here, so the SDK ships without the server:
``routing`` (routing rules: which instances a request may go to), ``balancer`` (which one of
them), ``circuit`` (circuit breaking per instance) and ``ids`` (Polaris's instance-id rule).
Pure code: no sockets, no threads, no clocks read at import.
"""
