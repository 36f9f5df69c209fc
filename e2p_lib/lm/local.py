"""LocalChatLM: SmolLM2-135M-Instruct on this machine, batched, with one random stream per prompt."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from e2p_lib.checks import check_int, check_positive_int
from e2p_lib.lm.base import DEFAULT_SYSTEM_PROMPT, ChatLM, check_answer_settings, prompt_seed

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------------
# Sampling with one random stream per prompt


def make_prompt_sampler(row_seeds: Sequence[int]):
    """A transformers LogitsProcessor that samples each row from its own stream and forces that token.

    transformers samples a batch with one global generator, so a prompt's sample would depend on its batch mates.
    Here row i draws one uniform number per step from `random.Random(row_seeds[i])` and picks its token by inverse
    CDF; every other token gets -inf, so greedy decoding (`do_sample=False`) then emits exactly that token.
    Temperature and top-p run before it, as transformers' own warpers.
    """
    import torch
    from transformers import LogitsProcessor

    class PromptSampler(LogitsProcessor):
        def __init__(self):
            self.streams = [random.Random(s) for s in row_seeds]

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            probs = torch.softmax(scores.float(), dim=-1)  # (batch, vocab); -inf from top-p -> 0
            cdf = probs.cumsum(dim=-1)
            uniforms = torch.tensor([[stream.random()] for stream in self.streams], device=scores.device)
            # right=True: the first token whose cumulative mass exceeds u, so a zero-probability token is never hit
            tokens = torch.searchsorted(cdf, uniforms * cdf[:, -1:], right=True).clamp_(max=scores.shape[-1] - 1)
            forced = torch.full_like(scores, -math.inf)
            return forced.scatter_(1, tokens, 0.0)

    return PromptSampler()


# ---------------------------------------------------------------------------------------------------------------------
# The local model


def chat_text(tokenizer, system_prompt: str | None, prompt: str) -> str:
    """The exact text SmolLM2 reads for `prompt`: chat template, system turn, and the assistant's header.

    Shared by every local engine (transformers, CTranslate2), so their answers differ only by the engine.
    """
    messages = [{"role": "user", "content": prompt}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def chat_token_ids(
    tokenizer, system_prompt: str | None, prompts: Sequence[str], max_new_tokens: int, max_context_tokens: int
) -> list[list[int]]:
    """Token ids of every prompt's chat text (the template holds the special tokens); raise if one does not fit."""
    token_ids = tokenizer([chat_text(tokenizer, system_prompt, p) for p in prompts], add_special_tokens=False)[
        "input_ids"
    ]
    too_long = [i for i, ids in enumerate(token_ids) if len(ids) + max_new_tokens > max_context_tokens]
    if too_long:
        i = too_long[0]
        raise ValueError(
            f"{len(too_long)} prompt(s) do not fit the {max_context_tokens}-token context with "
            f"max_new_tokens={max_new_tokens} (prompt {i} has {len(token_ids[i])} tokens with the chat "
            "template). Shorten them or lower max_new_tokens."
        )
    return token_ids


def longest_first(token_ids: Sequence[Sequence[int]]) -> list[int]:
    """Positions by decreasing length: batches hold prompts of similar length (little padding), memory peaks first."""
    return sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))


def count_answer_tokens(new_tokens, stop_token_ids: Sequence[int]) -> int:
    """Tokens generated in a (batch, steps) tensor: each row up to and including its first stop token."""
    import torch

    is_stop = torch.isin(new_tokens, torch.tensor(stop_token_ids, device=new_tokens.device)).int()
    after_first_stop = (is_stop.cumsum(dim=1) - is_stop) > 0  # padding is a stop token too, so it is excluded
    return int((~after_first_stop).sum())


