"""Hostile input against the non-tracing listeners (issue 14, §3 items 6, 7 and 10): refused
with a 4xx in the protocol's own shape, never a 500, and the API stays responsive. A request head
or an HTTP/2 preface that never completes is timed out, never held open."""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from devbox.mocks.naming.polaris_pb import protos

from devbox.platform.http_timeouts import HEAD_TIMEOUT_S, HeadTimeoutProtocol
from devbox.testing import PlatformThread, running_platform
from tests import httpc

DEEP = ("[" * 100_000 + "]" * 100_000).encode()
pb = protos()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformThread]:
    root: Path = tmp_path_factory.mktemp("hostile")
    with running_platform(root, components=["naming", "metrics", "alerting"], platform={"read_timeout": 1.0}) as p:
        yield p


@pytest.mark.parametrize(("listener", "path"), [
    ("alertmanager", "/api/v2/silences"),
    ("alertmanager", "/api/v2/alerts"),
    ("api", "/api/metrics/custom"),
    ("polaris_http", "/v1/RegisterInstance"),
])
def test_json_nested_100000_deep_is_a_400(platform: PlatformThread, listener: str, path: str) -> None:
    answer = httpc.post(platform.url(listener) + path, content=DEEP, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text[:300]


def test_a_10000_character_instance_id_is_refused(platform: PlatformThread) -> None:
    long_id = "x" * 10_000
    with grpc.insecure_channel(platform.target("polaris_grpc")) as channel:
        answer = pb.grpcapi.PolarisGRPCStub(channel).RegisterInstance(
            pb.service.Instance(id={"value": long_id}, service={"value": "long"}, namespace={"value": "default"},
                                host={"value": "127.0.0.1"}, port={"value": 9000}), timeout=10)
    assert answer.code.value == 400130  # InvalidInstanceID
    api = platform.url("api")
    refused = httpc.post(api + "/api/naming/instances",
                         json={"service": "long", "host": "127.0.0.1", "port": 9001, "id": long_id})
    assert refused.status_code == 400
    assert all(len(i["id"]) <= 128 for i in httpc.get(api + "/api/naming/instances").json())


@pytest.mark.parametrize("name", ["1-bad", "a b", "", "x-y"])
def test_a_silence_matcher_that_is_not_a_label_name_is_refused(platform: PlatformThread, name: str) -> None:
    silence = {"matchers": [{"name": name, "value": "v", "isRegex": False}], "startsAt": "2030-01-01T00:00:00Z",
               "endsAt": "2030-01-02T00:00:00Z", "createdBy": "t", "comment": "c"}
    answer = httpc.post(platform.url("alertmanager") + "/api/v2/silences", json=silence)
    assert answer.status_code == 400, answer.text
    listed = httpc.get(platform.url("alertmanager") + "/api/v2/silences", params={"filter": "1-bad=v"})
    assert listed.status_code == 400


def test_prometheus_refuses_unknown_methods_in_its_envelope(platform: PlatformThread) -> None:
    prom = platform.url("prometheus")
    for method, path in [("POST", "/api/v1/admin/tsdb/delete_series"), ("PUT", "/api/v1/query"),
                         ("GET", "/api/v1/admin/tsdb/snapshot")]:
        answer = httpc.request(method, prom + path)
        assert answer.status_code in (404, 405), (method, path, answer.status_code)
        body = answer.json()
        assert body["status"] == "error" and body["errorType"] and body["error"], body


def test_alertmanager_answers_carry_a_content_type(platform: PlatformThread) -> None:
    am = platform.url("alertmanager") + "/api/v2"
    posted = httpc.post(am + "/alerts", json=[{"labels": {"alertname": "Hostile"}}])
    assert posted.status_code == 200 and posted.headers["content-type"].startswith("application/json")
    silence = {"matchers": [{"name": "alertname", "value": "Hostile", "isRegex": False}],
               "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2030-01-02T00:00:00Z", "createdBy": "t", "comment": "c"}
    sid = httpc.post(am + "/silences", json=silence).json()["silenceID"]
    deleted = httpc.delete(f"{am}/silence/{sid}")
    assert deleted.status_code == 200 and deleted.headers["content-type"].startswith("application/json")


def test_devbox_openapi_documents_400_not_422(platform: PlatformThread) -> None:
    api = platform.url("api")
    spec = httpc.get(api + "/openapi.json").json()
    validation = [(path, method) for path, ops in spec["paths"].items() for method, op in ops.items()
                  if "HTTPValidationError" in str(op.get("responses", {}).get("422", ""))]
    assert validation == []
    register = spec["paths"]["/api/naming/instances"]["post"]["responses"]
    assert "400" in register
    # and what it documents is what it answers
    assert httpc.post(api + "/api/naming/instances", json={"service": 5}).status_code == 400
    assert httpc.put(api + "/api/naming/instances").status_code == 405


def test_half_sent_bodies_are_timed_out_and_the_api_stays_responsive(platform: PlatformThread) -> None:
    host, port = platform.target("api").rsplit(":", 1)
    stalled = []
    for _ in range(200):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"POST /api/metrics/custom HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"name\":")
        stalled.append(sock)
    try:
        took = []
        for _ in range(20):
            t0 = time.monotonic()
            assert httpc.get(platform.url("api") + "/healthz", timeout=5).status_code == 200
            took.append(time.monotonic() - t0)
        # generous bounds for a busy shared runner: stalled bodies must not hold the loop at all
        assert sorted(took)[len(took) // 2] < 0.25, f"/healthz median {sorted(took)[10]:.2f}s with stalled bodies"
        # each stalled request is answered 408 and its connection closed after the read timeout
        stalled[0].settimeout(10)
        answer = b""
        while chunk := stalled[0].recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        for sock in stalled[1:]:
            sock.settimeout(10)
            while sock.recv(4096):
                pass  # closed by the server: recv returns b""
    finally:
        for sock in stalled:
            sock.close()


# --- request heads that never complete (slowloris) ----------------------------------------------
#: The head timeout while these tests run (HEAD_TIMEOUT_S is 10 s): the timers' behaviour, not their length.
HEAD_S = 1.0
#: How long a test waits for an answer or a close: a timer fires late on a CPU-starved runner.
DEADLINE_S = 30.0
HTTP_LISTENERS = ("api", "polaris_http", "prometheus", "alertmanager")


@pytest.fixture
def short_heads(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(HeadTimeoutProtocol, "head_timeout", HEAD_S)
    return HEAD_S


def _connect(platform: PlatformThread, listener: str) -> socket.socket:
    host, port = platform.target(listener).rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=DEADLINE_S)


def _until_closed(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection; fails at ``deadline`` (monotonic)."""
    answer = b""
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"the connection was still open at the deadline; read {answer[:300]!r}") from None
        if not chunk:
            return answer
        answer += chunk


def _one_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """The head and body of one response with a Content-Length (the connection stays open)."""
    sock.settimeout(DEADLINE_S)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole answer arrived: {data[:300]!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    fields = dict(line.lower().split(b":", 1) for line in head.split(b"\r\n")[1:])
    length = int(fields[b"content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole answer arrived: {head + body!r}"
        body += chunk
    return head, body


def _assert_refused(answer: bytes, status: int, why: str) -> None:
    """``answer`` is ``status`` with Connection: close and a JSON reason saying ``why``."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), answer[:300]
    assert b"\r\nconnection: close" in head.lower(), head
    reason = json.loads(body)["reason"]
    assert why in reason, reason


def _assert_head_timeout(answer: bytes) -> None:
    _assert_refused(answer, 408, f"did not arrive within {HEAD_S:g} s")


def test_uvicorn_still_has_the_hooks_the_head_timeout_overrides() -> None:
    """The head timer overrides these of uvicorn's HttpToolsProtocol: one renamed upstream would leave
    an override that is never called (and the timer unarmed or never cancelled)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

    overridden = {name for name in vars(HeadTimeoutProtocol) if not name.startswith("_") and callable(
        getattr(HeadTimeoutProtocol, name))}
    assert overridden == {"connection_made", "connection_lost", "data_received", "on_message_begin",
                          "on_headers_complete", "on_message_complete"}
    assert overridden <= set(vars(HttpToolsProtocol))
    # a refusal behind an answer in flight closes after it: from the cycle's flag and callback
    cycle = inspect.signature(RequestResponseCycle.__init__).parameters
    assert "on_response" in cycle
    assert "response_complete" in inspect.getsource(RequestResponseCycle.__init__)


def test_a_partial_request_head_is_answered_408_and_closed(platform: PlatformThread, short_heads: float) -> None:
    socks = {listener: _connect(platform, listener) for listener in HTTP_LISTENERS}
    try:
        sent = time.monotonic()
        for sock in socks.values():
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        deadline = sent + DEADLINE_S
        for listener, sock in socks.items():
            answer = _until_closed(sock, deadline)
            _assert_head_timeout(answer)
            assert time.monotonic() - sent >= short_heads * 0.9, f"{listener} answered 408 before the timeout"
    finally:
        for sock in socks.values():
            sock.close()


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(
        platform: PlatformThread, short_heads: float) -> None:
    with _connect(platform, "api") as sock:
        assert _until_closed(sock, time.monotonic() + DEADLINE_S) == b""


def test_a_head_trickled_a_byte_at_a_time_is_cut(platform: PlatformThread, short_heads: float) -> None:
    # Each byte comes well within the timeout of the one before: only a deadline on the whole head cuts it.
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
    deadline = time.monotonic() + DEADLINE_S
    with _connect(platform, "api") as sock:
        sent = 0
        answer = b""
        while not answer:
            assert sent < len(head), "the whole trickled head was sent and no 408 came"
            sock.sendall(head[sent:sent + 1])
            sent += 1
            sock.settimeout(short_heads / 10)  # the pace of the trickle: a wait for the answer
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                assert time.monotonic() < deadline, f"no 408 after {sent} trickled bytes"
        answer += _until_closed(sock, deadline)
    _assert_head_timeout(answer)


def test_an_idle_keep_alive_connection_outlives_the_head_timeout(platform: PlatformThread, short_heads: float) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with _connect(platform, "api") as kept, _connect(platform, "api") as clock:
        kept.sendall(request)
        head, _ = _one_answer(kept)
        assert head.startswith(b"HTTP/1.1 200 "), head
        # A partial head sent now is answered 408 a head timeout later: by then the kept connection
        # has idled that long since its answer.
        clock.sendall(b"GET /healthz HTTP/1.1\r\n")
        _assert_head_timeout(_until_closed(clock, time.monotonic() + DEADLINE_S))
        kept.sendall(request)
        head, body = _one_answer(kept)
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert json.loads(body)["status"], body


def test_a_slow_large_body_is_not_cut_by_the_head_timeout(platform: PlatformThread, short_heads: float) -> None:
    # JSON may start with any amount of whitespace: a body that streams for longer than the head
    # timeout (paced well within the listener's 1 s body read timeout) and still parses.
    pad = b" " * 32_768
    with _connect(platform, "alertmanager") as post, _connect(platform, "alertmanager") as clock:
        post.sendall(b"POST /api/v2/alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        clock.sendall(b"GET / HTTP/1.1\r\n")
        clock.settimeout(0.05)  # the pace of the body's chunks: a wait for the clock's 408
        deadline = time.monotonic() + DEADLINE_S
        sent = 0
        answer = b""
        while not answer or sent < 1_000_000:
            post.sendall(b"%x\r\n%s\r\n" % (len(pad), pad))
            sent += len(pad)
            if not answer:
                try:
                    answer = clock.recv(65536)
                except TimeoutError:
                    assert time.monotonic() < deadline, "the partial head on the clock connection had no answer"
        _assert_head_timeout(answer + _until_closed(clock, deadline))
        alerts = b'[{"labels": {"alertname": "SlowBody"}}]'
        post.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(alerts), alerts))
        head, body = _one_answer(post)
    assert head.startswith(b"HTTP/1.1 200 "), head + body[:300]
    listed = httpc.get(platform.url("alertmanager") + "/api/v2/alerts", params={"filter": "alertname=SlowBody"})
    assert [a["labels"]["alertname"] for a in listed.json()] == ["SlowBody"]


def test_a_grpc_connection_without_its_http2_preface_is_closed(platform: PlatformThread) -> None:
    # A connection that sends nothing is closed by the listener's front (it never reaches grpc); one
    # that sends part of the preface reaches grpc, whose own bound is its SETTINGS-ack timeout (60 s,
    # GOAWAY "settings_timeout"): the platform sets its handshake timeout to the head timeout, whose
    # GOAWAY says so.
    host, port = platform.target("polaris_grpc").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as silent, socket.create_connection((host, int(port))) as partial:
        partial.sendall(b"PRI * HTTP/2.0\r\n")
        deadline = time.monotonic() + HEAD_TIMEOUT_S + DEADLINE_S
        assert _until_closed(silent, deadline) == b""
        goaway = _until_closed(partial, deadline)
        assert b"before handshake timeout" in goaway, goaway


@pytest.mark.parametrize("listener", ["api", "alertmanager", "polaris_http"])
def test_a_request_head_over_the_size_bound_is_answered_431_and_closed(platform: PlatformThread,
                                                                       listener: str) -> None:
    from devbox.platform.http_timeouts import MAX_HEAD_BYTES

    with _connect(platform, listener) as sock:  # under the bound: served
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES // 2) + b"\r\n\r\n")
        head, _ = _one_answer(sock)
        assert not head.startswith(b"HTTP/1.1 431 "), head
    with _connect(platform, listener) as sock:
        try:  # the server may close while the rest of the head is still being sent
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 * MAX_HEAD_BYTES) + b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _until_closed(sock, time.monotonic() + DEADLINE_S)
    _assert_refused(answer, 431, f"exceed {MAX_HEAD_BYTES} bytes")


# --- a head refused while the answer before it is still in flight (pipelined) -------------------
#: The head bound while these tests run: the bound's behaviour, not its size (1 MiB would only be slower).
SMALL_HEAD_BYTES = 64 * 1024
#: What the client sends of its refused head while the answer before it is held: many times the bound.
FLOOD_BYTES = 8 * 1024 * 1024
HELD_BODY = b"the answer that was held"


@dataclass
class _Meter:
    """What reached the protocol of a connection to :func:`held_answer`; ``changed`` is notified once a
    read has been handled and once a refusal made, for a test to wait on."""

    changed: threading.Condition = field(default_factory=threading.Condition)
    received: int = 0  # bytes handled by the protocol's data_received
    fed: int = 0  # of them, those fed to httptools' parser
    largest_read: int = 0
    refused: list[int] = field(default_factory=list)

    def wait_for(self, what: str, condition: Callable[[], object]) -> None:
        with self.changed:
            assert self.changed.wait_for(condition, timeout=DEADLINE_S), f"{what}: not by the deadline ({self})"


class _MeteredParser:
    """httptools' parser (a C type, not patchable) counting the bytes it is fed."""

    def __init__(self, parser: Any, meter: _Meter) -> None:
        self._parser, self._meter = parser, meter

    def feed_data(self, data: bytes) -> None:
        with self._meter.changed:
            self._meter.fed += len(data)
        self._parser.feed_data(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


@dataclass
class _HeldAnswer:
    port: int
    release: threading.Event  # the one endpoint answers once this is set
    meter: _Meter


@pytest.fixture
def held_answer() -> Iterator[_HeldAnswer]:
    """A uvicorn server with the platform's protocol (metered) on port 0, in a thread, whose one endpoint
    holds its answer until the test releases it."""
    import uvicorn

    meter, release = _Meter(), threading.Event()

    class Metered(HeadTimeoutProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.parser = _MeteredParser(self.parser, meter)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            with meter.changed:
                meter.received += len(data)
                meter.largest_read = max(meter.largest_read, len(data))
                meter.changed.notify_all()

        def _refuse(self, status: int, error: str, reason: str) -> None:
            super()._refuse(status, error, reason)
            with meter.changed:
                meter.refused.append(status)
                meter.changed.notify_all()

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                  send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        await asyncio.to_thread(release.wait, DEADLINE_S)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(HELD_BODY))]})
        await send({"type": "http.response.body", "body": HELD_BODY})

    # Listening before the server starts, as the platform's sockets are: a client connects at once.
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, http=Metered, log_level="warning", lifespan="off", ws="none",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield _HeldAnswer(port=sock.getsockname()[1], release=release, meter=meter)
    finally:
        release.set()
        server.should_exit = True
        thread.join(DEADLINE_S)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"


