"""What a load run needs from the running platform, over its HTTP APIs only.

- deploy (``/api/deploy/services``): the target service's stable entry port (``front_port``), which
  forwards each request to a healthy instance by weight — so every replica gets load and a reload
  or release during a run loses nothing; and each instance's pid, for CPU seconds (psutil);
- naming (``/api/naming/instances``): for a service without an entry port (one that registers
  itself from outside devbox, ``register: self``), one healthy instance's address, resolved at
  start and between ramp steps — such a run loads that one instance only;
- tracing, through the Zipkin v2 query API (``/api/v2/traces`` on the ``zipkin`` listener): the
  run's traces, read in time slices so no slice hits the 1000-trace limit;
- metrics, through the Prometheus API (``/api/v1/query`` on the ``prometheus`` listener): the
  span-derived ``rpc_server_requests_total`` counters;
- ``/api/platform``: the listeners' addresses and the tracing component's accepted-span count.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import psutil

from devbox.load.locust import LoadError
from devbox.mocks.tracing import convert
from devbox.mocks.tracing.models import Span

LOG = logging.getLogger(__name__)

#: Prometheus-API query for the callee-side call counters, health probes left out.
COUNTERS_QUERY = ('sum by (callee, method) (rpc_server_requests_total{method!~"GET /healthz|'
                  'grpc.health.v1.Health/Check|/grpc.health.v1.Health/Check"})')
ZIPKIN_LIMIT = 1000


#: ``Target.via`` of a run aimed at the service's stable entry port / at one instance from naming.
VIA_ENTRY, VIA_NAMING = "entry", "naming"


@dataclass(frozen=True)
class Target:
    """The address a run sends its load to: the service's entry port, or one naming instance."""

    service: str
    host: str
    port: int
    #: the naming instance behind the address (``<service>:entry`` for the entry port)
    instance: str
    via: str = VIA_NAMING

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class PlatformClient:
    """The platform's HTTP APIs as a load run uses them. Errors are :class:`LoadError`."""

    def __init__(self, api_base: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        self.base = api_base.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(timeout=timeout, headers=headers)
        self._info: dict[str, Any] | None = None

    def close(self) -> None:
        self.http.close()

    def _get(self, url: str, **params: Any) -> Any:
        try:
            response = self.http.get(url, params=params or None)
        except httpx.TransportError as exc:
            raise LoadError(f"devbox is not reachable at {url} ({exc.__class__.__name__}); start it with "
                            "`devbox up`") from None
        if response.status_code == 404:
            raise KeyError(url)
        if response.status_code >= 400:
            raise LoadError(f"GET {url}: {response.status_code}: {response.text[:300]}")
        return response.json()

    # --- platform ---------------------------------------------------------------------------

    def info(self, *, fresh: bool = False) -> dict[str, Any]:
        if self._info is None or fresh:
            self._info = self._get(self.base + "/api/platform")
        return self._info

    def listener_url(self, name: str) -> str:
        listener = self.info().get("listeners", {}).get(name)
        if not listener:
            raise LoadError(f"the platform has no {name!r} listener (is that component enabled?)")
        host = listener["host"] if listener["host"] not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{listener['port']}"

    def spans_accepted(self) -> int:
        tracing = self.info(fresh=True).get("components", {}).get("tracing", {})
        return int(tracing.get("spans_accepted", 0)) + int(tracing.get("spans_rejected", 0))

    # --- naming -----------------------------------------------------------------------------

    def services(self) -> list[str]:
        return sorted({s["name"] for s in self._get(self.base + "/api/naming/services")})

    def resolve(self, service: str) -> Target:
        """Where ``service``'s load goes: its stable entry port when deploy opened one (it balances
        every request over the healthy instances by weight and survives reloads), else a healthy,
        not isolated instance from naming. LoadError naming the known services when it is unknown,
        or when naming has it but no instance is healthy."""
        instances = self._get(self.base + "/api/naming/instances", service=service)
        live = [i for i in instances if i.get("healthy") and not i.get("isolated")]
        entry = self.entry(service)
        if entry is None and not instances:
            known = ", ".join(self.services()) or "(none)"
            raise LoadError(f"unknown target service {service!r}: naming has {known}")
        if not live:
            raise LoadError(f"service {service!r} has {len(instances)} instance(s) but none healthy")
        if entry is not None:
            return Target(service, entry[0], entry[1], f"{service}:entry", VIA_ENTRY)
        LOG.warning("service %s has no entry port (not deployed by devbox?): its load goes to one instance", service)
        live.sort(key=lambda i: (-int(i.get("weight", 100)), i["host"], i["port"]))
        chosen = live[0]
        return Target(service, _local(chosen["host"]), int(chosen["port"]), chosen["id"])

    def entry(self, service: str) -> tuple[str, int] | None:
        """The stable entry address of ``service`` (its default group's ``front_port``), or None
        without the deploy component, without an entry for it (faults not hosted) or for a
        service deploy does not run."""
        try:
            data = self._get(self.base + "/api/deploy/services")
        except KeyError:
            return None
        for dep in data.get("services", []):
            if dep.get("service") == service and dep.get("front_port"):
                url = str(dep.get("url") or "")
                host = url.split("://", 1)[-1].rsplit(":", 1)[0] if url else "127.0.0.1"
                return _local(host), int(dep["front_port"])
        return None

    # --- deploy and CPU -----------------------------------------------------------------------

    def pids(self) -> dict[str, list[int]]:
        """Per service, the pids of its running instances ({} without the deploy component)."""
        try:
            data = self._get(self.base + "/api/deploy/services")
        except KeyError:
            return {}
        out: dict[str, list[int]] = {}
        for dep in data.get("services", []):
            pids = [int(i["pid"]) for i in dep.get("instances", []) if i.get("pid")]
            out.setdefault(dep["service"], []).extend(pids)
        return out

    # --- metrics ------------------------------------------------------------------------------

    def counters(self) -> dict[tuple[str, str], float]:
        """``rpc_server_requests_total`` now, by (callee, method)."""
        url = self.listener_url("prometheus") + "/api/v1/query"
        data = self._get(url, query=COUNTERS_QUERY)
        out: dict[tuple[str, str], float] = {}
        for row in data.get("data", {}).get("result", []):
            metric = row.get("metric", {})
            out[(metric.get("callee", ""), metric.get("method", ""))] = float(row["value"][1])
        return out

    # --- traces -------------------------------------------------------------------------------

    def traces(self, service: str, start_us: int, end_us: int, *, max_traces: int = 20_000) -> list[list[Span]]:
        """Traces with a span of ``service`` whose root started in [start_us, end_us]."""
        url = self.listener_url("zipkin") + "/api/v2/traces"
        found: dict[str, list[Span]] = {}
        pending = [(start_us, end_us)]
        while pending and len(found) < max_traces:
            lo, hi = pending.pop()
            raw = self._get(url, serviceName=service, endTs=hi // 1000 + 1, lookback=max(1, (hi - lo) // 1000 + 1),
                            limit=ZIPKIN_LIMIT)
            if len(raw) >= ZIPKIN_LIMIT and hi - lo > 200_000:
                mid = (lo + hi) // 2
                pending += [(lo, mid), (mid + 1, hi)]
                continue
            for trace in raw:
                spans = to_spans(trace)
                if spans:
                    found.setdefault(spans[0].trace_id, spans)
        out = []
        for spans in found.values():
            root_start = min(s.start_us for s in spans if not s.parent_id) if any(
                not s.parent_id for s in spans) else min(s.start_us for s in spans)
            if start_us <= root_start <= end_us:
                out.append(spans)
        return out

    # --- waiting for ingest -------------------------------------------------------------------

    def settle(self, *, quiet_s: float = 2.5, timeout: float = 30.0) -> bool:
        """Wait until the span-derived call counters (health probes left out) stopped moving: the
        SDK flushes every 0.5 s and metrics wait up to 2 s for a span's peer. Without metrics, wait
        for the tracing component's accepted-span count instead (probes keep that one moving, so
        it may run to the deadline). False when the deadline came first."""
        deadline = time.monotonic() + timeout
        try:
            self.counters()
        except LoadError:
            return _until_quiet(self.spans_accepted, quiet_s, deadline)
        return _until_quiet(lambda: sum(self.counters().values()), quiet_s, deadline)


def _local(host: str) -> str:
    """A wildcard bind address as the address to connect to."""
    return host if host not in ("0.0.0.0", "::", "") else "127.0.0.1"


def _until_quiet(read: Any, quiet_s: float, deadline: float) -> bool:
    last = read()
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return True
    return False


def to_spans(zipkin_trace: Sequence[dict[str, Any]]) -> list[Span]:
    """A Zipkin v2 trace (list of spans) as devbox spans; bad spans are skipped."""
    decoded = convert.from_zipkin_json(json.dumps(list(zipkin_trace)).encode(), now_us=time.time_ns() // 1000,
                                       max_future_us=10**15)
    return decoded.spans


class CpuMeter:
    """CPU seconds (user + system, children included) of instance processes, by service."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def sample(self, pids: dict[str, list[int]]) -> dict[str, float]:
        out: dict[str, float] = {}
        for svc, plist in pids.items():
            total = 0.0
            for pid in plist:
                total += self._cpu(pid)
            out[svc] = total
        return out

    def _cpu(self, pid: int) -> float:
        try:
            proc = self._procs.get(pid) or psutil.Process(pid)
            self._procs[pid] = proc
            times = proc.cpu_times()
            total = times.user + times.system
            for child in proc.children(recursive=True):
                try:
                    ct = child.cpu_times()
                    total += ct.user + ct.system
                except psutil.Error:
                    continue
            return total
        except psutil.Error:
            return 0.0


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: max(0.0, v - before.get(k, 0.0)) for k, v in after.items()}


def counter_delta(after: dict[tuple[str, str], float], before: dict[tuple[str, str], float]
                  ) -> dict[tuple[str, str], float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def by_service(counts: Iterable[tuple[tuple[str, str], float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for (svc, _), v in counts:
        out[svc] = out.get(svc, 0.0) + v
    return out
