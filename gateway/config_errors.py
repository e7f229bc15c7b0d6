"""Turning a config file's tables into typed settings, with errors that name the key.

msgspec says what failed at a path like `$.classes.bulk.max_attempts`; `convert`
rewrites that as `classes.bulk.max_attempts: expected a positive integer, got 0`, the
key as the file writes it and the type as a person reads it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec


class ConfigError(ValueError):
    """A configuration problem, phrased as `key: problem` on one line."""


_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$")


def convert(data: Mapping[str, Any], cls: type[Any], raw: Mapping[str, Any], where: str) -> Any:
    try:
        converted: Any = msgspec.convert(data, cls, strict=True)
        return converted
    except msgspec.ValidationError as e:
        raise ConfigError(_explain(str(e), cls, raw, where)) from None


def _explain(message: str, cls: type[Any], raw: Mapping[str, Any], where: str) -> str:
    m = _AT.match(message)
    what, path = (m.group("what"), m.group("path") or "") if m else (message, "")
    key = (where + path).lstrip(".")
    for pattern, problem in (
        (r"Object contains unknown field `([^`]*)`", "unknown key"),
        (r"Object missing required field `([^`]*)`", "missing"),
    ):
        found = re.match(pattern, what)
        if found:
            return f"{key + '.' if key else ''}{found.group(1)}: {problem}"
    if not path and not what.startswith(("Expected", "Invalid", "Object")):
        return f"{key or 'config'}: {what}"  # a struct's own check (`__post_init__`)
    expected = _describe(_type_at(msgspec.inspect.type_info(cls), path))
    return f"{key or 'config'}: expected {expected}, got {show(_lookup(raw, path))}"


def _type_at(info: msgspec.inspect.Type, path: str) -> msgspec.inspect.Type:
    """The declared type at a msgspec error path like `.classes.bulk.max_attempts`."""
    for name, _ in re.findall(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]", path):
        info = _strip_optional(info)
        if isinstance(info, msgspec.inspect.StructType) and name:
            info = next((f.type for f in info.fields if f.name == name), info)
        elif isinstance(info, msgspec.inspect.DictType):
            info = info.value_type
        elif isinstance(info, msgspec.inspect.ListType | msgspec.inspect.VarTupleType):
            info = info.item_type
    return _strip_optional(info)


def _strip_optional(info: msgspec.inspect.Type) -> msgspec.inspect.Type:
    if isinstance(info, msgspec.inspect.UnionType):
        kinds = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        if len(kinds) == 1:
            return kinds[0]
    return info


def _describe(info: msgspec.inspect.Type) -> str:
    if isinstance(info, msgspec.inspect.FloatType | msgspec.inspect.IntType):
        noun = "number" if isinstance(info, msgspec.inspect.FloatType) else "integer"
        if info.gt == 0 or info.ge == 1:
            return f"a positive {noun}"
        low = f"from {info.ge}" if info.ge is not None else ""
        high = f"below {info.lt}" if info.lt is not None else ""
        high = f"up to {info.le}" if info.le is not None else high
        bounds = " ".join(b for b in (low, high) if b)
        return (
            f"a {noun} {bounds}".rstrip() if bounds else f"a{'n' if noun[0] == 'i' else ''} {noun}"
        )
    if isinstance(info, msgspec.inspect.LiteralType):
        return "one of " + ", ".join(repr(v) for v in info.values)
    if isinstance(info, msgspec.inspect.StrType):
        return "a string"
    if isinstance(info, msgspec.inspect.BoolType):
        return "true or false"
    if isinstance(info, msgspec.inspect.ListType | msgspec.inspect.VarTupleType):
        return f"a list of {_describe(info.item_type).removeprefix('a ').removeprefix('an ')}s"
    if isinstance(info, msgspec.inspect.StructType | msgspec.inspect.DictType):
        return "a table"
    return "a valid value"


def _lookup(raw: Any, path: str) -> Any:
    for part in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        name, index = part
        try:
            raw = raw[int(index)] if index else raw[name]
        except (KeyError, IndexError, TypeError):
            return None
    return raw


def show(value: Any) -> str:
    """A value from the file as an error shows it: strings quoted, tables and lists by kind."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)
