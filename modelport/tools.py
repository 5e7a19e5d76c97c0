"""Tools: Python functions, pydantic models and JSON schemas as canonical Tools, and running them.

``to_tool`` turns what a user naturally has (a typed, documented function) into the JSON
Schema every provider wants; ``execute`` runs a model's tool call and turns *every* failure
into a tool-result message the model can act on; ``run_tool_loop`` drives the
call -> execute -> answer cycle over any ``send`` function. pydantic is imported only when
a schema or an argument needs it.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import enum
import inspect
import json
import re
import sys
import types
import typing
from functools import lru_cache
from typing import Any, Awaitable, Callable, Iterable, Literal, Union

from .errors import BadRequestError
from .structured import explain_error
from .types import ChatRequest, ChatResponse, Message, Tool, ToolCall, ToolChoice, Usage

__all__ = [
    "ToolLoopResponse", "aexecute", "arun_tool_loop", "execute", "installed_tool", "parse_docstring", "run_tool_loop",
    "to_tool", "to_tool_choice", "to_tools",
]

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_NAME_HINT = "tool names are 1-64 characters of a-z, A-Z, 0-9, _ and - (the rule every provider accepts)"
_TYPES_HINT = (
    "use str, int, float, bool, None, list[X], dict[str, X], X | None, Literal[...], an Enum, "
    "a TypedDict, a dataclass or a pydantic model"
)
_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadRequestError(f"invalid tool name {name!r}", hint=_NAME_HINT)
    return name


def _pydantic_model(obj: Any) -> bool:
    # A pydantic class can only exist once pydantic is imported, so this never imports it.
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(obj, type) and issubclass(obj, pydantic.BaseModel)


# -- definitions ---------------------------------------------------------------------------


def to_tool(obj: Any) -> Tool:
    """A Tool from a function, a pydantic model class, a JSON schema dict or a Tool."""
    if isinstance(obj, Tool):
        _check_name(obj.name)
        return obj
    if isinstance(obj, dict):
        return _tool_from_dict(obj)
    if _pydantic_model(obj):
        return _tool_from_model(obj)
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return _tool_from_function(obj)
    raise BadRequestError(
        f"cannot make a tool from {_describe(obj)}",
        hint="pass a function defined with def (typed, with a docstring), a pydantic model class, "
        "a JSON schema dict {name, description, parameters} or a modelport.Tool",
    )


def to_tools(items: Iterable[Any]) -> tuple[list[Tool], dict[str, Callable[..., Any]]]:
    """The tools to declare, and the functions among them that can be executed, by name.
    A string names a tool function an installed plugin registers (``modelport plugins``)."""
    if isinstance(items, (dict, Tool, str)) or callable(items):  # one tool given bare, not a dict's keys
        items = [items]
    tools: list[Tool] = []
    functions: dict[str, Callable[..., Any]] = {}
    for item in items:
        if isinstance(item, str):
            item = installed_tool(item)
        tool = to_tool(item)
        if any(t.name == tool.name for t in tools):
            raise BadRequestError(f"two tools are named {tool.name!r}", hint="give every tool a distinct name")
        tools.append(tool)
        if inspect.isfunction(item) or inspect.ismethod(item):
            functions[tool.name] = item
    return tools, functions


def installed_tool(name: str) -> Callable[..., Any]:
    """The function a plugin registers as tool ``name`` in the modelport.tools group."""
    from . import plugins

    try:
        return plugins.load(plugins.TOOLS, name, plugins.as_callable)
    except plugins.PluginError as exc:
        raise BadRequestError(exc.message, param="tools", hint=exc.hint) from None


def _describe(obj: Any) -> str:
    return f"the class {obj.__name__}" if isinstance(obj, type) else f"a {type(obj).__name__} ({obj!r:.60})"


def _tool_from_dict(spec: dict[str, Any]) -> Tool:
    if spec.get("type") == "function" and isinstance(spec.get("function"), dict):
        spec = spec["function"]  # OpenAI's wrapper; strict lives inside it
    elif spec.get("type", "custom") not in ("custom", "function"):  # Anthropic: "custom"; Responses API: flat "function"
        raise BadRequestError(
            f"unsupported tool type {spec['type']!r}",
            hint="provider-hosted tools do not translate between providers; describe a function tool "
            "as {name, description, parameters}",
        )
    if "name" not in spec:
        raise BadRequestError("a tool dict needs a 'name'", hint="use {name, description, parameters: <JSON schema>}")
    params = spec.get("parameters", spec.get("input_schema", spec.get("parametersJsonSchema")))
    if params is None:
        params = {"type": "object", "properties": {}}
    if not isinstance(params, dict) or params.get("type", "object") != "object":
        raise BadRequestError(
            f"tool {spec['name']!r}: parameters must be a JSON schema of type 'object'",
            hint='wrap the arguments in {"type": "object", "properties": {...}}',
        )
    return Tool(_check_name(spec["name"]), spec.get("description") or "", params, spec.get("strict"))


def _tool_from_model(model: type) -> Tool:
    schema = model.model_json_schema()  # type: ignore[attr-defined]
    schema.pop("title", None)
    doc = schema.pop("description", None) or ""
    return Tool(_check_name(model.__name__), parse_docstring(doc)[0], schema)


def _tool_from_function(fn: Callable[..., Any]) -> Tool:
    if fn.__name__ == "<lambda>":
        raise BadRequestError(
            "a lambda cannot be a tool: it has no name and no docstring to describe it",
            hint="define it with def name(...) and a docstring",
        )
    name = _check_name(fn.__name__)
    description, docs = parse_docstring(inspect.getdoc(fn) or "")
    builder = _SchemaBuilder(f"tool {name!r}")
    fields = [(p.name, p.annotation, p.required, p.default) for p in _params(fn)]
    parameters = builder.object(fields, docs, "")
    if builder.defs:
        parameters["$defs"] = builder.defs
    return Tool(name, description, parameters)


# -- signatures ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Param:
    name: str
    annotation: Any
    required: bool
    default: Any


def _params(fn: Callable[..., Any]) -> tuple[_Param, ...]:
    """The keyword parameters of fn with resolved annotations (cached per function)."""
    func = getattr(fn, "__func__", fn)  # bound methods: cache on the function, drop self/cls
    params = _function_params(func)
    return params[1:] if func is not fn else params


@lru_cache(maxsize=512)
def _function_params(fn: Callable[..., Any]) -> tuple[_Param, ...]:
    name = getattr(fn, "__name__", repr(fn))
    hints = _hints(fn, name)
    out = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise BadRequestError(
                f"{name}: parameter {param}: a tool takes named arguments only",
                hint="declare each argument as a named parameter (no *args, **kwargs or positional-only /)",
            )
        required = param.default is param.empty
        out.append(_Param(param.name, hints.get(param.name, Any), required, None if required else param.default))
    return tuple(out)


def _hints(obj: Any, name: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj, include_extras=True)
    except Exception as exc:  # NameError for unresolvable forward refs, TypeError for odd annotations
        raise BadRequestError(
            f"cannot resolve the type hints of {name}: {exc}",
            hint="define or import the annotation's types at module level so typing.get_type_hints can resolve them",
        ) from None


# -- JSON schema from type hints -----------------------------------------------------------


class _SchemaBuilder:
    """Turns annotations into JSON Schema; nested pydantic models' $defs are collected here."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.defs: dict[str, Any] = {}
        self._open: list[type] = []  # classes being expanded, to refuse recursion clearly

    def object(self, fields: list[tuple[str, Any, bool, Any]], docs: dict[str, str], description: str) -> dict[str, Any]:
        """A closed object schema: unknown keys are an error for a function and ignored by types."""
        properties: dict[str, Any] = {}
        for name, annotation, _, default in fields:
            schema = self.of(annotation, f"{self.where}, field {name!r}")
            if docs.get(name):
                schema = {**schema, "description": docs[name]}
            default = default.value if isinstance(default, enum.Enum) else default
            if isinstance(default, (str, int, float, bool)):
                schema = {**schema, "default": default}
            properties[name] = schema
        out: dict[str, Any] = {"type": "object"}
        if description:
            out["description"] = description
        out["properties"] = properties
        required = [name for name, _, req, _ in fields if req]
        if required:
            out["required"] = required
        out["additionalProperties"] = False
        return out

    def of(self, tp: Any, where: str) -> dict[str, Any]:
        if tp is Any:
            return {}
        if tp is None:
            return {"type": "null"}
        simple = _SIMPLE.get(tp) if isinstance(tp, type) else None
        if simple:
            return {"type": simple}
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is typing.Annotated:
            schema = self.of(args[0], where)
            notes = " ".join(a for a in args[1:] if isinstance(a, str))
            return {**schema, "description": notes} if notes else schema
        if origin is Union or origin is types.UnionType:
            return self._union(args, where)
        if origin is Literal:
            return _enum(list(args))
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return _enum([member.value for member in tp])
        if tp in (list, tuple, set, frozenset, dict) or origin in (list, tuple, set, frozenset, dict, cabc.Sequence, cabc.Set, cabc.Mapping):
            return self._container(origin or tp, args, where)
        if _pydantic_model(tp):
            schema = tp.model_json_schema()
            self._add_defs(schema.pop("$defs", {}), where)
            return schema
        if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or typing.is_typeddict(tp)):
            return self._record(tp, where)
        raise BadRequestError(f"{where}: unsupported type annotation {tp!r}", hint=_TYPES_HINT)

    def _union(self, args: tuple[Any, ...], where: str) -> dict[str, Any]:
        schemas = [self.of(arg, where) for arg in args]
        if all(list(s) == ["type"] and isinstance(s["type"], str) for s in schemas):
            return {"type": list(dict.fromkeys(s["type"] for s in schemas))}  # compact form when plain
        return {"anyOf": schemas}

    def _container(self, kind: Any, args: tuple[Any, ...], where: str) -> dict[str, Any]:
        if kind in (dict, cabc.Mapping):
            if args and args[0] is not str:
                raise BadRequestError(f"{where}: JSON object keys are strings, not {args[0]!r}", hint="use dict[str, X]")
            values = self.of(args[1], where) if args else {}
            return {"type": "object", "additionalProperties": values} if values else {"type": "object"}
        if kind is tuple and args and (len(args) != 2 or args[1] is not Ellipsis):
            items = [self.of(arg, where) for arg in args]
            return {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}
        out: dict[str, Any] = {"type": "array"}
        item = self.of(args[0], where) if args else {}
        if item:
            out["items"] = item
        if kind in (set, frozenset, cabc.Set):
            out["uniqueItems"] = True
        return out

    def _record(self, cls: type, where: str) -> dict[str, Any]:
        """A dataclass or TypedDict as a nested object, documented by its docstring."""
        if cls in self._open:
            raise BadRequestError(
                f"{where}: {cls.__name__} refers to itself",
                hint="recursive types need $defs: make it a pydantic model, whose schema handles recursion",
            )
        doc = cls.__doc__ or ""  # not inspect.getdoc: a TypedDict would inherit dict's docstring
        if dataclasses.is_dataclass(cls) and doc.startswith(f"{cls.__name__}("):
            doc = ""  # the signature dataclass writes when there is no docstring says nothing new
        description, docs = parse_docstring(doc)
        hints = _hints(cls, cls.__name__)
        if dataclasses.is_dataclass(cls):
            fields = [(f.name, hints[f.name], *_field_default(f)) for f in dataclasses.fields(cls)]
        else:
            required_keys = cls.__required_keys__  # type: ignore[attr-defined]
            fields = [(name, tp, name in required_keys, None) for name, tp in hints.items()]
        self._open.append(cls)
        try:
            return self.object(fields, docs, description)
        finally:
            self._open.pop()

    def _add_defs(self, defs: dict[str, Any], where: str) -> None:
        for name, schema in defs.items():
            if self.defs.setdefault(name, schema) != schema:
                raise BadRequestError(
                    f"{where}: two different pydantic models are both named {name!r}",
                    hint="rename one of them: their schemas share one $defs namespace",
                )


