"""Traffic: calls into an entry service, resolved through naming, with routing labels as baggage.

Each call carries a fresh W3C ``traceparent`` (so its trace can be found afterwards), the labels
as ``baggage`` (what the SDK propagates for routing along the call chain) and
``x-devbox-caller: scenario``. The generator runs on its own asyncio loop in a thread, so the
platform loop is never blocked and background traffic can run while other steps act.

LIMITATIONS: gRPC traffic sends an empty request message (valid for every proto3 message type)
and reads only the status; HTTP/1.1 only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from devbox.scenario.model import TrafficStep

LOG = logging.getLogger(__name__)

CALLER = "scenario"


@dataclass
class Target:
    """Where one call goes, as naming chose it."""

    instance_id: str
    host: str
    port: int
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class CallResult:
    index: int
    trace_id: str
    started: float
    latency_ms: float
    ok: bool
    status: int | str
    instance: str | None = None
    error: str = ""


@dataclass
class TrafficRun:
    """One traffic step's calls, filled in while it runs."""

    step: TrafficStep
    results: list[CallResult] = field(default_factory=list)
    started: float = 0.0
    ended: float | None = None
    thread: threading.Thread | None = None
    error: str | None = None
    #: Set to stop starting new calls (the scenario ended before a background traffic did).
    cancelled: threading.Event = field(default_factory=threading.Event)
    #: Its spans stopped arriving after it ended (checked once: later assertions on it need not wait again).
    settled: bool = False

    @property
    def done(self) -> bool:
        return self.ended is not None

    def wait(self, timeout: float | None = None) -> bool:
        if self.thread is not None:
            self.thread.join(timeout)
        return self.done

    @property
    def trace_ids(self) -> list[str]:
        return [r.trace_id for r in self.results]

    def errors(self) -> list[CallResult]:
        return [r for r in self.results if not r.ok]

    def summary(self) -> str:
        total = len(self.results)
        bad = self.errors()
        statuses: dict[str, int] = {}
        for r in bad:
            statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
        text = f"{total} calls, {len(bad)} failed"
        if statuses:
            text += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())) + ")"
        if bad and bad[0].error and not bad[0].error.startswith("status "):
            text += f"; first error: {bad[0].error[:200]}"
        return text


def _traceparent() -> tuple[str, str]:
    trace_id = os.urandom(16).hex()
    return trace_id, f"00-{trace_id}-{os.urandom(8).hex()}-01"


def _baggage(labels: dict[str, str]) -> str:
    # only routing labels: baggage travels down the whole call chain, so a ``caller`` entry here
    # would name the scenario as the caller of every hop
    return ",".join(f"{k}={v}" for k, v in labels.items())


class TrafficGenerator:
    """Runs a :class:`TrafficStep` with ``resolve(labels) -> Target`` choosing each call's instance."""

    def __init__(self, step: TrafficStep, resolve: Callable[[dict[str, str]], Target]) -> None:
        self.step = step
        self.resolve = resolve
        self.run = TrafficRun(step=step)

    def start(self) -> TrafficRun:
        self.run.started = time.time()
        self.run.thread = threading.Thread(target=self._main, name=f"traffic-{self.step.name}", daemon=True)
        self.run.thread.start()
        return self.run

    def _main(self) -> None:
        try:
            asyncio.run(self._drive())
        except Exception as exc:  # reported on the run, shown by the step
            LOG.exception("traffic %s failed", self.step.name)
            self.run.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.run.ended = time.time()

    async def _drive(self) -> None:
        step = self.step
        limits = httpx.Limits(max_connections=step.concurrency * 2, max_keepalive_connections=step.concurrency)
        async with httpx.AsyncClient(timeout=step.timeout, limits=limits) as client:
            sem = asyncio.Semaphore(step.concurrency)
            tasks: list[asyncio.Task[None]] = []
            if step.count is not None:
                for i in range(step.count):
                    await sem.acquire()
                    if self.run.cancelled.is_set():
                        sem.release()
                        break
                    tasks.append(asyncio.create_task(self._one(client, i, sem)))
            else:
                assert step.rate is not None and step.duration is not None
                total = int(step.rate * step.duration)
                t0 = time.monotonic()
                for i in range(total):
                    delay = t0 + i / step.rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    if self.run.cancelled.is_set():
                        break
                    await sem.acquire()
                    tasks.append(asyncio.create_task(self._one(client, i, sem)))
            if tasks:
                await asyncio.gather(*tasks)

    async def _one(self, client: httpx.AsyncClient, index: int, sem: asyncio.Semaphore) -> None:
        step = self.step
        trace_id, traceparent = _traceparent()
        started = time.time()
        t0 = time.perf_counter()
        instance = None
        try:
            target = self.resolve(dict(step.labels))
            instance = target.instance_id
            if step.protocol == "grpc":
                status, ok = await self._grpc(target, traceparent)
            else:
                status, ok = await self._http(client, target, traceparent)
            error = "" if ok else f"status {status}"
        except Exception as exc:
            status, ok, error = type(exc).__name__, False, str(exc) or type(exc).__name__
        finally:
            sem.release()
        latency = (time.perf_counter() - t0) * 1000
        self.run.results.append(
            CallResult(index, trace_id, started, latency, ok, status, instance=instance, error=error)
        )

    def _headers(self, traceparent: str) -> dict[str, str]:
        return {
            **self.step.headers,
            "traceparent": traceparent,
            **({"baggage": _baggage(self.step.labels)} if self.step.labels else {}),
            "x-devbox-caller": CALLER,
        }

    async def _http(self, client: httpx.AsyncClient, target: Target, traceparent: str) -> tuple[int, bool]:
        step = self.step
        url = f"http://{target.host}:{target.port}{step.path}"
        kwargs: dict[str, Any] = {"headers": self._headers(traceparent)}
        if step.body is not None:
            kwargs["json"] = step.body
        response = await client.request(step.method, url, **kwargs)
        return response.status_code, response.status_code in step.ok_status

    async def _grpc(self, target: Target, traceparent: str) -> tuple[str, bool]:
        import grpc
        import grpc.aio

        step = self.step
        metadata = tuple(self._headers(traceparent).items())
        async with grpc.aio.insecure_channel(f"{target.host}:{target.port}") as channel:
            call = channel.unary_unary(step.method, request_serializer=None, response_deserializer=None)
            try:
                await call(b"", metadata=metadata, timeout=step.timeout)
            except grpc.aio.AioRpcError as exc:
                return exc.code().name, False
        return "OK", True
