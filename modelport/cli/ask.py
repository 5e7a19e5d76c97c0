"""`modelport ask` (one question) and `modelport chat` (a conversation at the prompt)."""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any

import click

from .common import friendly_errors, parse_options

MODEL_HELP = "provider/model-id, e.g. local/smollm2, openai/gpt-4o-mini, lmstudio/gemma-3-4b-it (default: the config's default_model, else local/smollm2)"


class Session:
    """A CLI conversation: the client, the history, and the log entry for each turn."""

    def __init__(self, model: str | None, system: str | None, options: dict[str, Any], continue_last: bool, cid: str | None) -> None:
        from ..client import Client

        # The session logs each turn itself, with its conversation id.
        self.client = Client(source="cli", log=False)
        self.model = model
        self.system = system
        self.options = options
        self.log = _call_log()
        self.history: list[Any] = []
        if (continue_last or cid) and self.log is None:
            raise click.UsageError("continuing a conversation needs the log, which MODELPORT_LOG=0 turned off")
        if continue_last and not cid:
            cid = self.log.last_conversation_id()
            if cid is None:
                raise click.UsageError("there is no earlier conversation to continue; start one without -c")
        if cid:
            self.history = list(self.log.conversation_messages(cid))
            if not self.history:
                raise click.UsageError(f"no conversation with id {cid!r} in the log (see `modelport logs`)")
        self.cid = cid or uuid.uuid4().hex[:16]

    def turn(self, prompt: str, stream: bool, as_json: bool) -> None:
        from ..types import Message

        messages = [*self.history, Message.user(prompt)]
        request = self.client.request(self.model, messages, system=self.system, **dict(self.options))
        provider = self.client.resolve(request.model)[0].name
        started = time.perf_counter()
        try:
            if stream and not as_json:
                events = self.client.send_stream(request)
                for text in events.text_stream():
                    click.echo(text, nl=False)
                click.echo()
                response = events.until_done()
            else:
                response = self.client.send(request)
                if as_json:
                    import json

                    from ..serialize import response_to_dict

                    click.echo(json.dumps(response_to_dict(response), ensure_ascii=False, indent=2))
                else:
                    click.echo(response.text)
        except Exception as exc:
            self._record(request, provider, None, exc, started)
            raise
        self._record(request, provider, response, None, started)
        self.history = [*messages, response.message]

    def _record(self, request: Any, provider: str, response: Any, error: Any, started: float) -> None:
        if self.log is not None:
            # A failed first turn starts no conversation: `ask -c` would pick it and find no answer.
            cid = self.cid if response is not None or self.history else None
            self.log.record(request, response, error, provider=provider, model=request.model, source="cli",
                            latency=time.perf_counter() - started, conversation_id=cid)
            self.log.flush()


def _call_log() -> Any:
    from ..calllog import log_for

    return log_for("cli")


def _read_prompt(prompt: str | None) -> str:
    piped = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    if prompt == "-":
        prompt = None
    parts = [p for p in (piped, prompt) if p and p.strip()]
    if not parts:
        raise click.UsageError('give a prompt, e.g. modelport ask "What is a REST API?", or pipe text in')
    return "\n\n".join(parts)


@click.command()
@click.argument("prompt", required=False)
@click.option("-m", "--model", help=MODEL_HELP)
@click.option("-s", "--system", help="System prompt: instructions the model follows for this answer.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A request parameter, repeatable: -o temperature=0.2 -o max_tokens=200 -o seed=1")
@click.option("--json", "as_json", is_flag=True, help="Print the whole response (text, usage, model) as JSON.")
@click.option("--no-stream", is_flag=True, help="Wait for the whole answer instead of printing it as it arrives.")
@click.option("-c", "--continue", "continue_last", is_flag=True, help="Continue the last conversation from the log.")
@click.option("--cid", help="Continue the conversation with this id (see `modelport logs`).")
@friendly_errors
def ask(prompt: str | None, model: str | None, system: str | None, options: tuple[str, ...], as_json: bool,
        no_stream: bool, continue_last: bool, cid: str | None) -> None:
    """Ask a model one question and print the answer as it arrives.

    \b
    PROMPT is the question; use - (or a pipe) to read it from standard input:
      modelport ask "What is a REST API?"
      modelport ask -m openai/gpt-4o-mini -s "Answer in one line" "Why is the sky blue?"
      cat notes.txt | modelport ask "Summarise this"
      modelport ask -c "And in French?"          # follow up on the last answer

    The default model, local/smollm2, runs inside modelport with no key and no network.
    It is a tiny demo model: fluent, but often wrong. For real answers use a provider
    key (modelport keys set openai), LM Studio, Ollama or a bigger GGUF (local/path/to/model.gguf).
    """
    session = Session(model, system, parse_options(options), continue_last, cid)
    session.turn(_read_prompt(prompt), stream=not no_stream, as_json=as_json)


@click.command()
@click.option("-m", "--model", help=MODEL_HELP)
@click.option("-s", "--system", help="System prompt for the whole conversation.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE", help="A request parameter, repeatable.")
@click.option("-c", "--continue", "continue_last", is_flag=True, help="Continue the last conversation from the log.")
@click.option("--cid", help="Continue the conversation with this id.")
@click.option("--no-stream", is_flag=True, help="Print each answer whole instead of as it arrives.")
@friendly_errors
def chat(model: str | None, system: str | None, options: tuple[str, ...], continue_last: bool, cid: str | None,
         no_stream: bool) -> None:
    """Talk with a model, turn by turn, keeping the conversation.

    \b
    Type a message and press Enter. Commands:
      /model NAME    switch model (e.g. /model openai/gpt-4o-mini)
      /system TEXT   set the system prompt
      /reset         forget the conversation so far
      /exit          leave (or Ctrl-D)
    """
    from ..errors import ModelportError

    session = Session(model, system, parse_options(options), continue_last, cid)
    name = model or session.client.request(None, "-").model
    click.secho(f"Chatting with {name}. /exit to leave, /help for commands.", fg="cyan", err=True)
    # The "> " prompt is for people; piped scripts get only the answers on stdout.
    prompt = "> " if sys.stdin.isatty() else ""
    while True:
        try:
            line = input(prompt)
        except EOFError:
            click.echo(err=True)
            return
        text = line.strip()
        if not text:
            continue
        try:
            if text.startswith("/"):
                if not _command(session, text):
                    return
            else:
                session.turn(text, stream=not no_stream, as_json=False)
        except ModelportError as exc:
            click.secho(f"Error: {exc.message}", fg="red", err=True)
            hint = exc.hint
            if hint:
                click.secho(f"Hint: {hint}", fg="yellow", err=True)


def _command(session: Session, text: str) -> bool:
    """Run a /command; False means leave."""
    name, _, arg = text.partition(" ")
    arg = arg.strip()
    if name in ("/exit", "/quit"):
        return False
    if name == "/model" and arg:
        session.client.resolve(arg)
        session.model = arg
        click.secho(f"model: {arg}", fg="cyan", err=True)
    elif name == "/system":
        session.system = arg or None
        click.secho(f"system prompt: {arg or '(none)'}", fg="cyan", err=True)
    elif name == "/reset":
        session.history = []
        session.cid = uuid.uuid4().hex[:16]
        click.secho("conversation reset", fg="cyan", err=True)
    else:
        click.secho("commands: /model NAME, /system TEXT, /reset, /exit", fg="cyan", err=True)
    return True
