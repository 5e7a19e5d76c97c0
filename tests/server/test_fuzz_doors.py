"""A fuzz run over every door of the gateway (#9): Anthropic Messages and token counting,
Gemini generateContent/streamGenerateContent/countTokens/embedContent, the Files and
Batches API, the Ollama API (chat, generate, embed), the Responses API and the console's
API. Bodies are drawn from the providers' own OpenAPI specs where there is one, else from
a valid request of each endpoint (so most are nearly valid and get deep into the
decoders), then damaged; none may be answered with a 5xx other than 502/503/504, the
statuses of upstream conditions. (The OpenAI door has its own spec-driven fuzz in
test_gateway_robustness.py.)

The specs live outside the repository (``MODELPORT_SPECS_DIR``, else ``shared/specs`` beside
it or beside the directory of worktrees); without them the spec-driven runs are skipped. Runs are bounded in examples.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelport.server import Settings
from modelport.server.testing import GatewayThread
from tests.fakes.anthropic_upstream import AnthropicUpstream
from tests.fakes.gemini_upstream import GeminiUpstream
from tests.fakes.openai_upstream import OpenAIUpstream
from tests.paths import ROOT

# MODELPORT_SPECS_DIR wins (as on main's tests/specs.py); else shared/specs beside the checkout,
# or beside the directory of worktrees.
_CANDIDATES = [Path(os.environ["MODELPORT_SPECS_DIR"])] if os.environ.get("MODELPORT_SPECS_DIR") else [
    ROOT.parent / "shared/specs", ROOT.parent.parent / "shared/specs"]
SPECS = next((p for p in _CANDIDATES if p.is_dir()), None)
UPSTREAM_STATUSES = (502, 503, 504)
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large, HealthCheck.filter_too_much])


def _load(relative: str) -> dict[str, Any] | None:
    if SPECS is None or not (SPECS / relative).exists():
        return None
    text = (SPECS / relative).read_text(encoding="utf-8")
    return json.loads(text) if relative.endswith(".json") else yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


ANTHROPIC = _load("anthropic/openapi.yaml")
GEMINI = _load("gemini/openapi.json")
needs_specs = pytest.mark.skipif(ANTHROPIC is None or GEMINI is None, reason="the provider specs are not checked out beside the repo")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    with OpenAIUpstream() as oa, AnthropicUpstream() as an, GeminiUpstream() as gm:
        config = {
            "aliases": {"oa": "openai/gpt-fake", "an": "anthropic/claude-fake", "gm": "gemini/gemini-fake"},
            "providers": {"openai": {"base_url": oa.base_url}, "anthropic": {"base_url": an.base_url},
                          "gemini": {"base_url": gm.base_url_for("v1beta")}},
        }
        settings_ = Settings(log_calls=False, max_tokens=64, batch_dir=str(tmp_path_factory.mktemp("batches")),
                             keys_path=str(tmp_path_factory.mktemp("k") / "g.db"))
        keys = {"openai": "sk-oa-0123456789", "anthropic": "sk-ant-0123456789", "gemini": "g-0123456789abcdef"}
        with GatewayThread(settings_, config=config, api_keys=keys) as gw:
            yield gw


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500 or response.status_code in UPSTREAM_STATUSES, (response.status_code, response.text[:500])
    assert response.headers.get("x-request-id")


# -- strategies: JSON values, and values drawn from an OpenAPI schema ---------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


class SchemaStrategies:
    """Hypothesis strategies for the schemas of one spec, bounded in depth (past ``depth``
    an object or array is drawn empty) and memoised per (schema, depth)."""

    def __init__(self, spec: dict[str, Any], depth: int = 5) -> None:
        self.schemas = spec["components"]["schemas"]
        self.depth = depth
        self._memo: dict[tuple[int, int], st.SearchStrategy[Any]] = {}

    def named(self, name: str) -> st.SearchStrategy[Any]:
        return self.of(self.schemas[name], 0)

    def of(self, schema: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
        key = (id(schema), depth)
        if key not in self._memo:
            self._memo[key] = st.deferred(lambda: self._build(schema, depth))
        return self._memo[key]

    def _build(self, schema: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
        if "$ref" in schema:
            return self.of(self.schemas[schema["$ref"].rsplit("/", 1)[1]], depth)
        if "const" in schema:
            return st.just(schema["const"])
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        for combinator in ("anyOf", "oneOf"):
            if combinator in schema:
                return st.one_of([self.of(s, depth) for s in schema[combinator]])
        if "allOf" in schema and "properties" not in schema:
            return self.of(schema["allOf"][0], depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "string":
            return st.text(max_size=16)
        if kind == "integer":
            return st.integers(-3, 3000) | st.sampled_from([0, 1, 2**31, -(2**63)])
        if kind == "number":
            return st.floats(-3, 3, allow_nan=False)
        if kind == "boolean":
            return st.booleans()
        if kind == "null":
            return st.none()
        if kind == "array" or "items" in schema:
            if depth >= self.depth:
                return st.just([])
            return st.lists(self.of(schema.get("items", {}), depth + 1), max_size=2)
        properties = schema.get("properties")
        if properties is not None or kind == "object":
            if depth >= self.depth or not properties:
                return st.just({})
            required = [n for n in schema.get("required", []) if n in properties]
            optional = [n for n in properties if n not in required]
            return st.fixed_dictionaries({n: self.of(properties[n], depth + 1) for n in required},
                                         optional={n: self.of(properties[n], depth + 1) for n in optional})
        return json_values


def _slots(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) in a JSON value, at any depth: the places damage can go."""
    slots: list[tuple[Any, Any]] = []
    stack = [value]
    while stack:
        item = stack.pop()
        keys = list(item) if isinstance(item, dict) else range(len(item)) if isinstance(item, list) else ()
        for key in keys:
            slots.append((item, key))
            stack.append(item[key])
    return slots


