"""Checks a batch job passes before its first request: everything that would otherwise fail
only after every row was sent and paid for (a Parquet output without pyarrow), or after
the job was created (an engine or mode that cannot run it). Each failure is one ConfigError
naming the fix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..extras import require
from ..errors import ConfigError, ModelportError
from .spec import JobSpec

if TYPE_CHECKING:
    from .seams import BatchClient

# What reading or writing each file format needs: (module, what for).
FORMAT_NEEDS: dict[str, tuple[str, str]] = {"parquet": ("pyarrow.parquet", "reading or writing Parquet")}
ENGINE_NEEDS: dict[str, tuple[str, str]] = {"ray": ("ray", "--engine ray")}


def check(spec: JobSpec, *, engine: str = "local", client: BatchClient | None = None, first_row: Any = None) -> None:
    """Raise ConfigError if the job cannot run to its end as specified.

    ``first_row``: the first input row, for the model of OpenAI batch-format lines when
    the spec names none."""
    for fmt in (spec.input_format, spec.output_format):
        if fmt in FORMAT_NEEDS:
            require(*FORMAT_NEEDS[fmt])
    if engine in ENGINE_NEEDS:
        require(*ENGINE_NEEDS[engine])
        if spec.mode != "live":
            raise ConfigError(f"--engine {engine} runs live jobs only",
                              hint="native batches already run on the provider's side: use --engine local")
    if spec.mode == "native" and client is not None:
        _check_native(spec, client, first_row)


def check_prompt(spec: JobSpec, row: Any) -> None:
    """Every row of a file has the first row's columns, so a template field that is not one of
    them (a typo: ``{txt}`` for ``{text}``), or rows with no prompt and no --prompt, would fail
    every row after each was sent for nothing: refuse the job with the columns it has."""
    if not isinstance(row, dict):
        return
    columns = [str(c) for c in row]
    shown = ", ".join(columns) or "(none)"
    if spec.prompt is None:
        if isinstance(row.get("prompt"), str) or "messages" in row:
            return
        example = next((c for c in columns if c != "id"), "text")
        raise ConfigError(f"no --prompt, and the rows have no prompt column: the columns are {shown}",
                          hint=f'give a template filled from the columns, e.g. --prompt "Summarise: {{{example}}}"')
    import difflib
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(spec.prompt) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"--prompt is not a valid template: {exc}",
                          hint="write fields as {column}; double braces {{ }} for literal ones") from None
    for field in fields:
        name = field.split(".", 1)[0].split("[", 1)[0]
        if name not in row:
            close = difflib.get_close_matches(name, columns, n=1)
            raise ConfigError(f"--prompt uses {{{field}}}, but the columns are {shown}",
                              hint=(f"did you mean {{{close[0]}}}? " if close else "")
                              + "fields in {braces} are filled from each row's columns; double braces {{ }} for literal ones")


def _check_native(spec: JobSpec, client: BatchClient, first_row: Any) -> None:
    from .native import native_adapter_class

    model = spec.model or _line_model(first_row)
    if model is None:
        return
    try:
        provider, _ = client.resolve(model)
    except ModelportError:
        return  # an unknown model is reported by the run itself, with its own hint
    native_adapter_class(provider)


def check_file_job(spec: JobSpec, client: Any, first_row: Any) -> None:
    """What fails every row of a job read from a file the same way, checked before the job
    is created (the CLI's ``batch run``): a prompt template the columns cannot fill, and a
    model that is unknown or has no key. The SDK and the gateway take rows that may differ,
    and report such rows one by one."""
    if spec.input_format != "openai" and first_row is not None:
        check_prompt(spec, first_row)
    model = spec.model or _line_model(first_row)
    if model is None:
        return
    provider, _ = client.resolve(model)  # an unknown model is as fatal: its error names the fix
    require = getattr(client.backend(provider), "require_key", None)
    if require is not None:
        require()


def _line_model(row: Any) -> str | None:
    body = row.get("body") if isinstance(row, dict) else None
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None
