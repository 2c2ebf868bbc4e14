"""Hardening: inputs refused before the run folder exists, one writer per run folder (real processes), no stale
results after a kill, no remote code taken from a run folder, hub ids pinned to a commit."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import micro_select_argv, write_jsonl
from repo import ROOT

from gist_core.cli import main as cli_main
from gist_core.store import lock
from gist_core.store.atomic import aside_name, atomic_folder, recover_folder

FAST = ["--budget", "0.1", "--rank", "2", "--r-max", "4", "--epochs", "1", "--lr", "5e-3", "--batch-size", "8", "--quiet"]


def _select(model, pool, target, out, *extra) -> list[str]:
    return ["select", "--model", str(model), "--train", str(pool), "--target", str(target), "--out", str(out), *FAST,
            *extra]


def refused(argv: list[str], message: str, capsys, out: Path | None) -> str:
    """Exit 2, one line on stderr holding `message`, and (when `out` is given) no run folder made."""
    capsys.readouterr()
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err, err
    assert len(err.splitlines()) == 1, err
    if out is not None:
        assert not out.exists(), f"{out} was created by a refused run"
    return err


# ----------------------------------------------------------------------------- refused before any work
def test_a_target_of_one_example_is_refused(micro_model_dir, micro_corpus, tmp_path, capsys):
    one = write_jsonl(tmp_path / "one.jsonl", [json.loads(micro_corpus["val"].read_text().splitlines()[0])])
    out = tmp_path / "run"
    refused(_select(micro_model_dir, micro_corpus["pool"], one, out), "needs at least 2 validation examples", capsys, out)


def test_a_subtask_of_one_example_is_said_plainly(micro_model_dir, micro_corpus, tmp_path, capsys):
    from gist_core.data.examples import load_examples
    from gist_core.log import show_on_terminal
    from gist_core.runner.preflight import check_target
    show_on_terminal()
    rows = [json.loads(x) for x in micro_corpus["val"].read_text().splitlines()]
    rows[0]["subtask"] = "lonely"
    target = load_examples(write_jsonl(tmp_path / "val.jsonl", rows))
    capsys.readouterr()
    check_target(target, "subtask_mean")
    out = capsys.readouterr().out
    assert "'lonely'" in out and "single validation example" in out


def test_out_is_a_file(micro_model_dir, micro_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("not a folder")
    refused(_select(micro_model_dir, micro_corpus["pool"], micro_corpus["val"], out), "is a file, not a folder", capsys,
            None)
    assert out.read_text() == "not a folder"


def test_out_not_writable(micro_model_dir, micro_corpus, capsys):
    if not Path("/sys").is_dir():
        pytest.skip("needs /sys (a folder no process can create files in)")
    out = Path("/sys/gist-lab-run")
    refused(_select(micro_model_dir, micro_corpus["pool"], micro_corpus["val"], out), "cannot write in /sys", capsys, out)


@pytest.mark.parametrize("remove, named", [("config.json", "no config.json"), ("model.safetensors", "no weights"),
                                           ("tokenizer.json", "no tokenizer files")])
def test_incomplete_model_folder_names_what_is_missing(micro_model_dir, micro_corpus, tmp_path, capsys, remove, named):
    model = tmp_path / "model"
    shutil.copytree(micro_model_dir, model)
    (model / remove).unlink()
    out = tmp_path / "run"
    err = refused(_select(model, micro_corpus["pool"], micro_corpus["val"], out), named, capsys, out)
    assert "not a complete model folder" in err


def test_data_errors_leave_no_folder(micro_model_dir, micro_corpus, tmp_path, capsys):
    bad = tmp_path / "pool.jsonl"
    bad.write_text('{"prompt": "x", "response": \n')
    out = tmp_path / "run"
    refused(_select(micro_model_dir, bad, micro_corpus["val"], out), "pool.jsonl:1: invalid JSON", capsys, out)


def test_os_error_at_the_cli_is_one_line_naming_the_path(micro_model_dir, micro_corpus, tmp_path, capsys, monkeypatch):
    from gist_core.cli import commands, os_error_line

    def broken(summary, out):
        raise PermissionError(13, "Permission denied", "/some/where/file.npy")
    monkeypatch.setattr(commands, "print_summary", broken)
    refused(_select(micro_model_dir, micro_corpus["pool"], micro_corpus["val"], tmp_path / "run"),
            "error: Permission denied: /some/where/file.npy", capsys, None)
    assert os_error_line(PermissionError(13, "Permission denied", "/x/y")) == "Permission denied: /x/y"
    assert os_error_line(OSError(18, "Invalid cross-device link", "/a", None, "/b")) == "Invalid cross-device link: /a -> /b"


# ----------------------------------------------------------------------------- one writer per run folder
HOLDER = textwrap.dedent("""
    import sys, time
    from gist_core.store.lock import writer_lock
    with writer_lock(sys.argv[1], shared=sys.argv[2] == "shared", cmd=["gist-lab", "select", "--holder"]):
        print("held", flush=True)
        time.sleep(float(sys.argv[3]))
