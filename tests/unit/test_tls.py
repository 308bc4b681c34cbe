"""devbox.tls: no TLS context for plain http, one shared default context for anything else."""

from __future__ import annotations

import ssl

from devbox.tls import default_tls, tls_for


def test_plain_http_gets_no_context_and_https_the_shared_default() -> None:
    assert tls_for("http://127.0.0.1:7070/api/platform") is False
    context = tls_for("https://example.test/")
    assert isinstance(context, ssl.SSLContext) and context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert tls_for("https://other.test/") is context is default_tls()
