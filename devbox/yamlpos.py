"""YAML with positions: what lets every devbox file error name its file, line and key.

Used by devbox.yaml (:mod:`devbox.config`), scenario files and alert rule files alike: load with
ruamel's round-trip loader, validate the plain data with pydantic, then map each validation
error's location back to a line of the tree.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from ruamel.yaml.comments import CommentedMap, CommentedSeq


def plain(node: Any) -> Any:
    """The ruamel tree as plain dicts and lists (keys as str), for pydantic."""
    if isinstance(node, dict):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    return node


def line_of(tree: Any, loc: tuple[int | str, ...]) -> tuple[int | None, str]:
    """The 1-based line of the deepest node of ``loc`` found in the ruamel tree, and its dotted key."""
    node, line, parts = tree, None, []
    for key in loc:
        if isinstance(node, CommentedMap) and key in node:
            line = node.lc.key(key)[0] + 1
            node = node[key]
            parts.append(str(key))
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and key < len(node):
            line = node.lc.item(key)[0] + 1
            node = node[key]
            name = node.get("name") if isinstance(node, CommentedMap) else None
            parts.append(f"[{name}]" if name else f"[{key}]")
        else:
            parts.append(str(key))
            if not isinstance(key, str):
                break
    return line, ".".join(parts).replace(".[", "[")


def describe_error(err: dict[str, Any]) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "literal_error":
        return f"{msg.lower()}"
    return msg[len("Value error, ") :] if msg.startswith("Value error, ") else msg


def allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """The keys allowed at the parent of an unknown key, for the error message."""
    current: Any = model
    for key in loc[:-1]:
        if isinstance(key, int):
            continue
        field = getattr(current, "model_fields", {}).get(key)
        if field is None:
            return ""
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        current = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if current is None:
            return ""
    fields = getattr(current, "model_fields", {})
    return f" (allowed: {', '.join(k for k, f in fields.items() if not f.exclude)})" if fields else ""
