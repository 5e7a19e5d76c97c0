"""Tool definitions, tool choice, execution and the tool loop.

The loop tests drive ``run_tool_loop`` with a scripted "model": a plain function that
answers each request with the next ChatResponse of a script, recording what it was sent.
"""

import asyncio
import dataclasses
import enum
import json
from typing import Annotated, Any, Literal, Optional, TypedDict

import pydantic
import pytest

from modelport.errors import BadRequestError
from modelport.tools import (
    ToolLoopResponse,
    aexecute,
    arun_tool_loop,
    execute,
    parse_docstring,
    run_tool_loop,
    to_tool,
    to_tool_choice,
    to_tools,
)
from modelport.types import ChatRequest, ChatResponse, Message, Tool, ToolCall, ToolChoice, Usage


def params(fn):
    return to_tool(fn).parameters


def obj(properties, required=(), **extra):
    out = {"type": "object", **extra, "properties": properties}
    if required:
        out["required"] = list(required)
    out["additionalProperties"] = False
    return out


# -- types used by the schema cases (module level so type hints resolve) --------------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Address(TypedDict):
    """A postal address.

    Attributes:
        street: Street and number.
        city: The city.
    """

    street: str
    city: str


class Filters(TypedDict, total=False):
    tag: str


@dataclasses.dataclass
class Point:
    x: float
    y: float = 0.0
    labels: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Node:
    value: int
    children: "list[Node]"


class Order(pydantic.BaseModel):
    """An order to look up."""

    order_no: str
    quantity: int = 1


class Customer(pydantic.BaseModel):
    name: str
    orders: list[Order]


# -- schema generation ---------------------------------------------------------------------


def test_scalars_and_required():
    def f(a: str, b: int, c: float, d: bool, e: None): ...

    assert params(f) == obj(
        {"a": {"type": "string"}, "b": {"type": "integer"}, "c": {"type": "number"},
         "d": {"type": "boolean"}, "e": {"type": "null"}},
        ["a", "b", "c", "d", "e"],
    )


def test_defaults_make_params_optional_and_plain_defaults_are_shown():
    def f(a: str, b: int = 3, c: Optional[str] = None, d: Color = Color.GREEN, e: list[int] = []): ...

    assert params(f) == obj(
        {
            "a": {"type": "string"},
            "b": {"type": "integer", "default": 3},
            "c": {"type": ["string", "null"]},
            "d": {"type": "string", "enum": ["red", "green"], "default": "green"},
            "e": {"type": "array", "items": {"type": "integer"}},
        },
        ["a"],
    )


def test_no_parameters():
    def ping():
        """Check the service is up."""

    assert to_tool(ping) == Tool("ping", "Check the service is up.", {"type": "object", "properties": {}, "additionalProperties": False})


def test_unannotated_and_any_accept_any_json():
    def f(a, b: Any): ...

    assert params(f) == obj({"a": {}, "b": {}}, ["a", "b"])


def test_lists_tuples_sets_dicts():
    def f(
        a: list, b: list[str], c: tuple[int, ...], d: tuple[int, str], e: set[str],
        f: dict, g: dict[str, int], h: dict[str, Any], i: list[list[float]],
    ): ...

    assert params(f)["properties"] == {
        "a": {"type": "array"},
        "b": {"type": "array", "items": {"type": "string"}},
        "c": {"type": "array", "items": {"type": "integer"}},
        "d": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "minItems": 2, "maxItems": 2},
        "e": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "f": {"type": "object"},
        "g": {"type": "object", "additionalProperties": {"type": "integer"}},
        "h": {"type": "object"},
        "i": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
    }


def test_unions_and_optionals():
    def f(a: int | None, b: Optional[list[str]], c: str | int, d: Literal["x", "y"] | None): ...

    assert params(f)["properties"] == {
        "a": {"type": ["integer", "null"]},
        "b": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
        "c": {"type": ["string", "integer"]},
        "d": {"anyOf": [{"type": "string", "enum": ["x", "y"]}, {"type": "null"}]},
    }


