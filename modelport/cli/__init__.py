"""The `modelport` command. Subcommands live in their own modules and load only when used,
so `modelport --help` and `modelport ask` start fast."""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command; one line per subcommand.
COMMANDS: dict[str, str] = {
    "ask": "modelport.cli.ask:ask",
    "batch": "modelport.cli.batch:batch",
    "cache": "modelport.cli.logs:cache",
    "chat": "modelport.cli.ask:chat",
    "keys": "modelport.cli.keys:keys",
    "logs": "modelport.cli.logs:logs",
    "models": "modelport.cli.models:models",
    "pull": "modelport.cli.models:pull",
    "serve": "modelport.cli.serve:serve",
    "state": "modelport.cli.state:state",
    "ui": "modelport.cli.ui:ui",
    "usage": "modelport.cli.logs:usage",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context) -> object:
        from .common import usage_errors_as_json

        with usage_errors_as_json([*ctx.args, *getattr(ctx, "_protected_args", ())]):
            return super().invoke(ctx)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="modelport")
def main() -> None:
    """modelport: one way to use LLMs from OpenAI, Anthropic, Gemini, Groq, LM Studio,
    Ollama, vLLM and an embedded model that needs no key and no network.

    \b
    Start here:
      modelport ask "What is a REST API?"        answer from the embedded model
      modelport ask -m openai/gpt-4o-mini "Hi"   any provider/model
      modelport models                           what you can use, and which keys are set
    """