def _field_default(f: dataclasses.Field) -> tuple[bool, Any]:
    if f.default is not dataclasses.MISSING:
        return False, f.default
    return f.default_factory is dataclasses.MISSING, None


def _json_type(value: Any) -> str | None:
    for cls, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (type(None), "null")):
        if isinstance(value, cls):
            return name
    return None


def _enum(values: list[Any]) -> dict[str, Any]:
    kinds = {_json_type(v) for v in values}
    if len(kinds) == 1 and None not in kinds:
        return {"type": kinds.pop(), "enum": values}
    return {"enum": values}


# -- docstrings ------------------------------------------------------------------------------

_PARAM_SECTIONS = {
    "args", "arguments", "parameters", "params", "attributes", "keyword args", "keyword arguments",
    "other parameters", "fields",
}
# Only known titles count as Google headers, so a summary line ending in ":" stays prose.
_SECTIONS = _PARAM_SECTIONS | {
    "returns", "return", "yields", "yield", "raises", "raise", "warns", "example", "examples", "note",
    "notes", "see also", "references", "todo", "warning", "warnings", "methods",
}
_GOOGLE_HEADER = re.compile(r"^([A-Za-z][A-Za-z ]*):\s*$")
_RULE = re.compile(r"^\s*-{3,}\s*$")
_SPHINX = re.compile(r"^:(?:param|parameter|arg|argument|key|keyword)\s+(?:[^:]*\s)?\*{0,2}(\w+)\s*:\s*(.*)$")
_ITEM = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*(?::\s*(.*))?$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The first paragraph, and each parameter's text (Google, NumPy or Sphinx style)."""
    lines = inspect.cleandoc(doc).splitlines() if doc else []
    docs: dict[str, str] = {}
    summary: list[str] = []
    in_summary = True
    i = 0
    while i < len(lines):
        line = lines[i]
        numpy = i + 1 < len(lines) and line.strip() and _RULE.match(lines[i + 1])
        google = _header(line)
        if numpy or google:
            in_summary = False
            title = line.strip().rstrip(":").strip().lower()
            start = i + (2 if numpy else 1)
            end = _section_end(lines, start, _indent(line), bool(numpy))
            if title in _PARAM_SECTIONS:
                _read_items(lines[start:end], bool(numpy), docs)
            i = end
            continue
        sphinx = _SPHINX.match(line.strip())
        if sphinx:
            in_summary = False
            end = _continuation_end(lines, i + 1, _indent(line))
            docs[sphinx.group(1)] = _join([sphinx.group(2), *lines[i + 1:end]])
            i = end
            continue
        if not line.strip() or line.lstrip().startswith(":"):
            in_summary = in_summary and not summary
        elif in_summary:
            summary.append(line)
        i += 1
    return _join(summary), docs


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _header(line: str) -> bool:
    match = _GOOGLE_HEADER.match(line.strip())
    return match is not None and match.group(1).strip().lower() in _SECTIONS


