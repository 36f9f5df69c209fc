"""CTranslate2ChatLM: SmolLM2-135M-Instruct on CTranslate2, the fast local environment (the default of `make_lm`).

CTranslate2 is a C++ inference engine for Transformer models: on CPU it spends less CPU time per answer token than
transformers (docs/benchmarks.md#environment-engines), which is what a machine with few shared cores is short of.

    >>> lm = CTranslate2ChatLM()                     # float32: transformers' answers, fewer CPU seconds
    >>> CTranslate2ChatLM(compute_type="int8")       # int8 weights: less CPU time, answers worded differently
    >>> lm.generate(["What is the capital of France?"], max_new_tokens=32)
    ['The capital of France is Paris.']

- The model: SmolLM2's safetensors folder (`e2p_lib.lm.smollm.smollm2_path`) converted once by CTranslate2's own
  `TransformersConverter` into `config.data_dir()/models/smollm2-135m-instruct-ct2/` (float32 weights; int8 is
  applied when the model is loaded). The conversion writes into a temporary folder beside it and renames it into
  place, so a killed conversion leaves nothing that loads; a folder found incomplete is converted again.
- The text: the same chat template, system prompt and tokenizer as `LocalChatLM` (`chat_token_ids`), and the same
  stop tokens, so the engines differ only in arithmetic. float32 greedy answers equal transformers' (tested).
- Greedy decoding (temperature 0) runs here, batched and length-sorted. `generate_batch` forwards the first
  (shortest-row) tokens of every row at once and the rest of each prompt step by step, so a row's arithmetic
  depends on its batch mates' lengths, and in int8 many answers change with the batch.
  An int8 batch therefore carries one extra row, the chat template's fixed prefix (`anchor_tokens`), which is
  shorter than any prompt: every prompt then takes the same path (that prefix at once, the rest step by step)
  whatever its batch, and greedy answers equal those generated one by one (tested). It costs more than a row:
  every prompt token after the prefix becomes a decoding step. float32 needs no anchor: its answers did not change
  with the batch or the anchor on any prompt measured (tested), and without it a batch of 64 is faster than the
  anchored 32. On CPU the batches go to one single-threaded worker per core (`workers`), two at a time on 2 cores,
  faster than one two-threaded worker; float32 answers do not change (tested; docs/benchmarks.md#environment-batching).
- Sampling (temperature > 0) is delegated to `LocalChatLM` (transformers, float32), loaded on first use.
  Why: CTranslate2 4.8 draws every row of a batch from one random generator per worker thread, seeded once when that
  thread first samples (`set_random_seed` later has no effect on a running Generator). A prompt's sample would then
  depend on its batch mates, its position and every earlier call. The only per-prompt reset is loading a new
  Generator per prompt, slower than transformers. LocalChatLM's per-prompt random streams give the contract: the
  same (prompt, seed) gives the same sample whatever the batch and order.
- Answer-cache keys: `settings()` names the engine and the resolved compute type, so the answers of transformers,
  CTranslate2 float32 and CTranslate2 int8 never share a key (see `e2p_lib.lm.cache`).
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from e2p_lib import config
from e2p_lib.atomic import publish_folder
from e2p_lib.checks import check_positive_int
from e2p_lib.lm.base import DEFAULT_SYSTEM_PROMPT, ChatLM, check_answer_settings
from e2p_lib.lm.local import LocalChatLM, chat_token_ids, longest_first

logger = logging.getLogger(__name__)

ENGINE = "ctranslate2"
CT2_FOLDER = "smollm2-135m-instruct-ct2"
# The files a finished conversion holds (CTranslate2's model layout); the rename makes them appear together.
CT2_FILES = ("model.bin", "config.json", "vocabulary.json")
# "int8": int8_float32 on CPU, int8_float16 on CUDA (CTranslate2 picks); docs/benchmarks.md#environment-engines.
COMPUTE_TYPES = ("float32", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "float16", "bfloat16")
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")  # as LocalChatLM: the end of an assistant turn, and end of text


def _ctranslate2():
    try:
        import ctranslate2
    except ImportError as error:  # an optional engine: name the fix
        raise ImportError(
            "The CTranslate2 environment needs the ctranslate2 package: pip install ctranslate2==4.8.5 "
            "(or use make_lm('local', engine='transformers'))."
        ) from error
    return ctranslate2


# ---------------------------------------------------------------------------------------------------------------------
# Conversion, once


def default_ct2_dir() -> Path:
    return config.data_dir() / "models" / CT2_FOLDER


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in CT2_FILES)


def ct2_model_path(ct2_dir: str | Path | None = None, model_dir: str | Path | None = None) -> Path:
    """The CTranslate2 folder of SmolLM2, converting `model_dir` (None: `smollm2_path()`) on first use.

    Atomic: the converter writes into a `.part` folder beside the target, which is renamed into place when complete.
    A target folder that exists without all of `CT2_FILES` (not made by this function) is removed and redone.
    """
    from e2p_lib.lm.smollm import smollm2_path

    target = Path(ct2_dir) if ct2_dir is not None else default_ct2_dir()
    if _is_complete(target):
        return target
    if target.exists():
        logger.warning(
            "%s is not a complete CTranslate2 model (it lacks some of %s): converting again.", target, CT2_FILES
        )
        shutil.rmtree(target)
    source = smollm2_path(model_dir)
    logger.info("Converting %s to CTranslate2 in %s (once; ~20 s).", source, target)

    # float32 weights: the compute type (float32 or int8) is chosen at load time from the same folder.
    def write(staging: Path) -> None:
        _ctranslate2().converters.TransformersConverter(str(source)).convert(str(staging), force=True)

    if not publish_folder(target, write, _is_complete, "CTranslate2's converter"):
        logger.info("Another process converted SmolLM2 to CTranslate2 first; using its folder.")
    return target


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow), else cpu_count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------------------------------
# The environment


class CTranslate2ChatLM(ChatLM):
    """SmolLM2-135M-Instruct on CTranslate2: batched greedy answers; sampled ones through `LocalChatLM`.

    Parameters that control the model:
        compute_type: "float32" (the default: the same answers as transformers float32) or "int8" (int8 weights,
            float32 activations on CPU: faster, but its answers to Alpaca's prompts land further from Alpaca's outputs
            than the project allows, docs/experiments.md#environment-engine); also "int8_float16", "float16"... on CUDA.
            Part of the answer-cache key, resolved ("int8" -> "int8_float32" on CPU).
        device: "cpu", "cuda" or "auto" (CUDA when CTranslate2 sees a GPU).
        model_dir: the transformers SmolLM2 folder to convert (None: `smollm2_path()`);
        ct2_dir: where the converted model lives (None: `config.data_dir()/models/smollm2-135m-instruct-ct2`).
    Parameters that control the answers (part of the answer-cache key):
        system_prompt, top_p: as `LocalChatLM` (top_p applies to sampled answers, which LocalChatLM generates).
    Parameters that control speed:
        batch_size: prompts per `generate_batch` call (64: docs/benchmarks.md#environment-batching).
        anchor_row: add the anchor row to every batch (None: for int8 compute types only; see the module docstring).
        num_threads: CTranslate2 threads in all (None: the cores this process may use, `default_threads()`).
            Unlike torch's, this setting belongs to this model only.
        workers: batches answered at once, each on `num_threads // workers` threads (None: on CPU one worker per
            thread, each single-threaded; on CUDA one). A call is split so that every worker gets a batch: the 135M
            model's small matrix products gain little from a second thread (docs/benchmarks.md#environment-batching).
        show_progress: passed to the sampling LocalChatLM.
    """

    def __init__(
        self,
        compute_type: str = "float32",
        *,
        device: str = "cpu",
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        top_p: float = 1.0,
        batch_size: int = 64,
        anchor_row: bool | None = None,
        num_threads: int | None = None,
        workers: int | None = None,
        model_dir: str | Path | None = None,
        ct2_dir: str | Path | None = None,
        show_progress: bool = True,
    ):
        from transformers import AutoConfig, AutoTokenizer

        from e2p_lib.lm.smollm import MODEL_NAME, _ensure_pad_token, smollm2_path

        ctranslate2 = _ctranslate2()
        self.system_prompt, self.top_p = check_answer_settings(system_prompt, top_p)
        if compute_type not in COMPUTE_TYPES:
            raise ValueError(f"compute_type={compute_type!r} is not one of {COMPUTE_TYPES}.")
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device={device!r}: CTranslate2 runs on 'cpu' or 'cuda' (or 'auto').")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.num_threads = default_threads() if num_threads is None else check_positive_int(num_threads, "num_threads")
        if workers is None:
            workers = self.num_threads if device == "cpu" else 1
        self.workers = check_positive_int(workers, "workers")
        if device == "cpu" and self.workers > self.num_threads:
            raise ValueError(
                f"workers={workers} is more than num_threads={self.num_threads}: each worker needs a thread; "
                "pass workers <= num_threads (or leave it None)."
            )
        self.model_dir = smollm2_path(model_dir)
        self.ct2_dir = ct2_model_path(ct2_dir, self.model_dir)
        # Loading a Generator with intra_threads=1 sets the calling thread's OpenMP count, which torch shares, to 1:
        # every later torch step of the process (the policy's and PPO's training, the forward model) then ran on one
        # core (docs/benchmarks.md#torch-threads), hence torch's count put back after the load.
        from e2p_lib.devices import torch_threads

        with torch_threads():
            self.generator = ctranslate2.Generator(
                str(self.ct2_dir),
                device=device,
                compute_type=compute_type,
                inter_threads=self.workers,
                intra_threads=max(1, self.num_threads // self.workers),
            )
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        _ensure_pad_token(self.tokenizer)
        self.name = f"local/{MODEL_NAME}"  # the same model as LocalChatLM: one answer file, keys differ by settings
        self.device = device
        self.compute_type = self.generator.compute_type  # resolved: "int8" -> "int8_float32" on CPU
        self.max_context_tokens = int(AutoConfig.from_pretrained(self.model_dir).max_position_embeddings)
        self.anchor_tokens = self._anchor_tokens()
        self.anchor_row = self.compute_type.startswith("int8") if anchor_row is None else bool(anchor_row)
        self.show_progress = show_progress
        self._sampler: LocalChatLM | None = None
        self.prompts_generated = 0  # prompts answered greedily by CTranslate2 (sampled ones count in the sampler)
        self.tokens_generated = 0  # answer tokens, each stop token included (for throughput)

    def settings(self) -> dict[str, Any]:
        return {
            "system_prompt": self.system_prompt,
            "top_p": self.top_p,
            "engine": ENGINE,
            "compute_type": self.compute_type,
        }

    def _anchor_tokens(self) -> list[str]:
        """The tokens every chat text starts with (system turn, user header): the extra row of each batch."""
        first, second = chat_token_ids(
            self.tokenizer, self.system_prompt, ["Hello.", "Bye."], 1, self.max_context_tokens
        )
        length = next(i for i, (a, b) in enumerate(zip(first, second)) if a != b)
        return self.tokenizer.convert_ids_to_tokens(first[:length])

    @property
    def sampler(self) -> LocalChatLM:
        """The transformers float32 model that answers sampled calls (see the module docstring), loaded on first use."""
        if self._sampler is None:
            self._sampler = LocalChatLM(
                device=self.device,
                dtype="float32",
                system_prompt=self.system_prompt,
                top_p=self.top_p,
                batch_size=self.batch_size,
                model_dir=self.model_dir,
                show_progress=self.show_progress,
            )
        return self._sampler

    def _submit(self, token_ids: list[list[int]], max_new_tokens: int) -> list:
        """Queue one greedy (top-1) batch, in int8 with the anchor row last (module docstring): async results."""
        anchor = [self.anchor_tokens] if self.anchor_row else []
        return self.generator.generate_batch(
            [self.tokenizer.convert_ids_to_tokens(ids) for ids in token_ids] + anchor,
            max_length=max_new_tokens,
            sampling_topk=1,
            include_prompt_in_result=False,
            end_token=list(STOP_TOKENS),
            asynchronous=True,
        )

    def _collect(self, positions: list[int], pending: list, max_new_tokens: int) -> tuple[list[int], list[str]]:
        """Wait for one queued batch: its positions and decoded answers (the anchor row's result is dropped)."""
        answers = []
        for result in pending[: len(positions)]:
            ids = result.result().sequences_ids[0]  # the stop token is not included
            self.tokens_generated += len(ids) + (len(ids) < max_new_tokens)
            answers.append(self.tokenizer.decode(ids, skip_special_tokens=True).strip())
        self.prompts_generated += len(positions)
        return positions, answers

    def _iter_generate(self, prompts, max_new_tokens, temperature, seeds):
        if temperature > 0:
            yield from self.sampler._iter_generate(prompts, max_new_tokens, temperature, seeds)
            return
        # 1. the same chat text and tokens as LocalChatLM; 2. longest first, so batches need little padding
        token_ids = chat_token_ids(self.tokenizer, self.system_prompt, prompts, max_new_tokens, self.max_context_tokens)
        order = longest_first(token_ids)
        started, tokens_before = time.perf_counter(), self.tokens_generated
        # 3. batches small enough that every worker gets one, queued a few ahead and collected in order
        size = max(1, min(self.batch_size, -(-len(order) // self.workers)))
        queued: collections.deque = collections.deque()
        for start in range(0, len(order), size):
            positions = order[start : start + size]
            queued.append((positions, self._submit([token_ids[i] for i in positions], max_new_tokens)))
            if len(queued) > 2 * self.workers:
                yield self._collect(*queued.popleft(), max_new_tokens)
        while queued:
            yield self._collect(*queued.popleft(), max_new_tokens)
        seconds = time.perf_counter() - started
        logger.info(
            "%s (CTranslate2 %s): %d prompts, %d answer tokens in %.1f s",
            self.name,
            self.compute_type,
            len(prompts),
            self.tokens_generated - tokens_before,
            seconds,
        )