def test_literals_and_enums():
    def f(a: Literal["c", "f"], b: Literal[1, 2], c: Literal["a", 1], d: Color, e: Level, g: Literal[True]): ...

    assert params(f)["properties"] == {
        "a": {"type": "string", "enum": ["c", "f"]},
        "b": {"type": "integer", "enum": [1, 2]},
        "c": {"enum": ["a", 1]},
        "d": {"type": "string", "enum": ["red", "green"]},
        "e": {"type": "integer", "enum": [1, 2]},
        "g": {"type": "boolean", "enum": [True]},
    }


def test_annotated_strings_describe_the_parameter():
    def f(city: Annotated[str, "The city name"], n: Annotated[int, pydantic.Field(gt=0)]): ...

    assert params(f)["properties"] == {"city": {"type": "string", "description": "The city name"}, "n": {"type": "integer"}}


def test_typeddict_nested_with_its_docs():
    def f(to: Address, filters: Filters): ...

    assert params(f)["properties"] == {
        "to": obj(
            {"street": {"type": "string", "description": "Street and number."},
             "city": {"type": "string", "description": "The city."}},
            ["street", "city"],
            description="A postal address.",
        ),
        "filters": obj({"tag": {"type": "string"}}),
    }


def test_dataclass_nested_without_its_generated_doc():
    def f(p: Point): ...

    assert params(f)["properties"]["p"] == obj(
        {"x": {"type": "number"}, "y": {"type": "number", "default": 0.0}, "labels": {"type": "array", "items": {"type": "string"}}},
        ["x"],
    )


def test_parameter_doc_overrides_nested_type_description():
    def f(to: Address):
        """Send.

        Args:
            to: Where it goes.
        """

    assert params(f)["properties"]["to"]["description"] == "Where it goes."


def test_pydantic_param_is_inlined_and_its_defs_hoisted():
    def f(customer: Customer, order: Order): ...

    p = params(f)
    order_schema = Order.model_json_schema()
    assert p["$defs"] == {"Order": order_schema}
    assert p["properties"]["customer"] == {k: v for k, v in Customer.model_json_schema().items() if k != "$defs"}
    assert p["properties"]["customer"]["properties"]["orders"]["items"] == {"$ref": "#/$defs/Order"}
    assert p["properties"]["order"] == order_schema


def test_recursive_dataclass_is_refused_with_the_fix():
    def f(tree: Node): ...

    with pytest.raises(BadRequestError, match="refers to itself") as info:
        to_tool(f)
    assert "pydantic" in info.value.hint


@pytest.mark.parametrize("annotation", [complex, bytes, dict[int, str], type])
def test_unsupported_annotations_name_the_parameter(annotation):
    def f(x): ...

    f.__annotations__ = {"x": annotation}
    with pytest.raises(BadRequestError, match="tool 'f', field 'x'") as info:
        to_tool(f)
    assert info.value.hint


@dataclasses.dataclass
class Dangling:
    other: "Missing"  # noqa: F821


def test_unresolvable_hints():
    def f(x: "Missing"): ...  # noqa: F821

    def g(d: Dangling): ...

    with pytest.raises(BadRequestError, match="cannot resolve the type hints of f"):
        to_tool(f)
    with pytest.raises(BadRequestError, match="cannot resolve the type hints of Dangling"):
        to_tool(g)


@pytest.mark.parametrize("signature", ["*args", "**kwargs", "a, /"])
def test_variadic_and_positional_only_are_refused(signature):
    namespace: dict = {}
    exec(f"def f({signature}): pass", namespace)
    with pytest.raises(BadRequestError, match="named arguments only"):
        to_tool(namespace["f"])


def test_bound_methods_drop_self():
    class Shop:
        def find(self, order_no: str) -> str:
            """Find an order."""
            return order_no

    tool = to_tool(Shop().find)
    assert tool.name == "find" and tool.parameters == obj({"order_no": {"type": "string"}}, ["order_no"])


@pytest.mark.parametrize("bad", [lambda x: x, len, 3, "name", Point, None])
def test_other_objects_are_refused(bad):
    with pytest.raises(BadRequestError) as info:
        to_tool(bad)
    assert info.value.hint


def test_lambda_message_says_use_def():
    with pytest.raises(BadRequestError, match="lambda") as info:
        to_tool(lambda: None)
    assert "def" in info.value.hint