def _section_end(lines: list[str], start: int, indent: int, numpy: bool) -> int:
    """Google items are indented under their header; NumPy items sit at the header's indent,
    so a NumPy section ends only at the next header (a line over a rule) or a dedent."""
    for i in range(start, len(lines)):
        line = lines[i]
        if not line.strip() or _indent(line) > indent:
            continue
        if not numpy or _indent(line) < indent or _header(line) or (i + 1 < len(lines) and _RULE.match(lines[i + 1])):
            return i
    return len(lines)


def _continuation_end(lines: list[str], start: int, indent: int) -> int:
    i = start
    while i < len(lines) and lines[i].strip() and _indent(lines[i]) > indent:
        i += 1
    return i


def _read_items(body: list[str], numpy: bool, docs: dict[str, str]) -> None:
    indents = [_indent(line) for line in body if line.strip()]
    if not indents:
        return
    base = min(indents)
    name, text = None, []
    for line in body:
        item = _ITEM.match(line.strip()) if line.strip() and _indent(line) == base else None
        if item:
            if name:
                docs[name] = _join(text)
            # Google puts the description after the colon; NumPy puts the type there.
            name, text = item.group(1), ([] if numpy else [item.group(2) or ""])
        elif name:
            text.append(line)
    if name:
        docs[name] = _join(text)