@st.composite
def damaged(draw: st.DrawFn, valid: st.SearchStrategy[Any], names: list[str]) -> Any:
    """A body from the spec, then often damaged: top-level fields replaced or removed, or a
    value anywhere inside (a part's ``text``, a block's ``input``) replaced by any JSON value;
    sometimes no object at all."""
    roll = draw(st.integers(0, 9))
    if roll == 0:
        return draw(json_values)
    body = draw(valid)
    if roll >= 7 and isinstance(body, dict):
        for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3)):
            if draw(st.booleans()):
                body.pop(name, None)
            else:
                body[name] = draw(json_values)
    elif roll >= 3 and (slots := _slots(body)):
        for _ in range(draw(st.integers(1, 3))):
            container, key = slots[draw(st.integers(0, len(slots) - 1))]
            container[key] = draw(json_values)
    return body


# -- the Anthropic door -------------------------------------------------------------------------------------


def _anthropic_bodies() -> st.SearchStrategy[Any]:
    strategies = SchemaStrategies(ANTHROPIC)  # type: ignore[arg-type]
    schema = ANTHROPIC["components"]["schemas"]["CreateMessageParams"]  # type: ignore[index]

    @st.composite
    def bodies(draw: st.DrawFn) -> Any:
        body = draw(damaged(strategies.named("CreateMessageParams"), list(schema["properties"])))
        if isinstance(body, dict) and draw(st.integers(0, 3)) > 0:
            body["model"] = draw(st.sampled_from(["an", "gm", "oa"]))  # routable, so the call reaches an upstream
            body.pop("stream", None) if draw(st.booleans()) else None
        return body

    return bodies()


@needs_specs
@FUZZ
@given(data=st.data())
def test_fuzzed_anthropic_door_never_gets_a_500(gateway: GatewayThread, data: st.DataObject) -> None:
    body = data.draw(_anthropic_bodies())
    path = data.draw(st.sampled_from(["/v1/messages", "/v1/messages/count_tokens"]))
    _check(httpx.post(gateway.url + path, content=json.dumps(body), timeout=30))


# -- the Gemini door --------------------------------------------------------------------------------------


def _gemini_bodies(schema_name: str) -> st.SearchStrategy[Any]:
    strategies = SchemaStrategies(GEMINI)  # type: ignore[arg-type]
    schema = GEMINI["components"]["schemas"][schema_name]  # type: ignore[index]
    return damaged(strategies.named(schema_name), list(schema["properties"]))


GEMINI_METHODS = {
    "generateContent": "GenerateContentRequest",
    "streamGenerateContent?alt=sse": "GenerateContentRequest",
    "streamGenerateContent": "GenerateContentRequest",
    "countTokens": "CountTokensRequest",
    "embedContent": "EmbedContentRequest",
    "batchEmbedContents": "BatchEmbedContentsRequest",
}


