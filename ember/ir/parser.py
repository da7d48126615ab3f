"""Parse the text form printed by printer.py back into a Graph (types re-inferred and checked).

`parse(text, weights=None)`: `blob<...>` consts resolve from `weights` (keyed by content hash or
const name); without it they become `ExternalData` placeholders that print identically but
refuse to be computed with.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import EmberError, ParseError
from .graph import Graph, Op
from .types import DType, TensorType

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r]+)
  | (?P<nl>\n)
  | (?P<comment>\#[^\n]*)
  | (?P<value>%[A-Za-z0-9_]+)
  | (?P<symbol>@[A-Za-z0-9_.]+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>-?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\d+|\.\d+)|-inf)
  | (?P<arrow>->)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[()\[\]{}<>,:=*])
""", re.VERBOSE)


@dataclass(frozen=True)
class ExternalData:
    """A const payload the text elided (only its type and content hash are known)."""

    type: TensorType
    key: str

    def materialize(self) -> np.ndarray:
        raise EmberError(f"const data {self.key} ({self.type}) was elided from the IR text; "
                         "pass weights= to ember.ir.parse or load the graph with ember.ir.load")


class _Tokens:
    def __init__(self, text: str):
        self.toks: list[tuple[str, str, int]] = []
        line = 1
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m:
                raise ParseError(f"line {line}: unexpected character {text[pos]!r}\n  "
                                 f"{text.splitlines()[line - 1] if text.splitlines() else ''}")
            kind = m.lastgroup
            if kind == "nl":
                line += 1
            elif kind != "ws":
                self.toks.append((kind, m.group(), line))  # type: ignore[arg-type]
            pos = m.end()
        self.toks.append(("eof", "", line))
        self.i = 0
        self.lines = text.splitlines()

    def _skip(self) -> int:
        j = self.i
        while self.toks[j][0] == "comment":
            j += 1
        return j

    def peek(self) -> tuple[str, str, int]:
        """The next non-comment token, without consuming anything (comments carry locs)."""
        return self.toks[self._skip()]

    def next(self) -> tuple[str, str, int]:
        self.i = self._skip()
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def error(self, msg: str) -> ParseError:
        _, text, line = self.toks[min(self.i, len(self.toks) - 1)]
        src = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        return ParseError(f"line {line}: {msg} (at {text!r})\n  {src}")

    def expect(self, text: str) -> None:
        if not self.accept(text):
            raise self.error(f"expected {text!r}")

    def accept(self, text: str) -> bool:
        if self.peek()[1] == text:
            self.i = self._skip() + 1
            return True
        return False

    def take_comment(self) -> str | None:
        kind, text, _ = self.toks[self.i]
        if kind == "comment":
            self.i += 1
            return text[1:].strip()
        return None