def _join(lines: list[str]) -> str:
    return " ".join(part.strip() for part in lines if part.strip())


# -- tool choice -----------------------------------------------------------------------------

_MODES = {
    "auto": ToolChoice("auto"),
    "none": ToolChoice("none"),
    "required": ToolChoice("required"),
    "any": ToolChoice("required"),  # Anthropic's and Gemini's word for required
}


def to_tool_choice(value: Any, tools: Iterable[Tool] | None = None) -> ToolChoice | None:
    """Normalise every spelling of tool_choice; with ``tools``, a forced name must be one of them.

    Strings auto, none, required and any are modes (they win over a tool of that name); any
    other string names the tool to force.
    """
    if value is None or isinstance(value, ToolChoice):
        choice = value
    elif isinstance(value, str):
        choice = _MODES.get(value) or ToolChoice("required", _check_name(value))
    elif isinstance(value, dict):
        choice = _choice_from_dict(value)
    elif isinstance(value, Tool):
        choice = ToolChoice("required", value.name)
    elif inspect.isfunction(value) or inspect.ismethod(value) or _pydantic_model(value):
        choice = ToolChoice("required", _check_name(value.__name__))
    else:
        raise BadRequestError(
            f"cannot use {_describe(value)} as tool_choice",
            hint='use "auto", "none", "required", a tool name, the tool itself, or '
            '{"type": "function", "function": {"name": ...}}',
        )
    if choice is not None and choice.name and tools is not None:
        names = [t.name for t in tools]
        if choice.name not in names:
            raise BadRequestError(
                f"tool_choice names {choice.name!r}, which is not among the tools",
                hint=f"the tools are: {', '.join(names) or 'none'}",
            )
    return choice


