"""Structured output: response_format normalisation, strict schemas, parsing and its errors."""

import re
import subprocess
import sys
from typing import Optional

import pydantic
import pytest

from modelport.errors import BadRequestError, ModelportError, StructuredOutputError
from modelport.structured import parse, strip_fences, to_response_format
from modelport.types import ChatResponse, Message, ResponseFormat


class Item(pydantic.BaseModel):
    name: str
    price: float


class Receipt(pydantic.BaseModel):
    """A shop receipt."""

    shop: str
    items: list[Item]
    note: Optional[str] = None


class WithDefault(pydantic.BaseModel):
    count: int = 3


class Open(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    a: int


class Mapping(pydantic.BaseModel):
    scores: dict[str, int]


def reply(text, finish_reason="stop"):
    return ChatResponse(id="r", model="m", message=Message.assistant(text), finish_reason=finish_reason, provider="p")


# -- to_response_format ------------------------------------------------------------------------


def test_pydantic_model_becomes_a_strict_schema():
    fmt, validate = to_response_format(Receipt)
    assert fmt == ResponseFormat(
        "json_schema",
        {
            "$defs": {
                "Item": {
                    "properties": {"name": {"title": "Name", "type": "string"}, "price": {"title": "Price", "type": "number"}},
                    "required": ["name", "price"],
                    "title": "Item",
                    "type": "object",
                    "additionalProperties": False,
                },
            },
            "description": "A shop receipt.",
            "properties": {
                "shop": {"title": "Shop", "type": "string"},
                "items": {"items": {"$ref": "#/$defs/Item"}, "title": "Items", "type": "array"},
                "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Note"},
            },
            "required": ["shop", "items", "note"],
            "title": "Receipt",
            "type": "object",
            "additionalProperties": False,
        },
        "Receipt",
        True,
    )
    parsed = validate('{"shop": "A", "items": [{"name": "tea", "price": "2.5"}]}')
    assert parsed == Receipt(shop="A", items=[Item(name="tea", price=2.5)])


@pytest.mark.parametrize("model", [WithDefault, Open, Mapping])
def test_models_that_strict_mode_would_change_stay_non_strict(model):
    fmt, _ = to_response_format(model)
    assert fmt.strict is None


def test_real_defaults_stay_optional():
    fmt, validate = to_response_format(WithDefault)
    assert fmt.schema["required"] == [] and fmt.schema["properties"]["count"]["default"] == 3
    assert fmt.schema["additionalProperties"] is False
    assert validate("{}") == WithDefault(count=3)


def test_extra_allow_keeps_its_open_schema():
    fmt, _ = to_response_format(Open)
    assert fmt.schema["additionalProperties"] is True


SCHEMA = {"type": "object", "properties": {"total": {"type": "number"}}, "required": ["total"]}


@pytest.mark.parametrize(
    "value, expected",
    [
        (SCHEMA, ResponseFormat("json_schema", SCHEMA, "response")),
        ({**SCHEMA, "title": "Total"}, ResponseFormat("json_schema", {**SCHEMA, "title": "Total"}, "Total")),
        ({**SCHEMA, "title": "not a name"}, ResponseFormat("json_schema", {**SCHEMA, "title": "not a name"}, "response")),
        (
            {"type": "json_schema", "json_schema": {"name": "order_summary", "schema": SCHEMA, "strict": True}},
            ResponseFormat("json_schema", SCHEMA, "order_summary", True),
        ),
        ({"type": "json_schema", "json_schema": {"schema": SCHEMA}}, ResponseFormat("json_schema", SCHEMA, "response")),
        ({"type": "json_object"}, ResponseFormat("json_object")),
        ("json", ResponseFormat("json_object")),
        ({"type": "text"}, ResponseFormat("text")),
        ("text", ResponseFormat("text")),
    ],
)
def test_format_spellings(value, expected):
    assert to_response_format(value)[0] == expected


def test_raw_schema_is_not_modified():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt, _ = to_response_format(schema)
    assert fmt.schema is schema and schema == {"type": "object", "properties": {"a": {"type": "integer"}}}


