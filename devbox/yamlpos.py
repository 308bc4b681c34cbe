"""YAML with positions: what lets every devbox file error name its file, line and key.

Used by devbox.yaml (:mod:`devbox.config`), scenario files and alert rule files alike: PyYAML
composes the text into nodes (the C parser when libyaml is present), each carrying its line; they
become :class:`YamlMap`/:class:`YamlSeq` (plain dicts and lists that remember the line of each key
and item), pydantic validates the plain data, and :func:`line_of` maps a validation error's
location back to a line.

libyaml (PyYAML's C loader, in every PyYAML wheel) is used when present: unlike PyYAML's pure
Python scanner it reads a ``?`` inside a plain scalar in a flow mapping
(``{path: /checkout?sku=1}``), which the shop's scenario files use.

Scalars follow YAML 1.2's core schema for booleans (only ``true``/``false``: ``on``, ``no`` or
``yes`` stay strings, as devbox always read them); a key given twice in one mapping is an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]  # CSafeLoader or SafeLoader, same interface
    """PyYAML's safe loader with YAML 1.2 booleans."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class YamlError(Exception):
    """Text that is not valid YAML. ``line`` is 1-based (None when unknown); ``problem`` says what."""

    def __init__(self, problem: str, line: int | None) -> None:
        super().__init__(f"{line}: {problem}" if line else problem)
        self.problem = problem
        self.line = line

    def where(self, source: str) -> str:
        """``source:line: not valid YAML: problem``."""
        at = f"{source}:{self.line}" if self.line else source
        return f"{at}: not valid YAML: {self.problem}"


class YamlMap(dict[Any, Any]):
    """A mapping read from YAML: a plain dict that knows its own line and each key's (1-based)."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}


class YamlSeq(list[Any]):
    """A sequence read from YAML: a plain list that knows its own line and each item's (1-based)."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []


def load(text: str) -> Any:
    """The first document of ``text`` as YamlMap/YamlSeq/scalars (None for an empty document)."""
    docs = load_all(text)
    return docs[0] if docs else None


def load_all(text: str) -> list[Any]:
    """Every document of ``text`` (``---`` separated), each as :func:`load` returns it."""
    loader = _Loader(text)
    try:
        docs = []
        while loader.check_node():
            docs.append(_tree(loader, loader.get_node()))
        return docs
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise YamlError(str(exc.problem or exc.context), mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:  # e.g. a character YAML does not allow, without a mark
        raise YamlError(str(exc), None) from None
    finally:
        loader.dispose()


def dump(data: Any) -> str:
    """``data`` as block-style YAML, keys in the order given (for files people read)."""
    return yaml.safe_dump(plain(data), default_flow_style=False, sort_keys=False, allow_unicode=True)


def _tree(loader: Any, node: Node) -> Any:
    if isinstance(node, MappingNode):
        loader.flatten_mapping(node)  # merge keys (<<: *anchor)
        mapping = YamlMap(node.start_mark.line + 1)
        for key_node, value_node in node.value:
            key = _tree(loader, key_node)
            if isinstance(key, list | dict):
                raise yaml.MarkedYAMLError(problem="a mapping key must be a scalar", problem_mark=key_node.start_mark)
            if key in mapping:
                raise yaml.MarkedYAMLError(
                    context=f"while reading the mapping at line {mapping.line}",
                    problem=f"key {key!r} is given twice (first at line {mapping.key_lines[key]})",
                    problem_mark=key_node.start_mark,
                )
            mapping[key] = _tree(loader, value_node)
            mapping.key_lines[key] = key_node.start_mark.line + 1
        return mapping
    if isinstance(node, SequenceNode):
        seq = YamlSeq(node.start_mark.line + 1)
        for item in node.value:
            seq.append(_tree(loader, item))
            seq.item_lines.append(item.start_mark.line + 1)
        return seq
    assert isinstance(node, ScalarNode)
    return loader.construct_object(node, deep=True)


def plain(node: Any) -> Any:
    """The tree as plain dicts and lists (keys as str), for pydantic."""
    if isinstance(node, dict):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    return node


def key_line(node: Any, key: Any) -> int | None:
    """The 1-based line of ``key`` in a mapping read from YAML (None when unknown)."""
    return node.key_lines.get(key) if isinstance(node, YamlMap) else None


def item_line(node: Any, index: int) -> int | None:
    """The 1-based line of item ``index`` of a sequence read from YAML (None when unknown)."""
    if isinstance(node, YamlSeq) and 0 <= index < len(node.item_lines):
        return node.item_lines[index]
    return None


def line_of(tree: Any, loc: tuple[int | str, ...]) -> tuple[int | None, str]:
    """The 1-based line of the deepest node of ``loc`` found in the tree, and its dotted key."""
    node, line, parts = tree, None, []
    for key in loc:
        if isinstance(node, YamlMap) and key in node:
            line = node.key_lines[key]
            node = node[key]
            parts.append(str(key))
        elif isinstance(node, YamlSeq) and isinstance(key, int) and key < len(node):
            line = node.item_lines[key]
            node = node[key]
            name = node.get("name") if isinstance(node, YamlMap) else None
            parts.append(f"[{name}]" if name else f"[{key}]")
        else:
            parts.append(str(key))
            if not isinstance(key, str):
                break
    return line, ".".join(parts).replace(".[", "[")


#: pydantic's wording of a wrong value -> what the user wrote was and what is expected.
_EXPECTED = {
    "int_parsing": "a whole number", "int_type": "a whole number", "int_from_float": "a whole number",
    "float_parsing": "a number", "float_type": "a number", "bool_parsing": "true or false",
    "bool_type": "true or false", "string_type": "text", "dict_type": "a mapping of keys", "list_type": "a list",
}
_BOUNDS = {"greater_than": "more than {gt}", "greater_than_equal": "at least {ge}", "less_than": "less than {lt}",
           "less_than_equal": "at most {le}"}


def describe_error(err: Mapping[str, Any]) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "literal_error":
        return f"{msg.lower()}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, not {err.get('input')!r}"
    if kind in _BOUNDS:
        return f"{err.get('input')!r} is out of range: it must be {_BOUNDS[kind].format(**err.get('ctx', {}))}"
    return str(msg[len("Value error, ") :] if msg.startswith("Value error, ") else msg)


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
    if not fields:
        return ""
    # the key as written in the file: a field's alias (`register`), not its Python name (`registration`)
    keys = [f.alias or k for k, f in fields.items() if not f.exclude]
    import difflib  # with the first unknown key

    close = difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.75) if loc else []
    return (f"; did you mean {close[0]}?" if close else "") + f" (allowed: {', '.join(keys)})"
