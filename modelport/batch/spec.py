"""What a batch job is: its spec (stored in the journal, so ``resume`` needs nothing else),
how each row becomes a ChatRequest, and token/cost estimates."""

from __future__ import annotations

import secrets
import string
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import dialects
from ..errors import BadRequestError, ModelportError
from ..prompt_cache import breakpoints_for, has_breakpoints, mark_stable_prefix
from ..types import ChatRequest, Message, Part, ResponseFormat, TextPart

if TYPE_CHECKING:
    from .seams import BatchClient

# Output tokens assumed per row when max_tokens is not set and nothing has been answered yet.
DEFAULT_OUTPUT_ESTIMATE = 256
# Characters per token for estimates made without the provider's tokenizer.
CHARS_PER_TOKEN = 4


@dataclass
class JobSpec:
    job_id: str
    model: str | None = None
    prompt: str | None = None
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    schema: dict[str, Any] | None = None
    input: str | None = None
    input_format: str = "jsonl"
    output: str | None = None
    output_format: str | None = None
    concurrency: int = 32
    rpm: float | None = None
    tpm: float | None = None
    max_cost: float | None = None
    cache: bool = False
    # Mark the prefix every row shares (tools, system prompt, the template's text before its
    # first field) as a prompt-cache breakpoint, on providers that take breakpoints.
    cache_prefix: bool = True
    max_retries: int = 6
    timeout: float = 120.0
    mode: str = "live"
    created: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def new_job_id() -> str:
    return time.strftime("b%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def jobs_dir() -> Path:
    from ..config import data_dir

    return data_dir() / "batch"


def journal_path(job_id: str) -> Path:
    return jobs_dir() / f"{job_id}.db"


class Renderer:
    """Turns rows into requests. Built once per job: the parameters are checked up front by
    the client's own request builder, then each row only swaps in its messages."""

    def __init__(self, spec: JobSpec, client: BatchClient) -> None:
        self.spec = spec
        self.client = client
        self.openai_format = spec.input_format == "openai"
        self._base: ChatRequest | None = None
        self._breakpoints: dict[str, int] = {}
        if not self.openai_format:
            self._base = client.request(spec.model, "-", system=spec.system, **dict(spec.params))
            if spec.schema is not None:
                self._base.response_format = _response_format(spec.schema)

    def __call__(self, data: Any) -> ChatRequest:
        if self.openai_format:
            return self._shared_prefix_marked(self._openai_line(data), None)
        assert self._base is not None
        if isinstance(data, dict) and "messages" in data and self.spec.prompt is None:
            messages = self.client.request(self.spec.model, None, system=self.spec.system, messages=data["messages"]).messages
            return self._shared_prefix_marked(replace(self._base, messages=messages), None)
        text = self.render_text(data)
        head = self._base.messages[:-1]
        return self._shared_prefix_marked(replace(self._base, messages=[*head, Message.user(text)]), self._template_head())

    def _template_head(self) -> str | None:
        """The template's literal text before its first field: the same in every row."""
        if self.spec.prompt is None:
            return None
        head = next(iter(string.Formatter().parse(self.spec.prompt)), ("", None))[0]
        return head or None

    def _shared_prefix_marked(self, request: ChatRequest, head: str | None) -> ChatRequest:
        """The row with breakpoints on what every row shares, when the job caches its prefix,
        the provider takes breakpoints and the row has none of its own: the first row writes
        the cache, the others read it."""
        if not self.spec.cache_prefix or has_breakpoints(request):
            return request
        limit = self._breakpoints_of(request.model)
        last = request.messages[-1]
        split = head is not None and limit > 0 and last.role == "user" and last.text.startswith(head)
        request = mark_stable_prefix(request, limit - 1 if split else limit, turns=False) if limit else request
        if split:
            assert head is not None
            rest = last.text[len(head):]
            parts: list[Part] = [TextPart(head, cache=True), *([TextPart(rest)] if rest else [])]
            request.messages = [*request.messages[:-1], Message("user", parts)]
        return request

    def _breakpoints_of(self, model: str) -> int:
        if model not in self._breakpoints:
            try:
                provider, model_id = self.client.resolve(model)
            except ModelportError:
                return 0  # the row fails on its own when it is sent
            self._breakpoints[model] = breakpoints_for(dialects.get(provider.dialect_for(model_id)))
        return self._breakpoints[model]

    def render_text(self, data: Any) -> str:
        template = self.spec.prompt
        if template is None:
            if isinstance(data, str):
                return data
            if isinstance(data, dict) and isinstance(data.get("prompt"), str):
                return data["prompt"]
            raise BadRequestError("row has no prompt", hint='give --prompt "template with {column}", or rows with a "prompt" field')
        if isinstance(data, dict):
            try:
                return template.format_map(data)
            except KeyError as exc:
                raise BadRequestError(f"the prompt template needs {{{exc.args[0]}}} but the row has no such field",
                                      param=str(exc.args[0]), hint=f"columns in this row: {', '.join(map(str, data))}") from None
            except (IndexError, ValueError) as exc:
                raise BadRequestError(f"bad prompt template: {exc}", hint="write fields as {column}; double braces {{ }} for literal ones") from None
        return template.format(data)

    def _openai_line(self, line: dict[str, Any]) -> ChatRequest:
        from ..dialects import openai as dialect

        url = line.get("url", "/v1/chat/completions")
        if url != "/v1/chat/completions":
            raise BadRequestError(f"batch line url {url!r} is not supported; only /v1/chat/completions", param="url")
        request = dialect.decode_request(line["body"])
        request.stream = False
        if self.spec.model:
            request.model = self.spec.model
        if self.spec.system is not None:
            request.messages = [Message.system(self.spec.system), *(m for m in request.messages if m.role != "system")]
        return request


def _response_format(schema: dict[str, Any]) -> ResponseFormat:
    name = schema.get("title") if isinstance(schema.get("title"), str) else "output"
    return ResponseFormat("json_schema", schema, name, True)


def estimate_input_tokens(request: ChatRequest) -> int:
    chars = sum(len(m.text) for m in request.messages)
    for m in request.messages:
        chars += sum(len(c.arguments) for c in m.tool_calls)
    return max(1, chars // CHARS_PER_TOKEN + 4 * len(request.messages))


def cached_prefix_tokens(request: ChatRequest) -> int:
    """Estimated tokens of the prompt up to its last breakpoint (0 with none), counted as
    ``estimate_input_tokens`` counts: the text of the messages, in order."""
    chars = upto = 0
    for message in request.messages:
        for part in message.content:
            if isinstance(part, TextPart):
                chars += len(part.text)
                if part.cache:
                    upto = chars
    return upto // CHARS_PER_TOKEN