@pytest.mark.parametrize("status", [431, 408])
def test_a_head_refused_behind_an_answer_in_flight_is_dropped_and_that_answer_arrives_whole(
        held_answer: _HeldAnswer, monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    """A pipelined request's head refused (too large, or too slow) while the answer before it is held:
    the connection ends after that answer, and what the client sends meanwhile is dropped unread. It was
    fed to httptools, which holds a head without any bound, for as long as the answer took."""
    monkeypatch.setattr(HeadTimeoutProtocol, "max_head_bytes", SMALL_HEAD_BYTES)
    if status == 408:
        monkeypatch.setattr(HeadTimeoutProtocol, "head_timeout", HEAD_S)
    meter = held_answer.meter
    with socket.create_connection(("127.0.0.1", held_answer.port), timeout=DEADLINE_S) as sock:
        start = b"GET /held HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\nX-Big: "
        sock.sendall(start)
        sent = len(start)
        if status == 408:
            meter.wait_for("a 408 for the head behind the held answer", lambda: meter.refused)
        chunk = b"a" * 65536
        while sent < FLOOD_BYTES:
            sock.sendall(chunk)
            sent += len(chunk)
        meter.wait_for(f"the server handling all {sent} bytes sent", lambda: meter.received == sent)
        # the head is fed until it passes the bound, at most one read past it (one read may hold its start)
        assert meter.fed <= SMALL_HEAD_BYTES + 2 * meter.largest_read, (
            f"httptools was fed {meter.fed} of the {sent} bytes sent while the answer was held")
        assert meter.refused == [status]
        held_answer.release.set()
        answer = _until_closed(sock, time.monotonic() + DEADLINE_S)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert body == HELD_BODY, answer[:300]  # whole, and nothing written after it


#: The client's HTTP/2 preface, an empty SETTINGS frame, and the 9-byte head of a 100-byte HEADERS frame
#: whose payload never comes.
HALF_A_FRAME = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
                + b"\x00\x00\x64\x01\x04\x00\x00\x00\x01")