# -- docstrings ------------------------------------------------------------------------------


def test_google_docstring():
    doc = """Get the weather
    for a city.

    More detail that is not the summary.

    Args:
        city (str): The city,
            with its country.
        units: Celsius or Fahrenheit.

    Returns:
        dict: the forecast
    """
    assert parse_docstring(doc) == ("Get the weather for a city.", {"city": "The city, with its country.", "units": "Celsius or Fahrenheit."})


def test_numpy_docstring():
    doc = """Add numbers.

    Parameters
    ----------
    a : int
        The first.
    b : int, optional
        The second,
        defaulting to one.

    Returns
    -------
    int
        The sum.
    """
    assert parse_docstring(doc) == ("Add numbers.", {"a": "The first.", "b": "The second, defaulting to one."})


def test_sphinx_docstring():
    doc = """Send a message.

    :param to: The recipient.
    :param str body: The text,
        in plain words.
    :type to: str
    :returns: nothing
    """
    assert parse_docstring(doc) == ("Send a message.", {"to": "The recipient.", "body": "The text, in plain words."})


def test_summary_stops_at_sections_without_blank_line_and_keeps_colon_prose():
    assert parse_docstring("Do it like this:\n  carefully.\nArgs:\n    x: The x.") == ("Do it like this: carefully.", {"x": "The x."})
    assert parse_docstring("Do it.\n:param x: The x.") == ("Do it.", {"x": "The x."})
    assert parse_docstring("") == ("", {})


def test_docs_become_property_descriptions():
    def lookup_order(order_no: str, verbose: bool = False) -> dict:
        """Find an order by its number.

        Args:
            order_no: The order number, like A-118.
            verbose: Include the line items.
        """

    assert to_tool(lookup_order) == Tool(
        "lookup_order",
        "Find an order by its number.",
        obj(
            {"order_no": {"type": "string", "description": "The order number, like A-118."},
             "verbose": {"type": "boolean", "description": "Include the line items.", "default": False}},
            ["order_no"],
        ),
    )


# -- other sources ---------------------------------------------------------------------------


def test_pydantic_model_class():
    tool = to_tool(Order)
    schema = Order.model_json_schema()
    del schema["title"], schema["description"]
    assert tool == Tool("Order", "An order to look up.", schema)


SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "function", "function": {"name": "search", "description": "Search.", "parameters": SCHEMA}},
        {"name": "search", "description": "Search.", "parameters": SCHEMA},
        {"name": "search", "description": "Search.", "input_schema": SCHEMA},
        {"type": "custom", "name": "search", "description": "Search.", "input_schema": SCHEMA},
        {"type": "function", "name": "search", "description": "Search.", "parameters": SCHEMA},
    ],
)
def test_schema_dicts(spec):
    assert to_tool(spec) == Tool("search", "Search.", SCHEMA)


def test_schema_dict_strict_and_missing_parameters():
    tool = to_tool({"type": "function", "function": {"name": "now", "strict": True}})
    assert tool == Tool("now", "", {"type": "object", "properties": {}}, True)


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"description": "x"}, "needs a 'name'"),
        ({"name": "bad name"}, "invalid tool name"),
        ({"name": "x" * 65}, "invalid tool name"),
        ({"name": "f", "parameters": {"type": "string"}}, "type 'object'"),
        ({"type": "web_search_20250305", "name": "web_search"}, "unsupported tool type"),
    ],
)
def test_bad_schema_dicts(spec, match):
    with pytest.raises(BadRequestError, match=match):
        to_tool(spec)


def test_tool_passes_through_but_its_name_is_checked():
    tool = Tool("ok")
    assert to_tool(tool) is tool
    with pytest.raises(BadRequestError, match="invalid tool name"):
        to_tool(Tool("no spaces"))


def test_to_tools_keeps_only_functions_executable():
    def search(q: str) -> str:
        return q

    tools, functions = to_tools([search, Order, {"name": "other"}])
    assert [t.name for t in tools] == ["search", "Order", "other"]
    assert functions == {"search": search}
    assert to_tools(search) == ([to_tool(search)], {"search": search})
    assert to_tools({"name": "other"})[0] == [Tool("other")]
    with pytest.raises(BadRequestError, match="two tools are named 'search'"):
        to_tools([search, {"name": "search"}])