""")


def _hold(folder: Path, mode: str = "exclusive", seconds: float = 60) -> subprocess.Popen:
    """A real process holding the folder's lock (as a running select would) until killed."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), mode, str(seconds)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held", p.stderr.read()
    return p


def test_a_second_writer_is_refused_naming_the_holder(micro_model_dir, micro_corpus, tmp_path):
    out = tmp_path / "run"
    holder = _hold(out)
    try:
        argv = [a for a in _select(micro_model_dir, micro_corpus["pool"], micro_corpus["val"], out) if a != "--quiet"]
        res = subprocess.run([sys.executable, "-m", "gist_core.cli", *argv], capture_output=True, text=True, cwd=ROOT)
        assert res.returncode == 2, res.stderr
        err = res.stderr.strip().splitlines()
        assert len(err) == 1 and f"pid {holder.pid}" in err[0] and "gist-lab select --holder" in err[0], err
        assert "one writer per run folder" in err[0]
        assert "pool examples" not in res.stdout  # refused before reading a single input, not after the work
        assert holder.poll() is None  # and not by waiting for the holder to finish
        assert not (out / "config.json").exists() and not (out / "progress.jsonl").exists()
        from gist_core.viewer.progress import run_state
        state = run_state(out)  # the dashboard, a reader, sees the CLI writer at work
        assert state["status"] == "running" and f"pid {holder.pid}" in state["message"]
    finally:
        holder.kill()
        holder.wait()
    assert lock.holder(out) is None  # the kernel released it with the process; the stale record is not believed


def test_shard_jobs_share_the_folder_but_exclude_a_writer(tmp_path):
    out = tmp_path / "run"
    a, b = _hold(out, "shared"), _hold(out, "shared")  # two `--shard` jobs side by side
    try:
        with pytest.raises(lock.RunLockedError, match="being written by pid"):
            with lock.writer_lock(out):
                pass
    finally:
        for p in (a, b):
            p.kill()
            p.wait()
    with lock.writer_lock(out), lock.writer_lock(out):  # nested in one process: compare runs a select inside
        assert lock.holder(out)["pid"] == os.getpid()
    assert lock.holder(out) is None


