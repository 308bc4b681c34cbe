"""Zipkin v2 protobuf messages (``zipkin.proto3``), built at runtime from a hand-written descriptor.

No maintained Zipkin proto package works with protobuf 7, so the few messages are declared here
with the official field numbers of openzipkin/zipkin-api ``zipkin.proto``::

    package zipkin.proto3;
    message Endpoint { string service_name = 1; bytes ipv4 = 2; bytes ipv6 = 3; int32 port = 4; }
    message Annotation { fixed64 timestamp = 1; string value = 2; }
    message Span {
      enum Kind { SPAN_KIND_UNSPECIFIED = 0; CLIENT = 1; SERVER = 2; PRODUCER = 3; CONSUMER = 4; }
      bytes trace_id = 1; bytes parent_id = 2; bytes id = 3; Kind kind = 4; string name = 5;
      fixed64 timestamp = 6; uint64 duration = 7; Endpoint local_endpoint = 8;
      Endpoint remote_endpoint = 9; repeated Annotation annotations = 10;
      map<string, string> tags = 11; bool debug = 12; bool shared = 13;
    }
    message ListOfSpans { repeated Span spans = 1; }

The descriptor goes into a private pool, so nothing global is touched and importing this module
has no side effects; :func:`messages` builds the classes on first use (and imports protobuf then:
an idle platform does not hold it).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.protobuf import descriptor_pb2

PACKAGE = "zipkin.proto3"
KINDS = {0: None, 1: "CLIENT", 2: "SERVER", 3: "PRODUCER", 4: "CONSUMER"}


@dataclass(frozen=True)
class ZipkinMessages:
    Span: Any
    ListOfSpans: Any
    Endpoint: Any
    Annotation: Any


def _field(msg: Any, name: str, number: int, ftype: int, *, repeated: bool = False, type_name: str = "") -> None:
    from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F

    f = msg.field.add(name=name, number=number, type=ftype, label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
    if type_name:
        f.type_name = type_name


def _file() -> descriptor_pb2.FileDescriptorProto:
    from google.protobuf import descriptor_pb2

    F = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="devbox/zipkin.proto", package=PACKAGE, syntax="proto3")
    ep = fd.message_type.add(name="Endpoint")
    _field(ep, "service_name", 1, F.TYPE_STRING)
    _field(ep, "ipv4", 2, F.TYPE_BYTES)
    _field(ep, "ipv6", 3, F.TYPE_BYTES)
    _field(ep, "port", 4, F.TYPE_INT32)
    ann = fd.message_type.add(name="Annotation")
    _field(ann, "timestamp", 1, F.TYPE_FIXED64)
    _field(ann, "value", 2, F.TYPE_STRING)
    span = fd.message_type.add(name="Span")
    kind = span.enum_type.add(name="Kind")
    for number, name in enumerate(("SPAN_KIND_UNSPECIFIED", "CLIENT", "SERVER", "PRODUCER", "CONSUMER")):
        kind.value.add(name=name, number=number)
    entry = span.nested_type.add(name="TagsEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, F.TYPE_STRING)
    _field(entry, "value", 2, F.TYPE_STRING)
    _field(span, "trace_id", 1, F.TYPE_BYTES)
    _field(span, "parent_id", 2, F.TYPE_BYTES)
    _field(span, "id", 3, F.TYPE_BYTES)
    _field(span, "kind", 4, F.TYPE_ENUM, type_name=f".{PACKAGE}.Span.Kind")
    _field(span, "name", 5, F.TYPE_STRING)
    _field(span, "timestamp", 6, F.TYPE_FIXED64)
    _field(span, "duration", 7, F.TYPE_UINT64)
    _field(span, "local_endpoint", 8, F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Endpoint")
    _field(span, "remote_endpoint", 9, F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Endpoint")
    _field(span, "annotations", 10, F.TYPE_MESSAGE, repeated=True, type_name=f".{PACKAGE}.Annotation")
    _field(span, "tags", 11, F.TYPE_MESSAGE, repeated=True, type_name=f".{PACKAGE}.Span.TagsEntry")
    _field(span, "debug", 12, F.TYPE_BOOL)
    _field(span, "shared", 13, F.TYPE_BOOL)
    lst = fd.message_type.add(name="ListOfSpans")
    _field(lst, "spans", 1, F.TYPE_MESSAGE, repeated=True, type_name=f".{PACKAGE}.Span")
    return fd


@functools.cache
def messages() -> ZipkinMessages:
    """The message classes, built once per process in a private descriptor pool."""
    from google.protobuf import descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())

    def cls(name: str) -> Any:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))

    return ZipkinMessages(Span=cls("Span"), ListOfSpans=cls("ListOfSpans"), Endpoint=cls("Endpoint"),
                          Annotation=cls("Annotation"))
