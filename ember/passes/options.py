"""Pass options in pipeline strings: `name{key=value,...}` converted by the dataclass field types.

Supported field types: int, float, bool, str, Literal[...], `X | None`, and tuples/lists of those
written `a|b` or `[a,b]`. Values print back in the same syntax, so `str(Pipeline.parse(s))`
parses to the same pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from typing import Any, Literal

from ..errors import PipelineSpecError

__all__ = ["convert_option", "describe_options", "format_option", "split_top_level",
           "type_name"]

def split_top_level(text: str, sep: str) -> list[str]:
    """Split at `sep` outside {...}, [...] and "..."; empty input gives []."""
    parts, depth, quoted, start = [], 0, False, 0
    for k, ch in enumerate(text):
        if ch == '"' and (k == 0 or text[k - 1] != "\\"):
            quoted = not quoted
        elif quoted:
            continue
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth < 0:
                raise PipelineSpecError(f"unbalanced {ch!r} in {text!r}")
        elif ch == sep and depth == 0:
            parts.append(text[start:k])
            start = k + 1
    if depth or quoted:
        raise PipelineSpecError(f"unclosed bracket or quote in {text!r}")
    parts.append(text[start:])
    if len(parts) == 1 and not parts[0].strip():
        return []
    for p in parts:
        if not p.strip():
            raise PipelineSpecError(f"empty item in {text!r} (stray {sep!r}?)")
    return parts


def convert_option(text: str, tp: Any, where: str) -> Any:
    """Convert an option string to the field type `tp`, or raise PipelineSpecError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    text = text.strip()

    def bad() -> PipelineSpecError:
        return PipelineSpecError(f"{where}: {text!r} is not a valid {type_name(tp)}")

    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.lower() in ("none", "null"):
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert_option(text, arg, where)
            except PipelineSpecError:
                pass
        raise bad()
    if origin is Literal:
        for choice in args:
            if str(choice).lower() == text.lower() or format_option(choice) == text:
                return choice
        raise bad()
    if origin in (tuple, list):
        items = split_top_level(text[1:-1], ",") if text.startswith("[") and text.endswith("]") \
            else ([] if not text else text.split("|"))
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise bad()
            return tuple(convert_option(x, a, where) for x, a in zip(items, args))
        elem = args[0] if args else str
        values = [convert_option(x, elem, where) for x in items]
        return tuple(values) if origin is tuple else values
    if tp is Any or tp is str:
        return json.loads(text) if len(text) >= 2 and text[0] == text[-1] == '"' else text
    try:
        if tp is bool:
            return {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False,
                    "no": False, "off": False}[text.lower()]
        if tp is int:
            return int(text, 0) if text.lower().startswith(("0x", "0b", "0o")) else int(text)
        if tp is float:
            return float(text)
    except (KeyError, ValueError):
        raise bad() from None
    raise PipelineSpecError(f"{where}: options of type {type_name(tp)} cannot be given in a "
                            "pipeline string (supported: int, float, bool, str, Literal, tuples)")


def type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + "|".join(format_option(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("none" if a is type(None) else type_name(a) for a in args)
    if origin in (tuple, list):
        elem = type_name(args[0]) if args else "str"
        return f"list of {elem} (a|b or [a,b])"
    return getattr(tp, "__name__", str(tp))


def format_option(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(format_option(v) for v in value) + "]"
    if isinstance(value, str) and not re.fullmatch(r"[\w.:+\-/*@^~]+", value):
        return json.dumps(value)
    return str(value)


def describe_options(cls: type) -> str:
    """`its options are: name: type = default; ...` for error messages."""
    if not dataclasses.is_dataclass(cls):
        return "it takes no options"
    hints = typing.get_type_hints(cls)
    opts = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        opts.append(f"{f.name}: {type_name(hints[f.name])} = {format_option(default)}")
    return f"its options are: {'; '.join(opts)}" if opts else "it takes no options"


def options_equal(a: Any, b: Any) -> bool:
    """Option value equality where a list and a tuple of the same items count as equal."""
    try:
        return bool(a == b) and type(a) is type(b) or (
            isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and list(a) == list(b))
    except Exception:
        return False
