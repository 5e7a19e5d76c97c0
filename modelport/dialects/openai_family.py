"""What the OpenAI family of wire formats shares: chat completions (``openai``), Responses
(``openai_responses``) and, for tools and error statuses, Ollama (``ollama``).

Errors and retry hints, models and embeddings are the same on every OpenAI endpoint; so are
function tool definitions and the request decoders' small checks. Each dialect re-exports the
public functions its interface needs; no I/O here.
"""

from __future__ import annotations

import base64
import math
import os
import re
import sys
from array import array
from typing import Any, Mapping

from modelport.dialects import upstream_decoder
from modelport.errors import BadRequestError, ModelportError, QuotaExceededError, error_for_status
from modelport.jsonio import loads
from modelport.retry import parse_retry_after
from modelport.types import Embedding, EmbeddingResponse, ModelInfo, Tool, Usage

# A function tool's parameters when the caller gives none: a schema of no arguments.
DEFAULT_PARAMETERS = {"type": "object", "properties": {}}


def bad(param: str, problem: str, code: str = "invalid_type") -> BadRequestError:
    return BadRequestError(f"{param}: {problem}", param=param, code=code)


def optional(body: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = body.get(key)
    if value is None:
        return None
    # bool is an int in Python, never in JSON.
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise bad(key, f"expected {what}")
    return value


def new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def decode_metadata(raw: Any) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise bad("metadata", "expected an object of string values")
    return dict(raw) or None


def encode_tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = tool.parameters
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def decode_tools(raw: Any) -> list[Tool]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad("tools", "expected an array")
    tools = []
    for i, tool in enumerate(raw):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type", "function") != "function":
            raise bad(f"tools[{i}]", "expected a function tool {type: function, function: {name, parameters}}", "invalid_value")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise bad(f"tools[{i}].function.name", "expected a string", "missing_required_parameter")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise bad(f"tools[{i}].function.parameters", "expected a JSON Schema object")
        tools.append(
            Tool(name, function.get("description") or "", parameters or dict(DEFAULT_PARAMETERS), function.get("strict"))
        )
    return tools


# ---------------------------------------------------------------------------------------
# Errors and retry hints
# ---------------------------------------------------------------------------------------


def decode_error(status: int, body: Any, headers: Mapping[str, str] | None, provider: str) -> ModelportError:
    message, err_type, code, param, parsed = _parse_error_body(status, body)
    exc = error_for_status(
        status, message, code=code, provider=provider, param=param, retry_after=retry_after(headers, parsed), body=parsed
    )
    # OpenAI marks a spent quota in `type` with a null code sometimes; waiting will not help.
    if status == 429 and err_type == "insufficient_quota" and not isinstance(exc, QuotaExceededError):
        exc = QuotaExceededError(
            message, status=status, code=code, provider=provider, param=param, retry_after=exc.retry_after, body=parsed
        )
    return exc


def _parse_error_body(status: int, body: Any) -> tuple[str, str | None, str | None, str | None, Any]:
    """(message, type, code, param, parsed body) from whatever the server sent."""
    parsed = body
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            parsed = body = loads(body) if body.strip() else None
        except ValueError:
            text = body.strip()
            return (text[:1000] or f"HTTP {status}"), None, None, None, text
    if isinstance(body, dict):
        # {"error": {...}} from OpenAI and Groq, {"error": "..."} from Ollama, a bare object from vLLM
        error = body.get("error", body)
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail") or f"HTTP {status}"
            return str(message), error.get("type"), code_text(error.get("code")), error.get("param"), parsed
        if error:
            return str(error), None, None, None, parsed
    return f"HTTP {status}", None, None, None, parsed


def code_text(code: Any) -> str | None:
    # vLLM puts the HTTP status (an int) in `code`; only symbolic codes mean anything here.
    return code if isinstance(code, str) else None


_TRY_AGAIN = re.compile(r"try again in (?:(\d+)m)?(\d+(?:\.\d+)?)(ms|s)\b")


def retry_after(headers: Mapping[str, str] | None, body: Any = None) -> float | None:
    """Seconds to wait: ``retry-after-ms``, then ``retry-after`` (seconds or HTTP date),
    then the "Please try again in 1.5s" that OpenAI and Groq write in 429 messages."""
    delay = parse_retry_after(headers) if headers else None
    return delay if delay is not None else _retry_after_from_message(body)


def _retry_after_from_message(body: Any) -> float | None:
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    match = _TRY_AGAIN.search(message) if isinstance(message, str) else None
    if match is None:
        return None
    minutes, amount, unit = match.groups()
    seconds = float(amount) / (1000.0 if unit == "ms" else 1.0)
    return seconds + 60.0 * int(minutes or 0)


# kind -> (HTTP status, error.type, default error.code), as OpenAI's API spells each error.
_ERROR_SPELLING: dict[str, tuple[int, str, str | None]] = {
    "invalid_request": (400, "invalid_request_error", None),
    "context_length": (400, "invalid_request_error", "context_length_exceeded"),
    "authentication": (401, "invalid_request_error", "invalid_api_key"),
    "permission": (403, "permission_error", None),
    "not_found": (404, "invalid_request_error", "model_not_found"),
    "request_too_large": (413, "invalid_request_error", "request_too_large"),
    "rate_limit": (429, "requests", "rate_limit_exceeded"),
    "quota": (429, "insufficient_quota", "insufficient_quota"),
    "server": (500, "server_error", None),
    "overloaded": (503, "server_error", "overloaded"),
    "unavailable": (503, "server_error", "service_unavailable"),
    "timeout": (504, "server_error", "timeout"),
    "connection": (502, "server_error", "upstream_unreachable"),
}


def encode_error(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(HTTP status, OpenAI error body, headers) for any exception the gateway meets."""
    if not isinstance(exc, ModelportError):
        body = {"error": {"message": f"internal error: {type(exc).__name__}: {exc}", "type": "server_error", "param": None, "code": None}}
        return 500, body, {}
    status, err_type, default_code = _ERROR_SPELLING.get(exc.kind, _ERROR_SPELLING["server"])
    # A specific upstream status (409, 422, 502...) says more than the family default,
    # but only within the family: Anthropic's 529 must reach OpenAI callers as 503.
    if exc.kind in ("invalid_request", "server") and status // 100 == exc.status // 100:
        status = exc.status
    message = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
    body = {"error": {"message": message, "type": err_type, "param": exc.param, "code": exc.code or default_code}}
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["retry-after"] = str(math.ceil(exc.retry_after))
        headers["retry-after-ms"] = str(int(exc.retry_after * 1000))
    if isinstance(exc, QuotaExceededError):
        headers["x-should-retry"] = "false"
    return status, body, headers


# ---------------------------------------------------------------------------------------
# Models and embeddings (gateway and client helpers)
# ---------------------------------------------------------------------------------------


def encode_models(models: list[ModelInfo]) -> dict[str, Any]:
    data = []
    for info in models:
        item: dict[str, Any] = {"id": info.id, "object": "model", "created": 0, "owned_by": info.owned_by or info.provider}
        if info.context_length:
            item["context_length"] = info.context_length
        data.append(item)
    return {"object": "list", "data": data}


def decode_models(body: dict[str, Any], provider: str) -> list[ModelInfo]:
    models = []
    for item in body.get("data") or ():
        context = item.get("context_length") or item.get("max_model_len") or item.get("context_window")
        models.append(ModelInfo(item["id"], provider, item.get("owned_by") or "", context if isinstance(context, int) else None))
    return models


def encode_embeddings_request(inputs: list[str], model_id: str, dimensions: int | None = None) -> tuple[str, dict[str, Any]]:
    """The path and body, as every dialect returns them (Gemini's path names the model)."""
    # float, not base64: not every compatible server implements base64.
    body: dict[str, Any] = {"model": model_id, "input": list(inputs), "encoding_format": "float"}
    if dimensions is not None:
        body["dimensions"] = dimensions
    return "/embeddings", body


@upstream_decoder
def decode_embeddings_response(body: dict[str, Any], provider: str) -> EmbeddingResponse:
    data = [
        Embedding(item.get("index", i), _decode_vector(item.get("embedding")))
        for i, item in enumerate(body.get("data") or ())
    ]
    data.sort(key=lambda e: e.index)
    usage = body.get("usage") or {}
    return EmbeddingResponse(
        model=body.get("model") or "", data=data, usage=Usage(input_tokens=usage.get("prompt_tokens") or 0), provider=provider
    )


def _decode_vector(value: Any) -> list[float]:
    if isinstance(value, str):
        floats = array("f")
        floats.frombytes(base64.b64decode(value))
        if sys.byteorder == "big":
            floats.byteswap()
        return floats.tolist()
    return list(value or ())


def _encode_vector(vector: list[float]) -> str:
    floats = array("f", vector)
    if sys.byteorder == "big":
        floats.byteswap()
    return base64.b64encode(floats.tobytes()).decode("ascii")


def decode_embeddings_request(body: Any) -> tuple[str, list[str], str]:
    """(model, inputs, encoding_format) of an incoming embeddings body."""
    if not isinstance(body, dict):
        raise bad("body", "expected a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("model", "required", "missing_required_parameter")
    raw = body.get("input")
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(s, str) for s in raw):
        inputs = list(raw)
    else:
        raise bad("input", "expected a string or a non-empty array of strings (token arrays are not supported)")
    encoding_format = body.get("encoding_format") or "float"
    if encoding_format not in ("float", "base64"):
        raise bad("encoding_format", "expected float or base64", "invalid_value")
    return model, inputs, encoding_format


def encode_embeddings_response(resp: EmbeddingResponse, encoding_format: str = "float") -> dict[str, Any]:
    encode = _encode_vector if encoding_format == "base64" else list
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": e.index, "embedding": encode(e.vector)} for e in resp.data],
        "model": resp.model,
        "usage": {"prompt_tokens": resp.usage.input_tokens, "total_tokens": resp.usage.input_tokens},
    }
