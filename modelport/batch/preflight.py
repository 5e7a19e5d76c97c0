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


def _line_model(row: Any) -> str | None:
    body = row.get("body") if isinstance(row, dict) else None
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None