# -- tool choice -------------------------------------------------------------------------------


def search(q: str) -> str:
    """Search."""
    return f"results for {q}"


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        ("auto", ToolChoice("auto")),
        ("none", ToolChoice("none")),
        ("required", ToolChoice("required")),
        ("any", ToolChoice("required")),
        ("search", ToolChoice("required", "search")),
        (search, ToolChoice("required", "search")),
        (Tool("search"), ToolChoice("required", "search")),
        (Order, ToolChoice("required", "Order")),
        (ToolChoice("none"), ToolChoice("none")),
        ({"type": "function", "function": {"name": "search"}}, ToolChoice("required", "search")),
        ({"type": "function", "name": "search"}, ToolChoice("required", "search")),
        ({"type": "tool", "name": "search"}, ToolChoice("required", "search")),
        ({"type": "any"}, ToolChoice("required")),
        ({"type": "auto"}, ToolChoice("auto")),
        ({"type": "none"}, ToolChoice("none")),
    ],
)
def test_tool_choice_spellings(value, expected):
    assert to_tool_choice(value) == expected


@pytest.mark.parametrize("value", [3, "bad name", {"type": "allowed_tools"}, {"type": "tool"}, lambda: None])
def test_bad_tool_choice(value):
    with pytest.raises(BadRequestError):
        to_tool_choice(value)


def test_tool_choice_name_must_be_a_tool_when_tools_are_given():
    assert to_tool_choice("search", [Tool("search")]) == ToolChoice("required", "search")
    assert to_tool_choice("auto", []) == ToolChoice("auto")
    with pytest.raises(BadRequestError, match="not among the tools") as info:
        to_tool_choice("find", [Tool("search")])
    assert "search" in info.value.hint


# -- execute ---------------------------------------------------------------------------------


def call(name, arguments="{}", id="c1"):
    return ToolCall(id, name, arguments if isinstance(arguments, str) else json.dumps(arguments))


def add(a: int, b: float = 1.5) -> float:
    return a + b


def move(p: Point, color: Color, order: Order, tags: list[int]) -> dict:
    return {"p": p, "color": color, "order": order, "tags": tags}


def boom(x: str) -> str:
    raise RuntimeError(f"cannot handle {x}")


FUNCTIONS = {"add": add, "move": move, "boom": boom, "search": search}


def test_execute_success_json_encodes_non_strings():
    msg = execute(call("add", {"a": 2, "b": 3}), FUNCTIONS)
    assert (msg.role, msg.tool_call_id, msg.name, msg.text, msg.is_error) == ("tool", "c1", "add", "5.0", False)
    assert execute(call("search", {"q": "tea"}), FUNCTIONS).text == "results for tea"


def test_execute_coerces_through_pydantic():
    msg = execute(call("move", {"p": {"x": 1}, "color": "red", "order": {"order_no": "A"}, "tags": ["1", 2]}), FUNCTIONS)
    assert not msg.is_error
    assert json.loads(msg.text) == {
        "p": {"x": 1.0, "y": 0.0, "labels": []}, "color": "red", "order": {"order_no": "A", "quantity": 1}, "tags": [1, 2],
    }


def test_execute_lax_coercion_of_scalars():
    assert execute(call("add", {"a": "2", "b": 1}), FUNCTIONS).text == "3.0"


@pytest.mark.parametrize(
    "tool_call, expected",
    [
        (call("nope"), "unknown tool 'nope'; the available tools are: add, boom, move, search"),
        (call("add", "{not json"), "invalid JSON arguments"),
        (call("add", "[1, 2]"), "not a JSON object"),
        (call("add", {"a": 1, "c": 2}), "unknown argument(s) c; the parameters are: a, b"),
        (call("add", {"b": 2}), "missing required argument(s) a"),
        (call("add", {"a": "two"}), "invalid argument(s): a: Input should be a valid integer"),
        (call("move", {"p": {}, "color": "blue", "order": {"order_no": "A"}, "tags": []}), "p: x: Field required; color: Input should be 'red' or 'green'"),
        (call("boom", {"x": "it"}), "tool 'boom' raised RuntimeError: cannot handle it"),
    ],
)
def test_execute_errors_become_tool_messages(tool_call, expected):
    msg = execute(tool_call, FUNCTIONS)
    assert msg.is_error and msg.role == "tool" and msg.tool_call_id == "c1"
    assert expected in msg.text
    assert "errors.pydantic.dev" not in msg.text


