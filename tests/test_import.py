"""`import modelport` stays light: nothing heavy is imported until it is used."""

import subprocess
import sys

HEAVY = ("httpx", "aiohttp", "xllamacpp", "pandas", "ray", "uvicorn", "pydantic", "click", "rich",
         "sqlite3", "modelport.client", "modelport.server", "modelport.batch", "modelport.backends.local")


def loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_modelport_loads_no_heavy_module():
    loaded = loaded_after("import modelport")
    assert not [m for m in HEAVY if m in loaded]


def test_import_modelport_discovers_no_plugins_and_discovery_loads_no_heavy_module():
    already = loaded_after("pass")  # a site .pth file may import importlib.metadata itself
    assert not {"modelport.plugins", "importlib.metadata"} & (loaded_after("import modelport") - already)
    loaded = loaded_after("import modelport\nfrom modelport import plugins\nfor g in plugins.GROUPS: plugins.entries(g)")
    assert "modelport.plugins" in loaded
    assert not [m for m in HEAVY if m in loaded]


def test_public_names_resolve_lazily_on_first_use():
    loaded = loaded_after("import modelport; modelport.ChatRequest; modelport.RateLimitError")
    assert "modelport.types" in loaded and "modelport.errors" in loaded
    assert "modelport.client" not in loaded


def test_unknown_attribute_is_a_clear_attribute_error():
    import modelport

    try:
        modelport.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
