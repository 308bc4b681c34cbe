"""User regexes (matchers, routing rules) compile with RE2 where google-re2 is installed (the platform
always: a dependency), and with Python's re in a service's own environment without it."""

from __future__ import annotations

import pytest

from devbox.regex import compile_re2
from tests.pyrun import python_c


def test_re2_refuses_what_it_cannot_run_in_linear_time() -> None:
    with pytest.raises(ValueError, match=r"backreference|invalid escape"):
        compile_re2(r"(a)\1")
    assert compile_re2("(a+)+$").search("a" * 40 + "!") is None


def test_the_sdk_imports_and_matches_without_google_re2() -> None:
    """An exported stack's image has devbox's SDK but not google-re2: importing the SDK's routing
    failed there (every instance crashed at start)."""
    code = ("import sys\n"
            "sys.modules['re2'] = None  # not installed\n"
            "from devbox.polaris.routing import MatchString\n"
            "m = MatchString.model_validate({'type': 'REGEX', 'value': 'b.se'})\n"
            "print(m.matches('base'), m.matches('feature'))")
    assert python_c(code) == "True False"