def test_argument_errors_tell_the_model_to_retry():
    assert execute(call("add", {}), FUNCTIONS).text == "Error: missing required argument(s) a. Fix the arguments and call 'add' again."


def test_annotated_constraints_are_enforced_and_unhashable_metadata_works():
    def f(n: Annotated[int, pydantic.Field(gt=0)], opts: Annotated[dict, {"unhashable": []}] = {}) -> int:
        return n

    assert execute(call("f", {"n": 2, "opts": {"a": 1}}), {"f": f}).text == "2"
    assert "n: Input should be greater than 0" in execute(call("f", {"n": 0}), {"f": f}).text


def test_results_encoding():
    def rich() -> Any:
        return {"order": Order(order_no="A"), "point": Point(1.0), "color": Color.RED, "tags": {"x"}, "ü": None}

    def opaque() -> Any:
        return object()

    msg = execute(call("rich"), {"rich": rich})
    assert msg.text == '{"order":{"order_no":"A","quantity":1},"point":{"x":1.0,"y":0.0,"labels":[]},"color":"red","tags":["x"],"ü":null}'
    assert execute(call("m"), {"m": lambda: Order(order_no="B")}).text == '{"order_no":"B","quantity":1}'
    bad = execute(call("opaque"), {"opaque": opaque})
    assert bad.is_error and "cannot be encoded as JSON" in bad.text


def test_sync_execute_refuses_async_functions():
    async def slow(x: str) -> str:
        return x

    with pytest.raises(BadRequestError, match="async"):
        execute(call("slow", {"x": "a"}), {"slow": slow})


def test_aexecute_runs_async_and_sync_functions():
    async def slow(x: str) -> str:
        await asyncio.sleep(0)
        return x * 2

    async def failing() -> None:
        raise ValueError("nope")

    functions = {"slow": slow, "add": add, "failing": failing}

    async def main():
        return [
            await aexecute(call("slow", {"x": "a"}), functions),
            await aexecute(call("add", {"a": 1}), functions),
            await aexecute(call("failing"), functions),
            await aexecute(call("missing"), functions),
        ]

    slow_msg, add_msg, fail_msg, missing_msg = asyncio.run(main())
    assert (slow_msg.text, add_msg.text) == ("aa", "2.5")
    assert fail_msg.is_error and "ValueError: nope" in fail_msg.text
    assert missing_msg.is_error and "unknown tool" in missing_msg.text


# -- the loop --------------------------------------------------------------------------------


def answer(text="", calls=(), usage=(10, 5)):
    return ChatResponse(
        id="r", model="m", message=Message.assistant(text, list(calls)),
        finish_reason="tool_calls" if calls else "stop", usage=Usage(*usage),
    )


class ScriptedModel:
    """Answers the n-th request with the n-th scripted response and keeps every request."""

    def __init__(self, *script):
        self.script = list(script)
        self.requests = []

    def __call__(self, request):
        self.requests.append(request)
        return self.script[len(self.requests) - 1]

    async def asend(self, request):
        await asyncio.sleep(0)
        return self(request)


def request(**kw):
    tools, _ = to_tools([add, search, Order])
    return ChatRequest(model="m", messages=[Message.user("hi")], tools=tools, **kw)


