"""Constrained output for the embedded engine: compact-JSON grammars, with a size bound.

llama.cpp (xllamacpp's build) compiles JSON schemas with llguidance. Two of its defaults
hurt a small model and a shared engine:

* whitespace is free between JSON tokens, so a model can spend its ``max_tokens`` on
  newlines and indentation and never close the object (``finish_reason: length`` on a
  two-field answer). llguidance's ``x-guidance`` options ask for compact JSON
  (``{"a":1,"b":2}``), which is also what a JSON reader wants;
* the grammar is checked against the vocabulary on every decoded token, inside the engine's
  single decoding loop: a schema with thousands of enum values makes *every* request on the
  engine wait (5,000 values: 30 s for the next "Say hi."). Schemas are therefore measured
  before they reach the engine and refused with a 400 past a bound.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import BadRequestError

# Measured on SmolLM2 (2 threads): a 250-value enum adds ~0.5 s to its own request, 500 adds
# ~3 s and 2,000 adds ~6 s, during which the other slots decode nothing.
MAX_ENUM_VALUES = 256
# The serialised schema (tool parameters included): enough for any realistic tool set.
MAX_SCHEMA_BYTES = 32 * 1024
# A raw grammar passed through `extra` is bounded the same way.
MAX_GRAMMAR_BYTES = MAX_SCHEMA_BYTES

# No optional whitespace: the model cannot waste tokens on layout.
_COMPACT = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}


def compact_json_grammar(schema: dict[str, Any] | None, *, param: str) -> str:
    """The llguidance grammar for JSON matching ``schema`` (any object when None), compact.

    Raises a 400 naming the limit when the schema is too large for the shared engine.
    """
    schema = dict(schema) if schema else {"type": "object"}
    check_schema_size(schema, param=param)
    schema["x-guidance"] = _COMPACT
    return "%llguidance {}\nstart: %json " + json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


def check_schema_size(schema: Any, *, param: str) -> None:
    values = _enum_values(schema)
    if values > MAX_ENUM_VALUES:
        raise BadRequestError(
            f"{param}: the JSON schema lists {values} enum/const values; the embedded model accepts at most "
            f"{MAX_ENUM_VALUES} (each one is checked on every decoded token, for every request on the engine)",
            provider="local", param=param, code="schema_too_large",
            hint=f"keep enums under {MAX_ENUM_VALUES} values, or ask for a string and check it yourself",
        )
    size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_SCHEMA_BYTES:
        raise BadRequestError(
            f"{param}: the JSON schema is {size} bytes; the embedded model accepts at most {MAX_SCHEMA_BYTES} "
            "(a large grammar stalls every request on the shared engine)",
            provider="local", param=param, code="schema_too_large",
            hint="shorten the schema, or validate a plain string answer yourself",
        )


def check_grammar_size(grammar: Any) -> None:
    if isinstance(grammar, str) and len(grammar.encode()) > MAX_GRAMMAR_BYTES:
        raise BadRequestError(
            f"grammar: {len(grammar.encode())} bytes; the embedded model accepts at most {MAX_GRAMMAR_BYTES}",
            provider="local", param="grammar", code="grammar_too_large", hint="shorten the grammar",
        )


def _enum_values(node: Any) -> int:
    """Enum and const values anywhere in the schema (nested schemas and $defs included)."""
    if isinstance(node, list):
        return sum(_enum_values(item) for item in node)
    if not isinstance(node, dict):
        return 0
    total = 0
    for key, value in node.items():
        if key == "enum" and isinstance(value, list):
            total += len(value)
        elif key == "const":
            total += 1
        elif key != "default" and key != "examples":
            total += _enum_values(value)
    return total


def excluding_repeats(schema: dict[str, Any], earlier: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``schema`` (a tool's arguments) narrowed so that no ``earlier`` arguments match it again,
    or None when the grammar cannot tell a new call from a repeat (then the tool is not offered).

    llguidance's JSON schemas have no ``not``, so the difference is built from what they do
    have: arguments differ from every earlier call when one property takes a value none of
    them had. That is a string outside the earlier strings (a pattern), an enum or boolean
    minus the earlier values, or an optional property that no earlier call set. It refuses a
    few new calls too (a new pair of two earlier values), which is the safe side: a 135M model
    that repeats a call whose result it was given only loops.
    """
    properties = schema.get("properties")
    if schema.get("type") != "object" or not isinstance(properties, dict):
        return None
    branches = []
    for name, prop in properties.items():
        narrowed = _outside(prop, [args[name] for args in earlier if name in args])
        if narrowed is not None:
            branches.append({**schema, "properties": {**properties, name: narrowed},
                             "required": sorted({*schema.get("required", []), name})})
    if not branches:
        return None
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def _outside(prop: Any, used: list[Any]) -> dict[str, Any] | None:
    """The property's schema without the ``used`` values, when a JSON schema can say so."""
    if not isinstance(prop, dict) or not used:
        return prop if isinstance(prop, dict) else None  # never set before: setting it is new
    if isinstance(prop.get("enum"), list):
        left = [value for value in prop["enum"] if value not in used]
        return {**prop, "enum": left} if left else None
    if prop.get("type") == "boolean":
        left = [value for value in (True, False) if value not in used]
        return {**prop, "enum": left} if left else None
    if prop.get("type") == "string" and "pattern" not in prop and all(isinstance(v, str) for v in used):
        return {**prop, "pattern": f"^{_not_one_of(set(used))}$"}
    return None


def _not_one_of(words: set[str]) -> str:
    """A regex for every string except ``words``: at the first character where a string leaves
    the words' prefix tree it is new, and a string that ends inside the tree is new unless it
    ends on a word."""
    if not words:
        return "(?s:.*)"
    heads = sorted({word[0] for word in words if word})
    options = [] if "" in words else [""]
    options.append(f"[^{''.join(_in_class(c) for c in heads)}](?s:.*)" if heads else "(?s:.+)")
    options += [_in_class(c, bracket=True) + _not_one_of({w[1:] for w in words if w[:1] == c}) for c in heads]
    return "(" + "|".join(options) + ")"


def _in_class(char: str, *, bracket: bool = False) -> str:
    escaped = "\\" + char if char in "\\]^-[" else char
    return f"[{escaped}]" if bracket else escaped
