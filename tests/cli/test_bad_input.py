"""Broken inputs against a finished run: each is one line on stderr, exit code 2, and the run's
earlier artefacts are left byte for byte as they were (the progress log only gains events)."""
from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gist_core.cli import main as cli_main
from gist_core.store.manifest import RunStore

ARGS = ["--budget", "0.1", "--rank", "4", "--r-max", "8", "--epochs", "1", "--lr", "5e-3", "--batch-size", "8"]


def _argv(**over) -> list[str]:
    base = {"--model": "model", "--train": "pool.jsonl", "--target": "val.jsonl", "--out": "run"}
    base.update(over)
    return ["select", *[x for kv in base.items() for x in kv], *ARGS, "--quiet"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, micro_model_dir, micro_corpus):
    """A folder with model/, pool.jsonl, val.jsonl and a finished run/ that refers to them by relative path."""
    base = tmp_path_factory.mktemp("bad-input")
    shutil.copytree(micro_model_dir, base / "model")
    shutil.copy(micro_corpus["pool"], base / "pool.jsonl")
    shutil.copy(micro_corpus["val"], base / "val.jsonl")
    import os
    cwd = os.getcwd()
    os.chdir(base)
    try:
        assert cli_main(_argv()) == 0
    finally:
        os.chdir(cwd)
    return base


@pytest.fixture
def case(finished, tmp_path, monkeypatch):
    """A private copy of the finished folder, as the working directory."""
    d = tmp_path / "case"
    shutil.copytree(finished, d)
    monkeypatch.chdir(d)
    return d


def snapshot(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and p.name != "progress.jsonl"}


def run_fails(case: Path, argv: list[str], message: str, capsys) -> None:
    before = snapshot(case / "run")
    capsys.readouterr()
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err, err
    assert len(err.splitlines()) == 1, err
    assert snapshot(case / "run") == before


def _rewrite(path: Path, lines: list[str]) -> None:
    path.write_text("".join(x + "\n" for x in lines))


def _pool_lines(case: Path) -> list[str]:
    return (case / "pool.jsonl").read_text().splitlines()


# ---- broken files, rerun into the same run folder with the same config
def test_malformed_json_line(case, capsys):
    lines = _pool_lines(case)
    lines[6] = '{"prompt": "x", "response": '
    _rewrite(case / "pool.jsonl", lines)
    run_fails(case, _argv(), "pool.jsonl:7: invalid JSON", capsys)


def test_wrong_encoding(case, capsys):
    (case / "pool.jsonl").write_bytes((case / "pool.jsonl").read_bytes() + '{"prompt": "caf\u00e9", "response": "x"}\n'
                                       .encode("latin-1"))
    run_fails(case, _argv(), "pool.jsonl: not valid UTF-8 text (byte offset", capsys)


@pytest.mark.parametrize("field, value, message", [
    ("prompt", None, "no instruction fields: expected"),
    ("response", "", "field 'response' is empty"),
    ("prompt", "   ", "field 'prompt' is empty"),
])
def test_missing_or_empty_fields(case, capsys, field, value, message):
    lines = _pool_lines(case)
    row = json.loads(lines[11])
    if value is None:
        row.pop(field)
    else:
        row[field] = value
    lines[11] = json.dumps(row)
    _rewrite(case / "pool.jsonl", lines)
    run_fails(case, _argv(), f"pool.jsonl:12: {message}", capsys)


def test_empty_file(case, capsys):
    (case / "val.jsonl").write_text("")
    run_fails(case, _argv(), "val.jsonl: no examples", capsys)


def test_duplicate_ids(case, capsys):
    lines = _pool_lines(case)
    first = json.loads(lines[0])
    dup = json.loads(lines[3])
    dup["id"] = first["id"]
    lines[3] = json.dumps(dup)
    _rewrite(case / "pool.jsonl", lines)
    run_fails(case, _argv(), f"pool.jsonl:4: duplicate id {first['id']!r} (first seen at line 1)", capsys)


# ---- bad settings (with --overwrite: even a replacing run leaves the folder alone until its inputs pass)
def test_longer_than_the_models_context(case, capsys):
    run_fails(case, [*_argv(), "--max-length", "4096", "--overwrite"], "exceeds the model's context of 256", capsys)