def test_loop_runs_tools_until_the_model_answers():
    model = ScriptedModel(
        answer(calls=[call("add", {"a": 1, "b": 2}, "c1"), call("search", {"q": "x"}, "c2")], usage=(10, 2)),
        answer(calls=[call("add", {"a": 3}, "c3")], usage=(20, 3)),
        answer("It is 4.5", usage=(30, 4)),
    )
    original = request()
    out = run_tool_loop(model, original, FUNCTIONS)

    assert isinstance(out, ToolLoopResponse) and isinstance(out, ChatResponse)
    assert out.text == "It is 4.5" and out.turns == 3 and not out.max_turns_reached
    assert out.usage == Usage(60, 9)
    assert [(m.role, m.text) for m in out.messages] == [
        ("user", "hi"), ("assistant", ""), ("tool", "3.0"), ("tool", "results for x"),
        ("assistant", ""), ("tool", "4.5"), ("assistant", "It is 4.5"),
    ]
    assert [m.tool_call_id for m in out.messages if m.role == "tool"] == ["c1", "c2", "c3"]
    # each turn saw exactly the conversation so far, and the caller's request is untouched
    assert [len(r.messages) for r in model.requests] == [1, 4, 6]
    assert original.messages == [Message.user("hi")]


def test_loop_without_tool_calls_is_one_call():
    model = ScriptedModel(answer("hello"))
    out = run_tool_loop(model, request(), FUNCTIONS)
    assert (out.text, out.turns, out.usage, len(model.requests)) == ("hello", 1, Usage(10, 5), 1)
    assert [m.role for m in out.messages] == ["user", "assistant"]


def test_loop_stops_at_max_turns_and_says_so():
    looping = answer(calls=[call("search", {"q": "again"})])
    model = ScriptedModel(*[looping] * 5)
    out = run_tool_loop(model, request(), FUNCTIONS, max_turns=3)
    assert out.max_turns_reached and out.turns == 3 and len(model.requests) == 3
    assert out.finish_reason == "tool_calls" and out.usage == Usage(30, 15)
    assert out.messages[-1].tool_calls  # the unexecuted calls are visible to the caller


def test_loop_feeds_tool_errors_back_to_the_model():
    model = ScriptedModel(answer(calls=[call("boom", {"x": "it"}), call("ghost")]), answer("sorry"))
    out = run_tool_loop(model, request(), FUNCTIONS)
    errors = [m for m in out.messages if m.role == "tool"]
    assert [m.is_error for m in errors] == [True, True] and out.text == "sorry"


def test_loop_returns_calls_to_declared_tools_without_functions():
    extract = answer(calls=[call("Order", {"order_no": "A"})])
    model = ScriptedModel(extract)
    out = run_tool_loop(model, request(), FUNCTIONS)
    assert out.turns == 1 and not out.max_turns_reached and out.tool_calls[0].name == "Order"


def test_forced_tool_choice_is_released_after_the_first_round():
    model = ScriptedModel(answer(calls=[call("search", {"q": "x"})]), answer("done"))
    run_tool_loop(model, request(tool_choice=ToolChoice("required", "search")), FUNCTIONS)
    assert [r.tool_choice for r in model.requests] == [ToolChoice("required", "search"), ToolChoice("auto")]


def test_loop_argument_checks():
    with pytest.raises(BadRequestError, match="max_turns"):
        run_tool_loop(ScriptedModel(), request(), FUNCTIONS, max_turns=0)

    async def slow() -> None: ...

    model = ScriptedModel(answer("x"))
    with pytest.raises(BadRequestError, match="async"):
        run_tool_loop(model, request(), {"slow": slow})
    assert model.requests == []  # refused before spending a model call


def test_async_loop_runs_calls_concurrently_and_sums_usage():
    started = []

    async def wait(name: str) -> str:
        started.append(name)
        await asyncio.sleep(0.01)
        return f"{name} done ({len(started)} started)"

    model = ScriptedModel(
        answer(calls=[call("wait", {"name": "a"}, "c1"), call("wait", {"name": "b"}, "c2")]),
        answer(calls=[call("add", {"a": 1}, "c3")]),
        answer("finished"),
    )
    out = asyncio.run(arun_tool_loop(model.asend, request(), {"wait": wait, "add": add}))
    assert out.text == "finished" and out.turns == 3 and out.usage == Usage(30, 15)
    results = [m.text for m in out.messages if m.role == "tool"]
    assert results == ["a done (2 started)", "b done (2 started)", "2.5"]  # both began before either ended


def test_async_loop_max_turns():
    model = ScriptedModel(*[answer(calls=[call("add", {"a": 1})])] * 3)
    out = asyncio.run(arun_tool_loop(model.asend, request(), FUNCTIONS, max_turns=2))
    assert out.max_turns_reached and out.turns == 2
