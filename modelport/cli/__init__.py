"""The `modelport` command. Subcommands live in their own modules and load only when used,
so `modelport --help` and `modelport ask` start fast."""

from __future__ import annotations

import warnings
from typing import Any

import click

from .. import plugins


class PluginGroup(click.Group):
    """Subcommands are the entries of the modelport.commands group, modelport's own and any
    plugin's alike; each is imported only when run or described."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        # A plugin that cannot be used is news for the person at the shell, not a stack
        # position: its warning prints as one line (the rest keep Python's format).
        default = warnings.formatwarning

        def one_line(message: Any, category: type[Warning], *where: Any, **more: Any) -> str:
            if issubclass(category, plugins.PluginWarning):
                return f"Warning: {message}\n"
            return default(message, category, *where, **more)

        warnings.formatwarning = one_line
        try:
            return super().main(*args, **kwargs)
        finally:
            warnings.formatwarning = default

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(plugins.names(plugins.COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        try:
            return plugins.load(plugins.COMMANDS, name, as_command)
        except plugins.PluginError:
            # Unknown: click says so. Broken: the load warned naming the plugin, and the
            # other commands (and --help) still work.
            return None

    def invoke(self, ctx: click.Context) -> object:
        from .common import usage_errors_as_json

        with usage_errors_as_json([*ctx.args, *getattr(ctx, "_protected_args", ())]):
            return super().invoke(ctx)


def as_command(name: str, obj: object) -> click.Command:
    """A modelport.commands entry's object, checked: it must be a click command or group."""
    if not isinstance(obj, click.Command):
        raise TypeError(f"points to {type(obj).__name__}, not a click command (decorate it with @click.command())")
    return obj


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="modelport")
def main() -> None:
    """modelport: one way to use LLMs from OpenAI, Anthropic, Gemini, Groq, LM Studio,
    Ollama, vLLM and an embedded model that needs no key and no network.

    \b
    Start here:
      modelport ask "What is a REST API?"        answer from the embedded model
      modelport ask -m openai/gpt-4o-mini "Hi"   any provider/model
      modelport models                           what you can use, and which keys are set
      modelport plugins                          installed plugins, and where each came from
    """