def parse(text: str, weights: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Parse one graph; the result is verified (types re-inferred) before it is returned."""
    toks = _Tokens(text)
    graph = _Parser(toks, weights or {}).graph({})
    if toks.peek()[0] != "eof":
        raise toks.error("trailing text after the graph")
    from .verify import verify

    verify(graph)
    return graph


class _Parser:
    def __init__(self, toks: _Tokens, weights: Mapping[str, np.ndarray]):
        self.t = toks
        self.weights = weights

    def graph(self, scope: dict[str, Any]) -> Graph:
        t = self.t
        if t.next()[1] != "graph":
            t.i -= 1
            raise t.error("expected 'graph'")
        kind, sym, _ = t.next()
        if kind != "symbol":
            raise t.error("expected @name after 'graph'")
        g = Graph(sym[1:])
        scope = dict(scope)
        t.expect("(")
        while not t.accept(")"):
            kind, name, _ = t.next()
            if kind != "value":
                raise t.error("expected %name for a graph input")
            t.expect(":")
            if name in scope:
                t.i -= 1
                raise t.error(f"duplicate input {name}")
            v = g.add_input(name[1:], self.type())
            scope[name] = v
            t.accept(",")
        t.expect("->")
        t.expect("(")
        declared = []
        while not t.accept(")"):
            declared.append(self.type())
            t.accept(",")
        t.expect("{")
        while True:
            kind, text, _ = t.peek()
            if text == "return":
                t.next()
                outs = []
                while t.peek()[0] == "value":
                    outs.append(self.use(scope))
                    if not t.accept(","):
                        break
                got = [v.type for v in outs]
                if got != declared:
                    raise t.error(f"@{g.name} returns ({', '.join(map(str, got))}) but its "
                                  f"signature says ({', '.join(map(str, declared))})")
                g.set_outputs(*outs)
                t.expect("}")
                return g
            if kind != "value":
                raise t.error("expected an op ('%n = kind(...)') or 'return'")
            self.op(g, scope)

    def use(self, scope: dict[str, Any]):
        kind, name, _ = self.t.next()
        if name not in scope:
            self.t.i -= 1
            raise self.t.error(f"use of undefined value {name}")
        return scope[name]

    def op(self, g: Graph, scope: dict[str, Any]) -> None:
        t = self.t
        names = [t.next()[1]]
        while t.accept(","):
            names.append(t.next()[1])
        for n in names:
            if n in scope:
                raise t.error(f"{n} is defined twice (SSA values are assigned once)")
        t.expect("=")
        kind_tok, kind, _ = t.next()
        if kind_tok != "ident":
            raise t.error("expected an op kind")
        from .ops import get_schema, has_schema

        if not has_schema(kind):
            t.i -= 1
            raise t.error(f"unknown op kind {kind!r}")
        schema = get_schema(kind)
        t.expect("(")
        inputs = []
        while not t.accept(")"):
            inputs.append(self.use(scope))
            t.accept(",")
        attrs: dict[str, Any] = {}
        if t.peek()[1] == "{":
            t.next()
            while not t.accept("}"):
                key = t.next()[1]
                t.expect("=")
                attrs[key] = self.attr()
                t.accept(",")
        t.expect(":")
        types = [self.type()]
        while t.accept(","):
            types.append(self.type())
        regions = []
        loc = t.take_comment()
        if t.peek()[1] == "{":
            t.next()
            loc = t.take_comment() or loc
            while t.peek()[1] == "graph":
                regions.append(self.graph({}))
            t.expect("}")
        try:
            attrs = schema.complete_attrs(attrs)
        except EmberError as e:
            raise t.error(str(e)) from None
        op = Op(kind, inputs, attrs, types, regions, loc)
        g.insert(op)
        if len(names) != len(op.results):
            raise t.error(f"{kind} has {len(op.results)} results but {len(names)} names")
        for n, r in zip(names, op.results):
            scope[n] = r

    def type(self) -> TensorType:
        t = self.t
        kind, name, _ = t.next()
        try:
            dtype = DType.parse(name)
        except EmberError:
            t.i -= 1
            raise t.error("expected a tensor type like f32[batch,64]") from None
        t.expect("[")
        dims: list[int | str] = []
        while not t.accept("]"):
            dims.append(self.dim())
            t.accept(",")
        return TensorType(tuple(dims), dtype)

    def dim(self) -> int | str:
        parts = []
        while True:
            kind, text, _ = self.t.next()
            if kind not in ("number", "ident"):
                raise self.t.error("expected a dim (int or symbol)")
            parts.append(text)
            if not self.t.accept("*"):
                break
        if len(parts) == 1 and parts[0].isdigit():
            return int(parts[0])
        return "*".join(parts)

    def attr(self) -> Any:
        t = self.t
        kind, text, _ = t.next()
        if kind == "string":
            return json.loads(text)
        if kind == "number":
            if text == "-inf":
                return float("-inf")
            return float(text) if any(c in text for c in ".eE") else int(text)
        if text == "[":
            items = []
            while not t.accept("]"):
                items.append(self.attr())
                t.accept(",")
            return tuple(items)
        if kind == "ident":
            simple = {"true": True, "false": False, "none": None, "inf": float("inf"),
                      "nan": float("nan")}
            if text in simple:
                return simple[text]
            if text in ("dense", "blob"):
                return self.array(text)
            try:
                return DType.parse(text)
            except EmberError:
                t.i -= 1
                raise t.error(f"unknown attribute value {text!r}") from None
        t.i -= 1
        raise t.error("expected an attribute value")

    def array(self, how: str):
        t = self.t
        t.expect("<")
        ty = self.type()
        if how == "blob":
            kind, text, _ = t.next()
            key = json.loads(text)
            t.expect(">")
            if key in self.weights:
                arr = np.asarray(self.weights[key])
                if TensorType.of(arr) != ty:
                    raise t.error(f"weight {key} is {TensorType.of(arr)}, text says {ty}")
                arr.flags.writeable = False
                return arr
            return ExternalData(ty, key)
        t.expect(":")
        t.expect("[")
        vals: list[Any] = []
        while not t.accept("]"):
            vals.append(self.attr())
            t.accept(",")
        t.expect(">")
        arr = np.array(vals, dtype=ty.dtype.to_numpy())
        if not ty.is_static or arr.size != ty.numel():
            raise t.error(f"dense<{ty}> holds {arr.size} values")
        arr = arr.reshape(ty.shape)
        arr.flags.writeable = False
        return arr
