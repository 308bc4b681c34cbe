"""A refusal on the OTLP/HTTP listener is a ``google.rpc.Status``; in JSON it is written without
protobuf, so it must be what protobuf-JSON makes of that Status, byte for byte."""

from __future__ import annotations

import pytest
from devbox.mocks.tracing.otlp import JSON, PROTOBUF, render_error
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from devbox.platform import errors
from devbox.platform.errors import GRPC_CODES, ApiError

REASONS = ["no such endpoint: GET /healthz", "", 'quotes " and \\ backslash', "ünïcode \u2028 \x00 \U0001f600",
           "tab\tand\nnewline"]
REFUSALS = sorted({cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, ApiError)},
                  key=lambda cls: cls.__name__)


def test_the_code_table_is_google_rpc_code() -> None:
    assert GRPC_CODES == {name: code_pb2.Code.Value(name) for name in code_pb2.Code.keys()}


@pytest.mark.parametrize("reason", REASONS)
@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda cls: cls.__name__)
def test_a_json_refusal_is_the_json_of_its_status(refusal: type[ApiError], reason: str) -> None:
    exc = refusal(reason)
    status = status_pb2.Status(code=code_pb2.Code.Value(exc.grpc_status), message=reason)
    answer = render_error(exc)
    assert answer.body.decode() == json_format.MessageToJson(status, indent=None)
    assert answer.media_type == JSON and answer.status_code == exc.status


def test_a_protobuf_refusal_is_the_status_message() -> None:
    exc = errors.NotFound("no such trace")
    exc.detail["encoding"] = PROTOBUF
    answer = render_error(exc)
    assert status_pb2.Status.FromString(answer.body) == status_pb2.Status(code=5, message="no such trace")
    assert answer.media_type == PROTOBUF and answer.status_code == 404