def _choice_from_dict(value: dict[str, Any]) -> ToolChoice:
    kind = value.get("type")
    if kind == "function":  # chat completions nest the name; the Responses API does not
        function = value.get("function")
        name = function.get("name") if isinstance(function, dict) else value.get("name")
        return ToolChoice("required", _check_name(name))
    if kind == "tool":
        return ToolChoice("required", _check_name(value.get("name")))
    if kind in _MODES:
        return _MODES[kind]
    raise BadRequestError(
        f"unsupported tool_choice {value!r}",
        hint='use {"type": "function", "function": {"name": ...}}, {"type": "tool", "name": ...} '
        'or {"type": "auto" | "any" | "none"}',
    )


# -- execution -------------------------------------------------------------------------------


class _ArgumentError(Exception):
    """Arguments the model sent that the function cannot take; told back to the model."""


def execute(call: ToolCall, functions: dict[str, Callable[..., Any]]) -> Message:
    """Run one tool call; every failure becomes a tool message with ``is_error=True``.

    An async function here is a programming error (raised): use ``aexecute``.
    """
    prepared = _prepare(call, functions)
    if isinstance(prepared, Message):
        return prepared
    fn, kwargs = prepared
    if inspect.iscoroutinefunction(fn):
        raise _async_in_sync(call.name)
    try:
        result = fn(**kwargs)
    except Exception as exc:  # the model gets to see and react to what went wrong
        return _failed(call, exc)
    return _result(call, result)