def test_target_smaller_than_rank(case, capsys):
    run_fails(case, [*_argv(), "--rank", "50", "--overwrite"], "rank 50 exceeds the 12 directions", capsys)


@pytest.mark.parametrize("budget", ["0", "150%", "100000"])
def test_budget_zero_or_above_the_pool(case, capsys, budget):
    run_fails(case, [*_argv(), "--budget", budget, "--overwrite"], "budget", capsys)


def test_fractional_count_budget_names_the_rule_not_a_placeholder(case, capsys):
    run_fails(case, [*_argv(), "--budget", "2.5", "--overwrite"],
              "budget 2.5 is neither a fraction in (0, 1] nor a whole count of examples", capsys)


def test_missing_model_is_an_input_error_like_the_others(capsys):
    from gist_core.cli import main
    assert main(["select", "--train", "pool.jsonl", "--target", "val.jsonl", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == "error: --model required (or --config RUN/config.json)"


def test_model_path_missing(case, capsys):
    run_fails(case, [*_argv(**{"--model": "no/such/model/"}), "--overwrite"], "model folder or .gguf file not found", capsys)


def test_model_without_lora_able_modules(case, capsys):
    run_fails(case, [*_argv(), "--lora-targets", "no_such_proj", "--overwrite"], "no LoRA-able modules", capsys)


def test_nan_gradients_name_the_rows_and_keep_earlier_stages(case, capsys):
    """A model whose weights overflowed (inf): the warm-up stops at its first loss with a clear message;
    the finished run in the folder is untouched (config, checkpoints, projections, scores)."""
    from safetensors.torch import load_file, save_file
    weights = load_file(str(case / "model" / "model.safetensors"))
    name = next(k for k in weights if k.endswith("norm.weight"))
    weights[name][:] = float("inf")
    save_file(weights, str(case / "model" / "model.safetensors"), metadata={"format": "pt"})
    before = snapshot(case / "run")
    capsys.readouterr()
    assert cli_main([*_argv(), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert "training loss became nan" in err and len(err.splitlines()) == 1, err
    # found only while training: the folder is marked as a run that did not finish, and the earlier run's
    # results wait in .previous/ (a failed run never presents them as its own, and loses nothing)
    after = snapshot(case / "run")
    results = {"summary.json", "selected.jsonl", "scores.parquet", "advisor.json"}
    assert {k: v for k, v in after.items() if not k.startswith(".") and k != "manifest.json"} == \
        {k: v for k, v in before.items() if not k.startswith(".") and k not in results | {"manifest.json"}}
    assert {k: after[f".previous/{k}"] for k in results} == {k: before[k] for k in results}
    assert json.loads((case / "run" / "manifest.json").read_text())["status"]["state"] == "running"


def test_nan_in_pool_gradients_names_rows(micro_model_dir, micro_corpus, tmp_path, monkeypatch, capsys):
    """Non-finite gradients at the projection: the message names the pool rows, finished stages stay recorded."""
    import torch

    from gist_core.grads import per_example as gradients
    out = tmp_path / "run"
    argv = _argv(**{"--model": str(micro_model_dir), "--train": str(micro_corpus["pool"]),
                    "--target": str(micro_corpus["val"]), "--out": str(out)})
    real = gradients.GradientEngine.projected_grads

    def overflowing(self, ids, lab, basis, with_norms=False):
        out, losses = real(self, ids, lab, basis, with_norms)
        if any(len(x) == max(map(len, ids)) for x in ids):  # poison one example per batch: its loss overflows
            raise gradients.GradientError("non-finite loss or gradient for 1 of 8 examples in a batch", positions=[0])
        return out, losses

    monkeypatch.setattr(gradients.GradientEngine, "projected_grads", overflowing)
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "non-finite loss or gradient" in err and "at row(s)" in err and len(err.splitlines()) == 1
    store = RunStore(out)
    stages = store.manifest()["stages"]
    assert {"data", "warmup", "val_grads/ckpt-1"} <= set(stages) and "train_proj" not in stages
    assert all(store.check_stage(s, e["key"]) == "done" for s, e in stages.items())
    assert torch.isfinite(torch.from_numpy(np.load(out / "checkpoints" / "ckpt-1" / "val_grads.npy"))).all()


@pytest.mark.parametrize("where", ["projection", "scores"])
def test_full_disk(case, capsys, monkeypatch, where):
    """No space left while allocating the projection store, or while writing scores: one line, exit 2,
    nothing of the finished run lost; after space is freed the same command finishes."""
    from gist_core.store import manifest as store
    store_ = RunStore(case / "run")
    for stage in ("train_proj", "scores"):
        store_.forget_stage(stage)  # as if the run had stopped before these stages
    if where == "projection":
        (case / "run" / "train_proj.json").unlink()  # the store must be allocated afresh

        def full(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        monkeypatch.setattr(store, "reserve", full)
    else:
        import pandas as pd
        real_to_parquet = pd.DataFrame.to_parquet

        def full(self, path, *a, **kw):
            if "scores" in str(path):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_to_parquet(self, path, *a, **kw)
        monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    before = snapshot(case / "run")
    assert cli_main(_argv()) == 2
    err = capsys.readouterr().err.strip()
    assert "No space left on device writing" in err and "rerun the same command" in err
    assert len(err.splitlines()) == 1
    after = snapshot(case / "run")
    results = {"summary.json", "selected.jsonl", "scores.parquet", "advisor.json"}
    keep = {k: v for k, v in before.items() if not k.startswith(("train_proj", ".")) and k != "manifest.json"
            and k not in results}
    assert {k: after.get(k) for k in keep} == keep  # every earlier artefact byte for byte
    # the earlier run's results wait in .previous/ (the folder is marked as an unfinished run)
    assert {k: after.get(f".previous/{k}") for k in results if k in before} == {k: before[k] for k in results if k in before}
    assert not list((case / "run").glob(".*.tmp*"))  # no temp files left behind
    monkeypatch.undo()
    monkeypatch.chdir(case)
    assert cli_main(_argv()) == 0
    assert (case / "run" / "scores.parquet").exists()


def test_examples_longer_than_max_length_are_cut_and_counted(micro_model_dir, micro_corpus, tmp_path, capsys):
    """Not an error: the prompt is cut first, the user is told how many, summary.json counts them."""
    out = tmp_path / "run"
    argv = [a for a in _argv(**{"--model": str(micro_model_dir), "--train": str(micro_corpus["pool"]),
                                "--target": str(micro_corpus["val"]), "--out": str(out)}) if a != "--quiet"]
    assert cli_main([*argv, "--max-length", "24"]) == 0
    text = capsys.readouterr().out
    n = json.loads((out / "summary.json").read_text())["n_truncated"]["pool"]
    assert n > 0 and f"note: {n} pool example(s) longer than max_length 24 tokens were cut" in text


def test_really_full_disk(micro_model_dir, micro_corpus, tmp_path, capsys):
    """A run folder on a tiny tmpfs filled to the last byte: one line, exit 2, nothing finished is lost;
    once space is freed the same command finishes with the scores of the first run.
    Needs permission to mount a tmpfs (root in a container that allows it); skipped otherwise."""
    import os
    import subprocess
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission)")
    try:
        out = mnt / "run"
        argv = _argv(**{"--model": str(micro_model_dir), "--train": str(micro_corpus["pool"]),
                        "--target": str(micro_corpus["val"]), "--out": str(out)})
        assert cli_main(argv) == 0
        first = (out / "scores.parquet").read_bytes()
        store = RunStore(out)
        for stage in ("train_proj", "scores"):
            store.forget_stage(stage)  # as if the run had stopped before projecting
        for name in ("train_proj.npy", "train_proj.done.npy", "train_proj.json"):
            (out / name).unlink()
        before = snapshot(out)
        with open(mnt / "filler", "wb", buffering=0) as fh:  # fill the file system to the last byte
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC
            for size in (512, 64, 1):  # and the last partial page
                try:
                    while True:
                        fh.write(b"\0" * size)
                except OSError:
                    pass
        capsys.readouterr()
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "No space left on device" in err and "rerun the same command" in err and len(err.splitlines()) == 1
        assert {k: v for k, v in snapshot(out).items() if k in before} == before
        (mnt / "filler").unlink()
        assert cli_main(argv) == 0
        import io

        import pandas as pd
        a, b = pd.read_parquet(io.BytesIO(first)), pd.read_parquet(out / "scores.parquet")
        assert np.abs(a["score"].to_numpy() - b["score"].to_numpy()).max() <= 1e-6
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