class LocalChatLM(ChatLM):
    """SmolLM2-135M-Instruct on this machine: batched, left-padded, sorted by length, deterministic with a seed.

    Parameters that control the model:
        device: "auto" (CUDA when available), "cpu", "cuda"...; dtype: "float32" (see `e2p_lib.lm` for why not
            bfloat16), "bfloat16" or "float16".
        model_dir: the converted SmolLM2 folder (None: `e2p_lib.lm.smollm.smollm2_path()`, converting on first use).
    Parameters that control the answers (part of the answer-cache key):
        system_prompt: None keeps SmolLM2's built-in one; a string replaces it ("" leaves the system turn empty).
        top_p: nucleus sampling when temperature > 0 (1.0: the full distribution).
    Parameters that control speed:
        batch_size: prompts per forward pass (throughput by batch size: docs/benchmarks.md#environment-engines).
        num_threads: torch CPU threads (None: leave torch's setting, one per core). torch's setting is
            process-wide, so this changes it for everything else in the process too. Use 1 where the cores are
            shared with other busy processes: there torch's threads spin against them
            (docs/benchmarks.md#environment-engines).
        show_progress: a progress bar over prompts when there is more than one batch.
    """

    def __init__(
        self,
        device: str = "auto",
        dtype: str = "float32",
        *,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        top_p: float = 1.0,
        batch_size: int = 32,
        num_threads: int | None = None,
        model_dir: str | Path | None = None,
        show_progress: bool = True,
    ):
        import torch

        from e2p_lib.lm.smollm import MODEL_NAME, load_smollm2

        self.system_prompt, self.top_p = check_answer_settings(system_prompt, top_p)
        check_positive_int(batch_size, "batch_size")
        if num_threads is not None:
            torch.set_num_threads(check_int(num_threads, "num_threads", hint=" or None"))
        self.model, self.tokenizer = load_smollm2(device, dtype, model_dir)
        self.name = f"local/{MODEL_NAME}"
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.device = self.model.device
        self.max_context_tokens = int(self.model.config.max_position_embeddings)
        # Stop at <|im_end|> (the end of an assistant turn) and, defensively, at <|endoftext|>.
        self.stop_token_ids = sorted(
            {self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|endoftext|>")}
        )
        self.prompts_generated = 0  # prompts this instance has answered (the answer cache's tests read it)
        self.tokens_generated = 0  # answer tokens, each stop token included, padding not (for throughput)

    def settings(self) -> dict[str, Any]:
        return {
            "system_prompt": self.system_prompt,
            "top_p": self.top_p,
            "dtype": str(self.model.dtype).removeprefix("torch."),
        }

    def chat_text(self, prompt: str) -> str:
        """The exact text the model reads for `prompt`: chat template, system turn, and the assistant's header."""
        return chat_text(self.tokenizer, self.system_prompt, prompt)

    def _iter_generate(self, prompts, max_new_tokens, temperature, seeds):
        import torch
        from tqdm.auto import tqdm

        # 1. render and tokenize every prompt once; 2. longest first
        token_ids = chat_token_ids(self.tokenizer, self.system_prompt, prompts, max_new_tokens, self.max_context_tokens)
        order = longest_first(token_ids)
        processors = self._logits_processors(temperature)
        started, tokens_before = time.perf_counter(), self.tokens_generated
        with tqdm(
            total=len(prompts),
            desc=f"generate ({self.name})",
            unit="prompt",
            disable=not self.show_progress or len(prompts) <= self.batch_size,
        ) as bar:
            for start in range(0, len(order), self.batch_size):
                positions = order[start : start + self.batch_size]
                # 3. left padding: every row's last prompt token sits at the same index, where generation appends
                batch = self.tokenizer.pad(
                    {"input_ids": [token_ids[i] for i in positions]},
                    padding=True,
                    padding_side="left",
                    return_tensors="pt",
                ).to(self.device)
                batch_processors = list(processors)
                if temperature > 0:
                    batch_processors.append(make_prompt_sampler([prompt_seed(seeds[i], prompts[i]) for i in positions]))
                with torch.inference_mode():
                    output = self.model.generate(
                        **batch,
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        logits_processor=batch_processors,
                        eos_token_id=self.stop_token_ids,
                        pad_token_id=self.tokenizer.pad_token_id,
                        use_cache=True,
                    )
                # 4. the new tokens only; padding after a finished answer is a special token, skipped here
                new_tokens = output[:, batch["input_ids"].shape[1] :]  # (batch, steps)
                answers = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                self.prompts_generated += len(positions)
                self.tokens_generated += count_answer_tokens(new_tokens, self.stop_token_ids)
                bar.update(len(positions))
                yield positions, [a.strip() for a in answers]
        seconds = time.perf_counter() - started
        logger.info(
            "%s: %d prompts, %d answer tokens in %.1f s (%.1f tokens/s)",
            self.name,
            len(prompts),
            self.tokens_generated - tokens_before,
            seconds,
            (self.tokens_generated - tokens_before) / seconds,
        )

    def _logits_processors(self, temperature: float) -> list:
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        if temperature == 0:
            return LogitsProcessorList()
        processors = [TemperatureLogitsWarper(temperature)]
        if self.top_p < 1.0:
            processors.append(TopPLogitsWarper(self.top_p))
        return LogitsProcessorList(processors)