async def aexecute(call: ToolCall, functions: dict[str, Callable[..., Any]]) -> Message:
    """``execute`` for the async world: awaits async functions, runs sync ones in a thread."""
    import asyncio  # here, not at the top: only async callers pay for it, and they have it loaded

    prepared = _prepare(call, functions)
    if isinstance(prepared, Message):
        return prepared
    fn, kwargs = prepared
    try:
        if inspect.iscoroutinefunction(fn):
            result = await fn(**kwargs)
        else:  # a thread, so a blocking tool (HTTP, disk) does not stall the event loop
            result = await asyncio.to_thread(fn, **kwargs)
            if inspect.isawaitable(result):
                result = await result
    except Exception as exc:
        return _failed(call, exc)
    return _result(call, result)


def _async_in_sync(name: str) -> BadRequestError:
    return BadRequestError(f"tool {name!r} is an async function", hint="use the async client (AsyncClient, aexecute, arun_tool_loop)")


def _prepare(call: ToolCall, functions: dict[str, Callable[..., Any]]) -> tuple[Callable[..., Any], dict[str, Any]] | Message:
    fn = functions.get(call.name)
    if fn is None:
        available = ", ".join(sorted(functions)) or "none"
        return _error(call, f"unknown tool {call.name!r}; the available tools are: {available}")
    try:
        return fn, _arguments(call, _params(fn))
    except _ArgumentError as exc:
        return _error(call, f"{exc}. Fix the arguments and call {call.name!r} again.")


def _arguments(call: ToolCall, params: tuple[_Param, ...]) -> dict[str, Any]:
    try:
        args = call.args
    except ValueError as exc:
        raise _ArgumentError(f"{exc}; the arguments must be one JSON object") from None
    by_name = {p.name: p for p in params}
    expected = ", ".join(by_name) or "none"
    unknown = [key for key in args if key not in by_name]
    if unknown:
        raise _ArgumentError(f"unknown argument(s) {', '.join(unknown)}; the parameters are: {expected}")
    missing = [p.name for p in params if p.required and p.name not in args]
    if missing:
        raise _ArgumentError(f"missing required argument(s) {', '.join(missing)}")
    kwargs, problems = {}, []
    for key, value in args.items():
        try:
            kwargs[key] = _coerce(by_name[key].annotation, value)
        except ValueError as exc:
            problems.append(f"{key}: {explain_error(exc)}")
    if problems:
        raise _ArgumentError("invalid argument(s): " + "; ".join(problems))
    return kwargs


def _coerce(annotation: Any, value: Any) -> Any:
    """The value as the parameter's type: plain JSON values pass through, others via pydantic."""
    if annotation is Any or type(value) is annotation:
        return value
    if annotation is float and type(value) is int:
        return float(value)
    try:
        adapter = _adapter(annotation)
    except ImportError:  # without pydantic the function gets the JSON value as it came
        return value
    except TypeError:  # unhashable annotation metadata: build the adapter uncached
        adapter = _adapter.__wrapped__(annotation)
    return adapter.validate_python(value)