def test_the_dashboard_launcher_respects_the_lock(tmp_path):
    from gist_core.runner import launcher
    out = tmp_path / "run"
    holder = _hold(out)
    try:
        with pytest.raises(launcher.LaunchError, match=f"pid {holder.pid}"):
            launcher.launch(out, ["demo", "--out", str(out)])
        assert not (out / "launch.log").exists() and not (out / "launch.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_manifest_edits_of_shard_jobs_do_not_interleave(tmp_path):
    """Two processes recording 30 stages each into one manifest: every entry survives."""
    from gist_core.store.manifest import RunStore
    tmp_path.joinpath("f").write_text("x")
    code = textwrap.dedent("""
        import sys
        from gist_core.store.manifest import RunStore
        s = RunStore(sys.argv[1])
        for i in range(30):
            s.record_stage(f"{sys.argv[2]}/{i}", "k", ["f"], 0.0)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), name]) for name in ("a", "b")]
    assert all(p.wait() == 0 for p in procs)
    assert len(RunStore(tmp_path).manifest()["stages"]) == 60


# ----------------------------------------------------------------------------- no stale results
def _wait_for(cond, timeout: float = 120.0, what: str = "") -> None:
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_rerun_never_shows_the_old_result_as_its_own(micro_model_dir, micro_corpus, tmp_path):
    from gist_core.viewer.progress import run_state
    out = tmp_path / "run"
    argv = micro_select_argv(micro_model_dir, micro_corpus, out)
    assert cli_main(argv) == 0
    old_selected = (out / "selected.jsonl").read_bytes()
    assert run_state(out)["status"] == "done"
    # a rerun with another warm-up (hours of work on a real model), killed as soon as its warm-up starts
    rerun = [*argv[:-1], "--epochs", "3", "--overwrite", "--quiet"]
    seen = len((out / "progress.jsonl").read_text().splitlines())
    p = subprocess.Popen([sys.executable, "-m", "gist_core.cli", *rerun], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)

    def warming_up() -> bool:
        ev = (out / "progress.jsonl").read_text().splitlines()[seen:]  # the rerun's own events
        return any('"warmup"' in e and '"start"' in e for e in ev) and p.poll() is None
    _wait_for(warming_up, what="the rerun's warm-up")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"]["state"] == "running"
    for name in ("selected.jsonl", "summary.json", "scores.parquet"):
        assert not (out / name).exists(), f"{name} of the earlier run still presented as the result"
    assert (out / ".previous" / "selected.jsonl").read_bytes() == old_selected  # nothing lost
    state = run_state(out)
    assert state["status"] == "stopped" and "incomplete" in state["message"]
    assert lock.holder(out) is None
    assert cli_main(rerun) == 0  # resumed to the end: done, the earlier result dropped
    assert run_state(out)["status"] == "done"
    assert json.loads((out / "manifest.json").read_text())["status"]["state"] == "done"
    assert not (out / ".previous").exists()


KILL_BETWEEN_RENAMES = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from gist_core.store import atomic
    real, calls = os.replace, []
    def replace(a, b):
        real(a, b)
        calls.append(b)
        if len(calls) == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
    atomic.os.replace = replace
    with atomic.atomic_folder(sys.argv[1]) as tmp:
        (tmp / "weights").write_text("new")
""")


@pytest.mark.parametrize("kill_after", [1, 2])
def test_atomic_folder_killed_between_its_renames(tmp_path, kill_after):
    """Killed after the old folder went aside (1) or after the new one arrived (2): the next writer (or a
    reader's recover_folder) finds the old complete folder or the new complete one, never none."""
    target = tmp_path / "adapter"
    target.mkdir()
    (target / "weights").write_text("old")
    res = subprocess.run([sys.executable, "-c", KILL_BETWEEN_RENAMES, str(target), str(kill_after)])
    assert res.returncode == -signal.SIGKILL
    recover_folder(target)
    assert (target / "weights").read_text() == ("old" if kill_after == 1 else "new")
    assert not aside_name(target).exists()
    with atomic_folder(target) as tmp:
        (tmp / "weights").write_text("newer")
    assert (target / "weights").read_text() == "newer" and not aside_name(target).exists()


# ----------------------------------------------------------------------------- no remote code from a run folder
REMOTE_TOKENIZER = textwrap.dedent("""
    from pathlib import Path
    Path(MARKER).write_text("yes")  # transformers imports a copy from its module cache: an absolute path
    from transformers import PreTrainedTokenizerFast

    class SneakyTokenizer(PreTrainedTokenizerFast):
        pass
""")


def _remote_code_run(micro_model_dir, micro_corpus, tmp_path) -> tuple[Path, Path]:
    """A finished run folder whose config says trust_remote_code: true and whose model folder holds a tokenizer
    class in Python (it writes a marker file when imported)."""
    model = tmp_path / "model"
    shutil.copytree(micro_model_dir, model)
    marker = model / "REMOTE_CODE_RAN"
    (model / "sneaky_tokenizer.py").write_text(REMOTE_TOKENIZER.replace("MARKER", repr(str(marker))))
    cfg = json.loads((model / "tokenizer_config.json").read_text())
    cfg.update(tokenizer_class="SneakyTokenizer", auto_map={"AutoTokenizer": [None, "sneaky_tokenizer.SneakyTokenizer"]})
    (model / "tokenizer_config.json").write_text(json.dumps(cfg))
    from gist_core.store.layout import RunLayout
    run = tmp_path / "runs" / "planted"
    run.mkdir(parents=True)
    RunLayout(run).config.write_text(json.dumps({"model": str(model), "train": str(micro_corpus["pool"]),
                                                 "target": str(micro_corpus["val"]), "trust_remote_code": True}))
    return run, marker


def test_a_run_folder_cannot_make_the_viewer_run_remote_code(micro_model_dir, micro_corpus, tmp_path):
    from gist_core.model.load import load_tokenizer
    from gist_core.viewer import examples
    run, marker = _remote_code_run(micro_model_dir, micro_corpus, tmp_path)
    examples.run_tokenizer.cache_clear()
    with pytest.raises(Exception):  # noqa: B017 - whatever transformers raises: the point is what did not run
        examples.run_tokenizer(json.loads((run / "config.json").read_text())["model"])
    assert not marker.exists(), "the dashboard ran a model folder's Python because a run folder said so"
    # the fixture is real: with the person's own consent the same folder does run its code
    load_tokenizer(str(marker.parent), trust_remote_code=True)
    assert marker.exists()


def test_replaying_a_run_folder_config_never_trusts_remote_code(micro_model_dir, micro_corpus, tmp_path):
    """`select --config RUN/config.json` (the Run page's Resume) and `compare` on a folder (the Compare page's
    launch) rebuild the config from the folder's file: the flag in the file is ignored, the person's kept."""
    from gist_core.cli import build_parser
    from gist_core.cli.commands import _run_config_for
    from gist_core.config import RunConfig
    run, _ = _remote_code_run(micro_model_dir, micro_corpus, tmp_path)
    stored = json.loads((run / "config.json").read_text())
    assert RunConfig.from_json(stored).trust_remote_code is False
    assert RunConfig.from_json(stored, trust_remote_code=True).trust_remote_code is True
    a = build_parser().parse_args(["compare", "--out", str(run)])
    assert _run_config_for(a).trust_remote_code is False
    a = build_parser().parse_args(["compare", "--out", str(run), "--trust-remote-code"])
    assert _run_config_for(a).trust_remote_code is True


def test_non_loopback_address_warns_that_there_is_no_login(capsys, monkeypatch):
    from gist_core.cli import commands
    started = []
    monkeypatch.setattr(commands.subprocess, "call", lambda cmd, env=None: started.append(cmd) or 0)
    assert cli_main(["app", "--address", "0.0.0.0"]) == 0
    assert "no login" in capsys.readouterr().err
    assert cli_main(["app"]) == 0
    assert capsys.readouterr().err == ""
    assert len(started) == 2


# ----------------------------------------------------------------------------- hub ids pinned to a commit
def _fake_hub_cache(hf_home: Path, repo: str, commits: dict[str, Path], main: str) -> None:
    """A Hugging Face cache as the hub client leaves it: snapshots/<commit>/ and refs/main."""
    root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    for commit, src in commits.items():
        shutil.copytree(src, root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(main)


def test_hub_ids_resolve_to_a_commit_recorded_and_used_on_replay(micro_model_dir, micro_corpus, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file, save_file
    hf_home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(hf_home / "hub"))
    changed = tmp_path / "changed"
    shutil.copytree(micro_model_dir, changed)
    w = load_file(str(changed / "model.safetensors"))
    name = next(k for k in w if k.endswith("norm.weight"))
    w[name] = w[name] * torch.tensor(1.5)
    save_file(w, str(changed / "model.safetensors"), metadata={"format": "pt"})
    first, second = "a" * 40, "b" * 40
    _fake_hub_cache(hf_home, "acme/micro", {first: micro_model_dir, second: changed}, main=first)
    out = tmp_path / "run"
    argv = ["select", "--model", "acme/micro", "--train", str(micro_corpus["pool"]), "--target",
            str(micro_corpus["val"]), "--out", str(out), *FAST]
    assert cli_main(argv) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_revision"] == first
    keys = {s: e["key"] for s, e in json.loads((out / "manifest.json").read_text())["stages"].items()}
    (hf_home / "hub" / "models--acme--micro" / "refs" / "main").write_text(second)  # the repository moves on
    assert cli_main(["select", "--config", str(out / "config.json"), "--out", str(out), "--quiet"]) == 0
    again = {s: e["key"] for s, e in json.loads((out / "manifest.json").read_text())["stages"].items()}
    assert again == keys  # the replay used the recorded commit: every stage kept
    from gist_core.model.registry import resolve
    assert resolve("acme/micro", hub=True).revision == second  # a new run would take the new commit
