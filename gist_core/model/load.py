"""Load a causal LM (any Hugging Face id or local path) and wrap it with LoRA via peft."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from gist_core.config import LoraSettings
from gist_core.errors import ModelError, ModelSourceError
from gist_core.methods.iprox.store import is_proxy_folder, load_proxy
from gist_core.model.registry import looks_local as local_path
from gist_core.model.registry import resolve

# LoRA targets per architecture (config.model_type); anything else falls back to all linear layers.
DEFAULT_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma3_text": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
}
# peft 0.21 asks transformers 5 a deprecated question on every wrap, load and train step: noise that would
# break our one-line errors; only this message is silenced
warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.* is deprecated", category=FutureWarning)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device: str = "auto") -> torch.device:
    if device in ("auto", "cuda") and torch.cuda.is_available():  # under torchrun each rank takes its own GPU
        return torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}")
    if device == "auto":
        return torch.device("cpu")
    return torch.device(device)


def model_folder(spec: str) -> str:
    """The folder transformers loads for a --model value (a GGUF file or registry name maps to its
    converted folder, converting on first use; anything else is returned unchanged)."""
    try:
        return resolve(spec).path
    except ModelSourceError as e:
        raise ModelError(str(e)) from None


# what a loadable model folder holds: its config, its weights in one of these forms, and a tokenizer's vocabulary
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model")


def check_model_folder(folder: str | os.PathLike) -> None:
    """A one-line ModelError naming what a local model folder lacks (config.json, weights, tokenizer files),
    before anything is loaded; an Iprox proxy folder has a format of its own and is checked by its loader."""
    p = Path(folder)
    if not p.is_dir() or is_proxy_folder(p):
        return
    missing = []
    if not (p / "config.json").is_file():  # a model folder's, not a run folder's
        missing.append("config.json")  # a model folder's, not a run folder's
    if not any((p / f).is_file() for f in WEIGHT_FILES) and not any(p.glob("*.safetensors")):
        missing.append(f"weights ({' or '.join(WEIGHT_FILES[::2])})")
    if not any((p / f).is_file() for f in TOKENIZER_FILES):
        missing.append(f"tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...)")
    if missing:
        raise ModelError(f"{folder}: not a complete model folder: no {'; no '.join(missing)}")


def load_tokenizer(spec: str, trust_remote_code: bool = False, revision: str | None = None) -> PreTrainedTokenizerBase:
    tok = AutoTokenizer.from_pretrained(model_folder(spec), trust_remote_code=trust_remote_code, revision=revision)
    if tok.pad_token_id is None:  # many causal LMs ship without one; padding is masked anyway
        tok.pad_token = tok.eos_token
    return tok


def load_base_model(spec: str, dtype: str = "float32", device: str = "auto", trust_remote_code: bool = False,
                    revision: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) from a Hugging Face id (at `revision`: the commit a run recorded), a local folder, a
    .gguf file or a registry name (gist_core.model.registry), with a one-line error if it fails."""
    hf_logging.disable_progress_bar()  # one bar per stage is ours; a loading bar per model is noise

    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype '{dtype}' (use one of {', '.join(DTYPES)})")
    looks_local = local_path(spec)
    if looks_local and not Path(spec).exists():
        raise ModelError(f"{spec}: model folder or .gguf file not found")
    folder = model_folder(spec)
    if looks_local and not Path(folder).is_dir():
        raise ModelError(f"{spec}: not a model folder or .gguf file")
    check_model_folder(folder)
    try:
        tok = load_tokenizer(folder, trust_remote_code, revision)
        if is_proxy_folder(folder):  # an Iprox proxy: factor layers the plain loader does not know
            model = load_proxy(folder, DTYPES[dtype])
        else:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code,
                                                         revision=revision)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{spec}: cannot load model ({first})") from e
    return model.to(pick_device(device)), tok


def lora_targets(model, settings: LoraSettings) -> list[str] | str:
    if settings.target_modules:
        return list(settings.target_modules)
    known = DEFAULT_TARGETS.get(getattr(model.config, "model_type", ""))
    if known:
        return known
    # peft's "all-linear" cannot be combined with layers_to_transform (--lora-layers): name its modules instead
    return linear_module_names(model) if settings.last_layers is not None else "all-linear"


def linear_module_names(model) -> list[str]:
    """The last name part of every Linear layer but the output projection: what peft's "all-linear" wraps."""
    out = model.get_output_embeddings()
    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not out}
    return sorted(names)


def last_layer_indices(model, last: int | None) -> list[int] | None:
    """Indices of the last `last` transformer layers (peft's layers_to_transform), None for all."""
    if last is None:
        return None
    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    if not n:
        raise ModelError("--lora-layers needs a model whose config gives num_hidden_layers")
    if last > n:
        raise ModelError(f"--lora-layers {last} exceeds the model's {n} layers")
    return list(range(n - last, n))


def attach_lora(model: PreTrainedModel, settings: LoraSettings, seed: int = 0) -> PeftModel:
    """Wrap `model` with a fresh LoRA adapter (seeded init); only LoRA parameters train."""
    torch.manual_seed(seed)
    cfg = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                     target_modules=lora_targets(model, settings), task_type="CAUSAL_LM", bias="none",
                     layers_to_transform=last_layer_indices(model, settings.last_layers))
    try:
        peft_model = get_peft_model(model, cfg)
    except ValueError as e:
        raise ModelError(f"no LoRA-able modules found ({str(e).splitlines()[0]})") from e
    if not any(p.requires_grad for p in peft_model.parameters()):
        raise ModelError("LoRA wrapping left no trainable parameters")
    return peft_model


def load_adapter(base_model: PreTrainedModel, adapter_dir: str | os.PathLike) -> PeftModel:
    """Base model + a saved adapter, ready for gradients (LoRA parameters trainable)."""
    return PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=True)


def lora_parameters(model) -> list[tuple[str, torch.nn.Parameter]]:
    """Trainable parameters in the fixed order that defines the flattened gradient."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]
