"""`devbox up` says where the dashboard is, and with a platform token gives the `?token=` link."""

from __future__ import annotations

from devbox.cli.serve import dashboard_line


def test_without_a_token_the_bare_url() -> None:
    assert dashboard_line("http://127.0.0.1:7070", None) == "dashboard: http://127.0.0.1:7070/"


def test_with_a_token_the_login_link_quoted() -> None:
    line = dashboard_line("http://127.0.0.1:7070/", "s3cret&x=1 y")
    assert line.startswith("dashboard: http://127.0.0.1:7070/?token=s3cret%26x%3D1%20y ")