def test_none_and_text_have_no_validator():
    assert to_response_format(None) == (None, None)
    assert to_response_format("text")[1] is None
    fmt = ResponseFormat("text")
    assert to_response_format(fmt) == (fmt, None)


def test_response_format_object_gets_a_matching_validator():
    fmt = ResponseFormat("json_schema", SCHEMA, "t", True)
    got, validate = to_response_format(fmt)
    assert got is fmt and validate('{"total": 3}') == {"total": 3}
    with pytest.raises(ValueError):
        validate('{"total": "x"}')
    assert to_response_format(ResponseFormat("json_object"))[1]('[1]') == [1]


@pytest.mark.parametrize(
    "value, match",
    [
        ("yaml", "unknown response_format"),
        (42, "cannot use int"),
        (dict, "cannot use type"),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "needs a 'schema'"),
        ({"type": "object", "properties": 5}, "not a valid JSON schema"),
    ],
)
def test_bad_formats(value, match):
    with pytest.raises(BadRequestError, match=match) as info:
        to_response_format(value)
    assert info.value.hint


# -- fences ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"a": 1}', '{"a": 1}'),
        ('  \n{"a": 1}\n ', '{"a": 1}'),
        ('```json\n{"a": 1}\n```', '{"a": 1}'),
        ('```JSON\n{"a": 1}```', '{"a": 1}'),
        ('```\n[1, 2]\n```\n', "[1, 2]"),
        ('Here is the JSON:\n```json\n{"a": 1}\n```\nHope it helps!', '{"a": 1}'),
        ('{"code": "```json\\n{}\\n```"}', '{"code": "```json\\n{}\\n```"}'),
        ("no json here", "no json here"),
    ],
)
def test_strip_fences(text, expected):
    assert strip_fences(text) == expected


# -- parse -----------------------------------------------------------------------------------


def test_parse_sets_parsed_for_each_kind():
    _, by_model = to_response_format(Item)
    _, by_schema = to_response_format(SCHEMA)
    _, by_json = to_response_format("json")
    fenced = '```json\n{"name": "tea", "price": 2, "total": 2}\n```'
    assert parse(reply(fenced), by_model).parsed == Item(name="tea", price=2.0)
    assert parse(reply(fenced), by_schema).parsed == {"name": "tea", "price": 2, "total": 2}
    assert parse(reply(fenced), by_json).parsed == {"name": "tea", "price": 2, "total": 2}
    response = reply("plain")
    assert parse(response, None) is response and response.parsed is None


@pytest.mark.parametrize(
    "fmt, text, message",
    [
        (Item, '{"name": "tea"}', "price: Field required"),
        (Item, '{"name": "tea", "price": "cheap"}', "price: Input should be a valid number"),
        (SCHEMA, '{"total": "x"}', "at total: 'x' is not of type 'number'"),
        (SCHEMA, "{}", "at (root): 'total' is a required property"),
        ("json", "not json", "the answer is not valid structured output"),
    ],
)
def test_invalid_answers_raise_with_the_raw_text(fmt, text, message):
    _, validate = to_response_format(fmt)
    response = reply(text)
    with pytest.raises(StructuredOutputError, match=re.escape(message)) as info:
        parse(response, validate)
    err = info.value
    assert isinstance(err, ModelportError) and err.status == 502
    assert err.text == text and err.response is response and isinstance(err.error, ValueError)
    assert err.provider == "p" and "schema" in err.hint
    assert "errors.pydantic.dev" not in str(err)


def test_cut_off_answer_blames_max_tokens():
    _, validate = to_response_format(Item)
    with pytest.raises(StructuredOutputError) as info:
        parse(reply('{"name": "te', finish_reason="length"), validate)
    assert "max_tokens" in info.value.hint and "length" in info.value.hint


def test_empty_answer_points_at_the_message():
    _, validate = to_response_format("json")
    with pytest.raises(StructuredOutputError) as info:
        parse(reply(""), validate)
    assert "empty" in info.value.hint


def test_modules_import_without_pydantic_or_jsonschema():
    code = "import sys, modelport.structured, modelport.tools; print(sorted(m for m in ('pydantic', 'jsonschema') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