@needs_specs
@FUZZ
@given(data=st.data())
def test_fuzzed_gemini_door_never_gets_a_500(gateway: GatewayThread, data: st.DataObject) -> None:
    method = data.draw(st.sampled_from(sorted(GEMINI_METHODS)))
    model = data.draw(st.sampled_from(["gm", "an", "oa"]))
    body = data.draw(_gemini_bodies(GEMINI_METHODS[method]))
    _check(httpx.post(f"{gateway.url}/v1beta/models/{model}:{method}", content=json.dumps(body), timeout=30))


# -- Files and Batches --------------------------------------------------------------------------------------

query_values = st.text(max_size=12) | st.integers(-5, 10**12).map(str) | st.sampled_from(["", "0", "1", "asc", "desc", "batch", "file-0"])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    # Weighted towards the listings, whose query parameters are the most to parse.
    method=st.sampled_from(["GET", "GET", "GET", "POST", "DELETE", "PUT"]),
    path=st.sampled_from(["/v1/files", "/v1/batches"] * 3 + ["/v1/files/file-0a", "/v1/files/x/content", "/v1/batches/batch_x",
                                                            "/v1/batches/batch_x/cancel", "/v1/files/%2e%2e", "/v1/batches/b/results"]),
    query=st.dictionaries(st.sampled_from(["limit", "after", "order", "purpose"]), query_values, max_size=3),
    body=json_values,
)
def test_fuzzed_files_and_batches_requests_never_get_a_500(gateway: GatewayThread, method: str, path: str, query: dict[str, str], body: Any) -> None:
    _check(httpx.request(method, gateway.url + path, params=query, content=json.dumps(body), timeout=30))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(purpose=st.binary(max_size=12) | st.sampled_from([b"batch", b"fine-tune"]), content=st.binary(max_size=300),
       filename=st.text(max_size=20), create=json_values)
def test_fuzzed_uploads_and_batch_creation_never_get_a_500(gateway: GatewayThread, purpose: bytes, content: bytes, filename: str,
                                                           create: Any) -> None:
    boundary = "fuzzb0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n").encode() + purpose + (
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{json.dumps(filename)[1:-1]}\"\r\n"
        f"Content-Type: application/jsonl\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    uploaded = httpx.post(gateway.url + "/v1/files", content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"}, timeout=30)
    _check(uploaded)
    if isinstance(create, dict) and uploaded.status_code == 200:
        create.setdefault("input_file_id", uploaded.json()["id"])
    _check(httpx.post(gateway.url + "/v1/batches", content=json.dumps(create), timeout=30))


# -- the Ollama and Responses doors, the console's API -----------------------------------------------------
# No spec in the checkout describes them: one valid request of each endpoint, damaged.

HI = [{"role": "user", "content": "hi"}]
VALID_BODIES: dict[str, dict[str, Any]] = {
    "/api/chat": {"model": "oa", "messages": HI, "stream": False, "options": {"num_predict": 5, "temperature": 0},
                  "format": {"type": "object"}, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
                  "keep_alive": "5m", "think": False},
    "/api/generate": {"model": "oa", "prompt": "hi", "system": "be brief", "stream": False, "raw": False,
                      "options": {"num_predict": 5, "stop": ["."]}, "images": [], "format": "json", "suffix": ""},
    "/api/embed": {"model": "oa", "input": ["hi", "there"], "truncate": True, "options": {}},
    "/v1/responses": {"model": "oa", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
                      "instructions": "be brief", "max_output_tokens": 5, "stream": False, "store": True,
                      "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
                      "text": {"format": {"type": "text"}}, "reasoning": {"effort": "low"}, "metadata": {"a": "b"}},
    "/ui/api/keys": {"name": "fuzzed", "rpm": 5, "tpm": 1000, "budget": 1.5, "models": ["oa"], "admin": False},
    "/ui/api/batches/estimate": {"filename": "rows.csv", "content": "q\nhi\n", "prompt": "Say {q}", "model": "oa",
                                 "system": "s", "max_tokens": 5},
}
CONSOLE = {"x-modelport-console": "1"}


@FUZZ
@given(data=st.data())
def test_fuzzed_ollama_responses_and_console_requests_never_get_a_500(gateway: GatewayThread, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(sorted(VALID_BODIES)))
    valid = VALID_BODIES[path]
    body = data.draw(damaged(st.just(valid).map(copy.deepcopy), list(valid)))
    headers = CONSOLE if path.startswith("/ui/") else {}
    _check(httpx.post(gateway.url + path, content=json.dumps(body), headers=headers, timeout=30))
