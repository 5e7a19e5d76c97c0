"""Structured output: what the caller asked for as a ResponseFormat, and the answer checked.

``to_response_format`` accepts a pydantic model class, a JSON schema (raw or in OpenAI's
wrapper), ``{"type": "json_object"}``, ``"json"``, a ResponseFormat or None, and returns the
canonical format plus a validator that turns the answer text into a value. ``parse`` runs
the validator and raises StructuredOutputError with the raw text when the answer is wrong.
pydantic and jsonschema are imported only inside these functions.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Callable

from . import jsonio
from .errors import BadRequestError, StructuredOutputError
from .types import ChatResponse, ResponseFormat

__all__ = ["parse", "strip_fences", "to_response_format"]

Validator = Callable[[str], Any]

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_FENCE = re.compile(r"```[A-Za-z]*[ \t]*\n?(.*?)\n?[ \t]*```", re.S)
_HINT = (
    "pass a pydantic model class, a JSON schema dict, "
    '{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}, {"type": "json_object"} or "json"'
)


def strip_fences(text: str) -> str:
    """The JSON inside a ```json fence (small models add them, often after a sentence)."""
    stripped = text.strip()
    if stripped[:1] in ("{", "["):  # already bare: a fence inside a JSON string must stay
        return stripped
    match = _FENCE.search(stripped)
    return match.group(1).strip() if match else stripped


def to_response_format(value: Any) -> tuple[ResponseFormat | None, Validator | None]:
    """The canonical response format, and the function that parses and checks the answer."""
    if value is None:
        return None, None
    if isinstance(value, ResponseFormat):
        return value, _validator(value)
    if isinstance(value, str):
        if value in ("json", "json_object"):
            return ResponseFormat("json_object"), _load_json
        if value == "text":
            return ResponseFormat("text"), None
        raise BadRequestError(f"unknown response_format {value!r}", hint=_HINT)
    if isinstance(value, dict):
        fmt = _from_dict(value)
        return fmt, _validator(fmt)
    pydantic = sys.modules.get("pydantic")  # a pydantic class means pydantic is imported already
    if pydantic is not None and isinstance(value, type) and issubclass(value, pydantic.BaseModel):
        return _from_model(value)
    raise BadRequestError(f"cannot use {type(value).__name__} {value!r:.60} as response_format", hint=_HINT)


def _from_dict(value: dict[str, Any]) -> ResponseFormat:
    kind = value.get("type")
    if kind == "json_schema" and "json_schema" in value:
        spec = value["json_schema"]
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise BadRequestError("response_format json_schema needs a 'schema' object", hint=_HINT)
        return ResponseFormat("json_schema", spec["schema"], _name(spec.get("name")), spec.get("strict"))
    if kind in ("json_object", "text"):
        return ResponseFormat(kind)
    # Anything else is a JSON schema itself ("type" is then object, array, ... never a mode).
    return ResponseFormat("json_schema", value, _name(value.get("title")))


def _name(candidate: Any) -> str:
    """OpenAI requires a schema name; the others have nowhere to put one, so any valid one does."""
    return candidate if isinstance(candidate, str) and _NAME.match(candidate) else "response"


def _from_model(model: type) -> tuple[ResponseFormat, Validator]:
    schema = model.model_json_schema()  # type: ignore[attr-defined]
    strict = _close(schema)

    def validate(text: str) -> Any:
        return model.model_validate_json(strip_fences(text))  # type: ignore[attr-defined]

    return ResponseFormat("json_schema", schema, _name(model.__name__), True if strict else None), validate


# -- OpenAI strict mode --------------------------------------------------------------------


def _close(schema: dict[str, Any]) -> bool:
    """Bring a pydantic schema toward OpenAI strict mode without changing what parses.

    Every object gets ``additionalProperties: false`` (pydantic ignores extra keys anyway)
    and every optional property whose default is None and that accepts null becomes
    required (sending null parses to the same value). True when every object ended up
    closed and fully required, i.e. strict mode can be asked for.
    """
    ok = True
    if "properties" in schema:
        extra = schema.setdefault("additionalProperties", False)
        ok = extra is False
        required = schema.setdefault("required", [])
        for name, prop in schema["properties"].items():
            if name in required:
                continue
            if "default" in prop and prop["default"] is None and _accepts_null(prop):
                del prop["default"]
                required.append(name)
            else:
                ok = False  # a real default: requiring it would change the answer's meaning
    elif schema.get("type") == "object":
        ok = False  # a free-form mapping (dict[str, X]) has no strict-mode form
    for child in _subschemas(schema):
        ok = _close(child) and ok
    return ok


def _accepts_null(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(_accepts_null(s) for s in schema.get("anyOf", ()) if isinstance(s, dict))


def _subschemas(schema: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[Any] = []  # what the keywords hold, None and booleans too, of which the schemas are kept
    for key in ("properties", "$defs", "definitions"):
        out.extend(schema.get(key, {}).values())
    for key in ("items", "additionalProperties", "not"):
        out.append(schema.get(key))
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        out.extend(schema.get(key, ()))
    return [s for s in out if isinstance(s, dict)]


# -- validators -------------------------------------------------------------------------------


def _validator(fmt: ResponseFormat) -> Validator | None:
    if fmt.type == "text":
        return None
    if fmt.type == "json_schema" and fmt.schema is not None:
        return _schema_validator(fmt.schema)
    return _load_json


def _load_json(text: str) -> Any:
    return jsonio.loads(strip_fences(text))


def _schema_validator(schema: dict[str, Any]) -> Validator:
    """Checks the schema now (before a model call is spent on it) and answers against it later."""
    from .extras import require

    jsonschema = require("jsonschema", "validating answers against a JSON schema")
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise BadRequestError(f"response_format is not a valid JSON schema: {exc.message}", hint=_HINT) from None
    checker = cls(schema)

    def validate(text: str) -> Any:
        value = _load_json(text)
        error = jsonschema.exceptions.best_match(checker.iter_errors(value))
        if error is not None:  # ValueError, like pydantic's and json's, so parse() catches one kind
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise ValueError(f"at {where}: {error.message}")
        return value

    return validate


# -- parsing ---------------------------------------------------------------------------------


def parse(response: ChatResponse, validator: Validator | None) -> ChatResponse:
    """Set ``response.parsed`` from its text, or raise StructuredOutputError saying why not."""
    if validator is None:
        return response
    text = response.text
    try:
        response.parsed = validator(text)
    except ValueError as exc:
        if response.finish_reason == "length":
            hint = "finish_reason is 'length': max_tokens cut the JSON off; raise max_tokens"
        elif not text.strip():
            hint = "the answer is empty (a refusal, or only tool calls); check response.message"
        else:
            hint = "the model did not follow the schema; use strict mode or a model that supports structured output, or retry"
        raise StructuredOutputError(
            f"the answer is not valid structured output: {explain_error(exc)}",
            text=text, error=exc, response=response, provider=response.provider or None, hint=hint,
        ) from exc
    return response


def explain_error(exc: ValueError) -> str:
    """pydantic's errors without documentation links, one line each."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" if err.get("loc") else err["msg"] for err in errors()
    )
