"""`modelport keys`: provider API keys kept in the user's keys file (mode 0600)."""

from __future__ import annotations

import click

from . import gateway_keys
from .common import friendly_errors


@click.group()
def keys() -> None:
    """Manage API keys.

    \b
    Provider keys (used when modelport calls OpenAI, Groq, ...):
      modelport keys set openai        # prompts for the key, stores it with mode 0600
      modelport keys list              # masked
      modelport keys remove openai
    An environment variable (OPENAI_API_KEY, GROQ_API_KEY, ...) wins over the file.
    """


@keys.command("set")
@click.argument("provider")
@click.option("--value", help="The key (omit it to be prompted, which keeps it out of your shell history).")
@friendly_errors
def set_(provider: str, value: str | None) -> None:
    """Store the API key for PROVIDER (e.g. openai, groq, anthropic, gemini)."""
    from ..config import load_config
    from ..keys import keys_path, set_key
    from ..providers import provider_table

    table = provider_table(load_config())
    if provider not in table:
        raise click.BadParameter(f"unknown provider {provider!r}; known: {', '.join(sorted(table))}", param_hint="PROVIDER")
    key = value or _read_key(provider)
    set_key(provider, key.strip())
    click.echo(f"saved the {provider} key in {keys_path()}")


def _read_key(provider: str) -> str:
    """The key, typed at a hidden prompt, or piped in (`echo KEY | modelport keys set groq`):
    a pipe is read as it is, without the prompt and getpass's "may be echoed" warning."""
    import sys

    if sys.stdin is not None and not sys.stdin.isatty():
        key = sys.stdin.readline().strip()
        if not key:
            raise click.UsageError(f"no key on standard input; pipe it in (echo KEY | modelport keys set {provider}) or use --value")
        return key
    return click.prompt(f"API key for {provider}", hide_input=True)


@keys.command("list")
@friendly_errors
def list_() -> None:
    """Show stored provider keys, masked, and which environment variables are set."""
    import os

    from ..config import load_config
    from ..errors import mask
    from ..keys import stored_keys
    from ..providers import provider_table

    stored = stored_keys()
    shown = 0
    for name, provider in sorted(provider_table(load_config()).items()):
        env = next((v for v in provider.key_env if os.environ.get(v)), None)
        if env:
            click.echo(f"{name:12} {mask(os.environ[env])}  (from ${env})")
        elif name in stored:
            click.echo(f"{name:12} {stored[name]}  (from the keys file)")
        else:
            continue
        shown += 1
    if not shown:
        click.echo("no provider keys set; add one with `modelport keys set openai` (or set OPENAI_API_KEY). "
                   "local/smollm2, LM Studio, Ollama and vLLM need none.", err=True)


@keys.command("remove")
@click.argument("provider")
@friendly_errors
def remove(provider: str) -> None:
    """Delete the stored key for PROVIDER."""
    from ..keys import remove_key

    if not remove_key(provider):
        raise click.ClickException(f"no stored key for {provider!r}")
    click.echo(f"removed the {provider} key")


# Gateway keys (for `modelport serve`) are managed beside provider keys.
for command in (gateway_keys.create, gateway_keys.revoke, gateway_keys.usage):
    keys.add_command(command)
