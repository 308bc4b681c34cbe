"""A refusal on the Polaris HTTP listener is written without Polaris's messages: it must be what
protobuf-JSON makes of a ``Response`` with the same code and info, byte for byte."""

from __future__ import annotations

import pytest
from devbox.mocks.naming.models import Code
from devbox.mocks.naming.polaris_http import render_error
from devbox.mocks.naming.polaris_pb import protos
from google.protobuf import json_format

from devbox.platform.errors import ApiError, NotFound

REASONS = ["no such endpoint: GET /healthz", "", 'quotes " and \\ backslash', "ünïcode \u2028 \x00 \U0001f600",
           "tab\tand\nnewline"]


@pytest.mark.parametrize("reason", REASONS)
def test_a_refusal_is_the_json_of_its_response_message(reason: str) -> None:
    answer = render_error(NotFound(reason))  # a 404 is Polaris's NotFoundResource, answered with HTTP 400
    message = protos().response.Response(code={"value": int(Code.NotFoundResource)}, info={"value": reason})
    assert answer.body.decode() == json_format.MessageToJson(message, preserving_proto_field_name=True, indent=None)
    assert answer.status_code == int(Code.NotFoundResource) // 1000
    assert answer.headers["X-Polaris-Code"] == str(int(Code.NotFoundResource))


def test_a_refusal_with_its_own_polaris_code_keeps_it() -> None:
    answer = render_error(ApiError("bad", detail={"code": int(Code.ExistedResource)}))
    assert answer.body == b'{"code": %d, "info": "bad"}' % int(Code.ExistedResource)