@lru_cache(maxsize=512)
def _adapter(annotation: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(annotation)


def _error(call: ToolCall, text: str) -> Message:
    return Message.tool(call.id, f"Error: {text}", name=call.name, is_error=True)


def _failed(call: ToolCall, exc: Exception) -> Message:
    return _error(call, f"tool {call.name!r} raised {type(exc).__name__}: {exc}")


def _result(call: ToolCall, result: Any) -> Message:
    if isinstance(result, str):
        return Message.tool(call.id, result, name=call.name)
    try:
        # dump_json's canonical form, plus a hook for values json cannot encode by itself
        text = json.dumps(result, ensure_ascii=False, separators=(",", ":"), default=_jsonable)
    except (TypeError, ValueError) as exc:
        return _error(call, f"tool {call.name!r} returned a value that cannot be encoded as JSON: {exc}")
    return Message.tool(call.id, text, name=call.name)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump") and not isinstance(value, type):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "isoformat"):  # datetime, date, time
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# -- the loop ----------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class ToolLoopResponse(ChatResponse):
    """The final answer of a tool loop: a ChatResponse, plus how it got there.

    ``usage`` is summed over every turn. ``messages`` is the whole conversation, ending with
    the final assistant message. ``max_turns_reached`` is True when the loop stopped because
    it ran out of turns while the model still wanted tools: then the last message holds
    tool calls that were not executed. When the model calls a declared tool that has no
    function (a pydantic-model tool), the loop stops with those calls for the caller.
    """

    messages: list[Message] = dataclasses.field(default_factory=list)
    turns: int = 0
    max_turns_reached: bool = False


class _Loop:
    """The loop's bookkeeping, shared by the sync and async drivers."""

    def __init__(self, request: ChatRequest, functions: dict[str, Callable[..., Any]], max_turns: int) -> None:
        if max_turns < 1:
            raise BadRequestError(f"max_turns must be at least 1, not {max_turns}")
        self.request = request
        self.functions = functions
        self.declared = {tool.name for tool in request.tools}
        self.max_turns = max_turns
        self.turns = 0
        self.usage = Usage()
        self.reached = False

    def calls_to_run(self, response: ChatResponse) -> list[ToolCall]:
        """Record an answer; the calls to execute before the next turn, or [] to stop."""
        self.turns += 1
        self.usage = self.usage + response.usage
        calls = response.tool_calls
        if not calls or any(c.name in self.declared and c.name not in self.functions for c in calls):
            return []
        if self.turns >= self.max_turns:
            self.reached = True
            return []
        return calls

    def next_request(self, response: ChatResponse, results: list[Message]) -> ChatRequest:
        # A fresh list per turn: send() may keep the request it was given (logs, caches).
        messages = [*self.request.messages, response.message, *results]
        choice = self.request.tool_choice
        if choice is not None and choice.mode == "required":
            choice = ToolChoice("auto")  # forcing a tool again every turn would never let the model answer
        self.request = dataclasses.replace(self.request, messages=messages, tool_choice=choice)
        return self.request

    def result(self, response: ChatResponse) -> ToolLoopResponse:
        values = {f.name: getattr(response, f.name) for f in dataclasses.fields(ChatResponse)}
        values["usage"] = self.usage
        return ToolLoopResponse(
            **values,
            messages=[*self.request.messages, response.message],
            turns=self.turns,
            max_turns_reached=self.reached,
        )


def run_tool_loop(
    send: Callable[[ChatRequest], ChatResponse],
    request: ChatRequest,
    functions: dict[str, Callable[..., Any]],
    max_turns: int = 8,
) -> ToolLoopResponse:
    """Send, execute the model's tool calls, send the results back, until it answers.

    ``max_turns`` bounds the number of ``send`` calls. See ToolLoopResponse for what comes back.
    """
    loop = _Loop(request, functions, max_turns)
    for name, fn in functions.items():
        if inspect.iscoroutinefunction(fn):  # fail before spending a model call
            raise _async_in_sync(name)
    response = send(loop.request)
    while calls := loop.calls_to_run(response):
        response = send(loop.next_request(response, [execute(call, functions) for call in calls]))
    return loop.result(response)


async def arun_tool_loop(
    asend: Callable[[ChatRequest], Awaitable[ChatResponse]],
    request: ChatRequest,
    functions: dict[str, Callable[..., Any]],
    max_turns: int = 8,
) -> ToolLoopResponse:
    """``run_tool_loop`` for async ``send``; the calls of one turn run concurrently."""
    import asyncio

    loop = _Loop(request, functions, max_turns)
    response = await asend(loop.request)
    while calls := loop.calls_to_run(response):
        results = await asyncio.gather(*(aexecute(call, functions) for call in calls))
        response = await asend(loop.next_request(response, list(results)))
    return loop.result(response)