def test_a_grpc_connection_idle_after_its_preface_is_closed_and_real_clients_reconnect(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the handshake grpc has no read timeout: a connection that sent half a frame (no call in
    flight) is closed once idle for GRPC_IDLE_S (shortened here), while a real channel idle as long
    reconnects on its next call."""
    from devbox.platform import grpc_server

    monkeypatch.setattr(grpc_server, "GRPC_IDLE_S", 1.0)
    with running_platform(tmp_path, components=["naming"]) as p:
        host, port = p.target("polaris_grpc").rsplit(":", 1)
        with grpc.insecure_channel(p.target("polaris_grpc")) as channel:
            stub = pb.grpcapi.PolarisGRPCStub(channel)

            def register(n: int) -> int:
                return int(stub.RegisterInstance(pb.service.Instance(
                    service={"value": "idle"}, namespace={"value": "default"}, host={"value": "127.0.0.1"},
                    port={"value": 9000 + n}), timeout=10).code.value)

            assert register(1) == 200000
            with socket.create_connection((host, int(port))) as half:
                half.sendall(HALF_A_FRAME)
                goaway = _until_closed(half, time.monotonic() + DEADLINE_S)
            assert b"connection idle" in goaway, goaway  # GOAWAY's debug data
            assert register(2) == 200000  # the channel, idle as long, still calls
