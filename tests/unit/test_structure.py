"""The shape of the code, checked from its imports (read with ast, nothing is imported):

- no two modules import each other, directly or round a longer circle (import time: imports
  under ``if TYPE_CHECKING:`` and inside functions are not followed);
- the platform layer (``devbox/platform``) imports no mock;
- nothing imports the top-level ``mocks`` package (it installs as ``devbox.mocks``);
- every error renderer a listener names can be imported.
"""

from __future__ import annotations

import ast
import functools
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Where each package's source lives (``mocks/`` installs as ``devbox.mocks``).
ROOTS = {"devbox": REPO / "devbox", "devbox.mocks": REPO / "mocks"}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, root in ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")) or "static" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported (including under try/if, not TYPE_CHECKING)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node):
                yield from _top_level_imports(node.body)
            yield from _top_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                yield from _top_level_imports(block)


def _all_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The modules an import statement reaches (absolute names)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    base = node.module or ""
    if node.level:
        is_package = MODULES.get(module, Path()).name == "__init__.py"
        anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
        base = ".".join([*anchor, base] if base else anchor)
    # ``from pkg import submodule`` depends on the submodule; ``from pkg import name`` on pkg.
    # (A parent package is always imported before its submodules; that edge is Python's, not a circle.)
    for alias in node.names:
        yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base


@functools.cache
def _tree(path: Path) -> ast.Module:
    """The parsed module; each file is parsed once for all the tests here (~400 files: seconds on a busy runner)."""
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _graph(imports: str = "top") -> dict[str, set[str]]:
    """module -> the devbox modules it imports (``top``: at import time; ``all``: anywhere)."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = _tree(path)
        nodes = _top_level_imports(tree.body) if imports == "top" else _all_imports(tree)
        graph[module] = {t for node in nodes for t in _targets(module, node) if t in MODULES and t != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as one circle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_circle(graph, set(group)) for group in groups]


def _circle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest circle from the group's first module back to itself, for the message."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    return sorted(group)


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph("top"))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_platform_layer_imports_no_mock() -> None:
    graph = _graph("all")
    bad = {
        module: sorted(t for t in targets if t.startswith("devbox.mocks"))
        for module, targets in graph.items()
        if module.startswith("devbox.platform")
    }
    assert not {m: t for m, t in bad.items() if t}, bad


def test_platform_layer_reads_no_config_at_import() -> None:
    graph = _graph("top")
    bad = {m: sorted(t for t in ts if t in ("devbox.config", "devbox.assembly"))
           for m, ts in graph.items() if m.startswith("devbox.platform")}
    assert not {m: t for m, t in bad.items() if t}, bad


def test_nothing_imports_top_level_mocks() -> None:
    offenders = []
    for module, path in MODULES.items():
        for node in _all_imports(_tree(path)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if node.__class__ is ast.Import or not node.level:
                offenders += [f"{module}: {n}" for n in names if n == "mocks" or n.startswith("mocks.")]
    assert not offenders, offenders


def test_import_walk_sees_the_layout() -> None:
    """Guards the walk itself: it must see the mocks and follow relative and absolute imports."""
    graph = _graph("top")
    assert "devbox.mocks.naming.component" in graph
    assert "devbox.platform.component" in graph["devbox.mocks.naming"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


@pytest.mark.parametrize(
    "listener",
    [listener for listener in importlib.import_module("devbox.assembly").LISTENERS if listener.errors],
    ids=lambda listener: listener.name,
)
def test_every_error_renderer_imports(listener: object) -> None:
    from devbox.platform.edge import resolve

    resolve(listener.errors)  # type: ignore[attr-defined]


def test_listener_edge_renders_api_errors() -> None:
    """An ApiError raised by a handler leaves as devbox's JSON (or the listener's renderer), once."""
    import asyncio

    import httpx
    from fastapi import APIRouter, FastAPI

    from devbox.platform.component import Listener
    from devbox.platform.edge import api_error_handler
    from devbox.platform.errors import ApiError, Busy, NotFound

    router = APIRouter()

    @router.get("/missing")
    async def missing() -> None:
        raise NotFound("no service 'x'; known: a, b")

    @router.get("/busy")
    async def busy() -> None:
        raise Busy("queue full", retry_after=2.5)

    plain, shaped = FastAPI(), FastAPI()
    plain.add_exception_handler(ApiError, api_error_handler(Listener("x", 1)))
    shaped.add_exception_handler(ApiError, api_error_handler(Listener("y", 1, errors=f"{__name__}:_polaris_shape")))
    for app in (plain, shaped):
        app.include_router(router)

    async def get(app: FastAPI, path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.get(path)

    r = asyncio.run(get(plain, "/missing"))
    assert (r.status_code, r.json()) == (404, {"error": "not_found", "reason": "no service 'x'; known: a, b"})
    r = asyncio.run(get(plain, "/busy"))
    assert (r.status_code, r.headers["retry-after"]) == (503, "3")
    r = asyncio.run(get(shaped, "/missing"))
    assert (r.status_code, r.json()) == (404, {"code": 400404, "info": "no service 'x'; known: a, b"})


def _polaris_shape(exc: Any) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse({"code": 400404, "info": exc.reason}, status_code=exc.status)
