"""Language-model environments: the model that answers e2p's prompts, behind one batched interface.

e2p searches for a prompt whose answer lands near a target embedding, so every candidate prompt is answered by an
"environment" LM. Every environment has the same verb:

    lm.generate(prompts, max_new_tokens=128, temperature=0.0, seed=0) -> list[str]     # answers in input order

- `LocalChatLM`: SmolLM2-135M-Instruct (`e2p_lib.smollm`) on CPU or CUDA, with its chat template, batched with left
  padding, prompts sorted by length. The offline default.
- `OpenAIChatLM` (in `e2p_lib.openai_lm`): any OpenAI-compatible chat endpoint, rate-limited and retried.
- `CachedLM` (in `e2p_lib.answer_cache`): wraps either; each (model, settings, prompt, parameters, seed) is
  answered once, ever, and a killed run resumes.
- `make_lm("local" | "openai", ...)` builds one, cached by default.

    >>> lm = make_lm("local")                                # SmolLM2, answers cached under data_dir()/answers
    >>> lm.generate(["What is the capital of France?"])
    ['The capital of France is Paris.']
    >>> lm.generate(prompts, temperature=0.7, seed=[0, 1, 2])   # one seed per prompt: 3 samples of one prompt

Generation parameters and their defaults (why):
    max_new_tokens  128: Alpaca's reference outputs have a median of 43 and a mean of 57 cl100k tokens, and 90% have
                    at most 122 (SmolLM2's tokenizer counts ~4% more); answers past that are rare and cost the most.
    temperature     0.0 means greedy decoding (the seed is then ignored, also by the answer cache). Above 0, tokens
                    are sampled from softmax(logits / temperature), cut to the `top_p` nucleus (an LM setting).
    seed            an int for every prompt, or one int per prompt. Each prompt draws from its own random stream,
                    seeded by (seed, prompt), so its answer does not depend on the other prompts in the call, on the
                    batch size, or on its position: the same (prompt, seed) gives the same sample. Ask for several
                    samples of one prompt with several seeds.
    system prompt   an LM setting (`system_prompt`), not a call argument; see `DEFAULT_SYSTEM_PROMPT`.

What holds for LocalChatLM in float32, its default (tested here on CPU; checked on an H100): sampled answers with a
seed repeat exactly, whatever the batch size, batch mates and order; greedy answers in a batch equal those generated
one by one (48 of 48 Alpaca prompts, 64 tokens, on CUDA), and CUDA's equal the CPU's (16 of 16, 32 tokens). Left
padding changes the shapes of the matrix products, so float rounding can differ in the last bits; where two tokens
are within rounding of each other an answer could still flip (not seen in float32). In bfloat16 it is common: on the
H100 only 31 of 48 greedy and 9 of 48 sampled answers survived a change of batch, for no gain in speed (the 135M
model is bound by per-step overhead there, not by arithmetic), hence float32 everywhere by default.

Speed (bench/lm_generate.py, 32 Alpaca prompts, greedy, 128 new tokens at most, answer tokens per second at batch
sizes 1 / 8 / 16 / 32): H100 float32 33 / 150 / 283 / 538 (64: 615); 16 idle CPU cores, 16 threads, batch 8 / 32:
122 / 262; 2 busy CPU cores, 1 thread: 8 / 18 / 26 / 30. Per decoding step the model costs about the same at any
batch size up to 64 on the GPU (launch overhead, not arithmetic), so use the largest batch that fits: the default is 32.

Bad input is refused before any work: a single string instead of a list, a non-string or blank prompt,
`max_new_tokens` not a positive integer, a negative or non-finite temperature, a seed that is not an integer (or a
seed list of the wrong length). Each error names the values and the fix.

Outline: defaults -> input checks -> ChatLM base class -> per-prompt sampling -> LocalChatLM -> make_lm.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterator, Sequence

from e2p_lib.embedders import check_texts

logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 128  # see the module docstring
DEFAULT_TEMPERATURE = 0.0  # greedy
DEFAULT_SEED = 0
# Alpaca's answers are short (median 43 tokens). On 32 Alpaca prompts (bench/lm_system_prompt.py), SmolLM2's own
# system prompt gave answers of median 94 tokens, 41% cut at 128, mean cosine to the reference 0.670 (MiniLM); this one
# gave median 52, 31% cut, cosine 0.655; Alpaca's preamble 93, 47%, 0.633. The cosines are equal within noise
# (16 prompts ranked them the other way), so the length decides: closer to Alpaca, and half the tokens to generate.
DEFAULT_SYSTEM_PROMPT: str | None = ("You are a helpful assistant. Answer the request directly and concisely, "
                                     "in under 100 words.")
BACKENDS = ("local", "openai")


# ---------------------------------------------------------------------------------------------------------------------
# Input checks


def check_prompts(prompts: Sequence[str]) -> list[str]:
    """`prompts` as a list, or raise naming every position that is not a non-blank string."""
    return check_texts(prompts, verb="generate()", item="prompt", noun="prompt",
                       advice="An LM cannot answer them; drop or fill them first.")


def check_generation_args(n_prompts: int, max_new_tokens: int, temperature: float,
                          seed: int | Sequence[int]) -> list[int]:
    """Check the generation parameters; return one seed per prompt."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a positive integer "
                         f"(default {DEFAULT_MAX_NEW_TOKENS}).")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature < 0:
        raise ValueError(f"temperature={temperature!r} must be a finite number >= 0 (0 = greedy decoding).")
    seeds = [seed] * n_prompts if _is_int(seed) else seed
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__len__"):
        raise TypeError(f"seed={seed!r} must be an int, or a sequence of ints with one per prompt.")
    seeds = list(seeds)
    if len(seeds) != n_prompts:
        raise ValueError(f"Got {len(seeds)} seeds for {n_prompts} prompts: pass one int, or one seed per prompt.")
    bad = [i for i, s in enumerate(seeds) if not _is_int(s)]
    if bad:
        raise TypeError(f"Seeds must be integers; position {bad[0]} is {seeds[bad[0]]!r}.")
    return [int(s) for s in seeds]


def check_answer_settings(system_prompt: str | None, top_p: float) -> tuple[str | None, float]:
    """The settings every environment shares, checked: (system_prompt, top_p as float)."""
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise TypeError(f"system_prompt must be a string or None, got {type(system_prompt).__name__}.")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p!r} must be in (0, 1] (1.0: no nucleus cut).")
    return system_prompt, float(top_p)


def _is_int(value: Any) -> bool:
    import numbers

    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def prompt_seed(seed: int, prompt: str) -> int:
    """The seed of one prompt's random stream: a hash of (seed, prompt), the same on every machine and process."""
    digest = hashlib.blake2b(f"{seed}\n{prompt}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


# ---------------------------------------------------------------------------------------------------------------------
# The interface


class ChatLM(ABC):
    """A chat model that answers a list of user prompts: subclasses implement `_iter_generate`.

    `name` identifies the model ("local/SmolLM2-135M-Instruct", "openai/gpt-4o-mini"), `settings()` everything
    else that changes its answers (system prompt, top_p, dtype...): together they key the answer cache.
    """

    name: str

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """JSON-serialisable settings that change the answers, beside the call's own parameters."""

    @abstractmethod
    def _iter_generate(self, prompts: list[str], max_new_tokens: int, temperature: float,
                       seeds: list[int]) -> Iterator[tuple[list[int], list[str]]]:
        """Yield (positions in `prompts`, answers) as they finish; every position exactly once. Inputs are checked."""

    def iter_generate(self, prompts: Sequence[str], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                      temperature: float = DEFAULT_TEMPERATURE,
                      seed: int | Sequence[int] = DEFAULT_SEED) -> Iterator[tuple[list[int], list[str]]]:
        """Like `generate`, but yield (positions, answers) batch by batch as they finish, so callers can save each.

        Raises:
            TypeError / ValueError: bad prompts or parameters (see the module docstring), before any work.
        """
        prompts = check_prompts(prompts)
        seeds = check_generation_args(len(prompts), max_new_tokens, temperature, seed)
        if prompts:
            yield from self._iter_generate(prompts, max_new_tokens, float(temperature), seeds)

    def generate(self, prompts: Sequence[str], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 temperature: float = DEFAULT_TEMPERATURE, seed: int | Sequence[int] = DEFAULT_SEED) -> list[str]:
        """One answer per prompt, in input order (see the module docstring for the parameters)."""
        prompts = check_prompts(prompts)
        answers: list[str | None] = [None] * len(prompts)
        for positions, batch in self.iter_generate(prompts, max_new_tokens, temperature, seed):
            for position, answer in zip(positions, batch):
                answers[position] = answer
        missing = [i for i, a in enumerate(answers) if a is None]
        if missing:  # a backend bug, not bad input
            raise RuntimeError(f"{self.name} returned no answer for prompt(s) {missing[:10]}.")
        return answers  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, settings={self.settings()!r})"


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


def count_answer_tokens(new_tokens, stop_token_ids: Sequence[int]) -> int:
    """Tokens generated in a (batch, steps) tensor: each row up to and including its first stop token."""
    import torch

    is_stop = torch.isin(new_tokens, torch.tensor(stop_token_ids, device=new_tokens.device)).int()
    after_first_stop = (is_stop.cumsum(dim=1) - is_stop) > 0  # padding is a stop token too, so it is excluded
    return int((~after_first_stop).sum())


class LocalChatLM(ChatLM):
    """SmolLM2-135M-Instruct on this machine: batched, left-padded, sorted by length, deterministic with a seed.

    Parameters that control the model:
        device: "auto" (CUDA when available), "cpu", "cuda"...; dtype: "float32" (see the module docstring for why
            not bfloat16), "bfloat16" or "float16".
        model_dir: the converted SmolLM2 folder (None: `e2p_lib.smollm.smollm2_path()`, converting on first use).
    Parameters that control the answers (part of the answer-cache key):
        system_prompt: None keeps SmolLM2's built-in one; a string replaces it ("" leaves the system turn empty).
        top_p: nucleus sampling when temperature > 0 (1.0: the full distribution).
    Parameters that control speed:
        batch_size: prompts per forward pass (see bench/lm_generate.py for throughput by batch size).
        num_threads: torch CPU threads (None: leave torch's setting, one per core). torch's setting is
            process-wide, so this changes it for everything else in the process too. Use 1 where the cores are
            shared with other busy processes: there torch's threads spin against them, and on 2 busy cores the
            same answers took 10-40x longer on 2 threads than on 1 (measured).
        show_progress: a progress bar over prompts when there is more than one batch.
    """

    def __init__(self, device: str = "auto", dtype: str = "float32", *,
                 system_prompt: str | None = DEFAULT_SYSTEM_PROMPT, top_p: float = 1.0, batch_size: int = 32,
                 num_threads: int | None = None, model_dir: str | Path | None = None, show_progress: bool = True):
        import torch

        from e2p_lib.smollm import MODEL_NAME, load_smollm2

        self.system_prompt, self.top_p = check_answer_settings(system_prompt, top_p)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer.")
        if num_threads is not None:
            if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
                raise ValueError(f"num_threads={num_threads!r} must be a positive integer or None.")
            torch.set_num_threads(num_threads)
        self.model, self.tokenizer = load_smollm2(device, dtype, model_dir)
        self.name = f"local/{MODEL_NAME}"
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.device = self.model.device
        self.max_context_tokens = int(self.model.config.max_position_embeddings)
        # Stop at <|im_end|> (the end of an assistant turn) and, defensively, at <|endoftext|>.
        self.stop_token_ids = sorted({self.tokenizer.eos_token_id,
                                      self.tokenizer.convert_tokens_to_ids("<|endoftext|>")})
        self.prompts_generated = 0  # prompts this instance has answered (the answer cache's tests read it)
        self.tokens_generated = 0  # answer tokens, each stop token included, padding not (for throughput)

    def settings(self) -> dict[str, Any]:
        return {"system_prompt": self.system_prompt, "top_p": self.top_p,
                "dtype": str(self.model.dtype).removeprefix("torch.")}

    def chat_text(self, prompt: str) -> str:
        """The exact text the model reads for `prompt`: chat template, system turn, and the assistant's header."""
        messages = [{"role": "user", "content": prompt}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _iter_generate(self, prompts, max_new_tokens, temperature, seeds):
        import torch
        from tqdm.auto import tqdm

        # 1. render and tokenize every prompt once (the template already holds the special tokens)
        token_ids = self.tokenizer([self.chat_text(p) for p in prompts], add_special_tokens=False)["input_ids"]
        too_long = [i for i, ids in enumerate(token_ids) if len(ids) + max_new_tokens > self.max_context_tokens]
        if too_long:
            i = too_long[0]
            raise ValueError(
                f"{len(too_long)} prompt(s) do not fit the {self.max_context_tokens}-token context with "
                f"max_new_tokens={max_new_tokens} (prompt {i} has {len(token_ids[i])} tokens with the chat "
                "template). Shorten them or lower max_new_tokens."
            )
        # 2. longest first: batches hold prompts of similar length (little padding), and memory peaks come first
        order = sorted(range(len(prompts)), key=lambda i: -len(token_ids[i]))
        processors = self._logits_processors(temperature)
        started, tokens_before = time.perf_counter(), self.tokens_generated
        with tqdm(total=len(prompts), desc=f"generate ({self.name})", unit="prompt",
                  disable=not self.show_progress or len(prompts) <= self.batch_size) as bar:
            for start in range(0, len(order), self.batch_size):
                positions = order[start:start + self.batch_size]
                # 3. left padding: every row's last prompt token sits at the same index, where generation appends
                batch = self.tokenizer.pad({"input_ids": [token_ids[i] for i in positions]}, padding=True,
                                           padding_side="left", return_tensors="pt").to(self.device)
                batch_processors = list(processors)
                if temperature > 0:
                    batch_processors.append(make_prompt_sampler([prompt_seed(seeds[i], prompts[i])
                                                                 for i in positions]))
                with torch.inference_mode():
                    output = self.model.generate(
                        **batch, max_new_tokens=max_new_tokens, do_sample=False,
                        logits_processor=batch_processors, eos_token_id=self.stop_token_ids,
                        pad_token_id=self.tokenizer.pad_token_id, use_cache=True,
                    )
                # 4. the new tokens only; padding after a finished answer is a special token, skipped here
                new_tokens = output[:, batch["input_ids"].shape[1]:]  # (batch, steps)
                answers = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                self.prompts_generated += len(positions)
                self.tokens_generated += count_answer_tokens(new_tokens, self.stop_token_ids)
                bar.update(len(positions))
                yield positions, [a.strip() for a in answers]
        seconds = time.perf_counter() - started
        logger.info("%s: %d prompts, %d answer tokens in %.1f s (%.1f tokens/s)", self.name, len(prompts),
                    self.tokens_generated - tokens_before, seconds, (self.tokens_generated - tokens_before) / seconds)

    def _logits_processors(self, temperature: float) -> list:
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        if temperature == 0:
            return LogitsProcessorList()
        processors = [TemperatureLogitsWarper(temperature)]
        if self.top_p < 1.0:
            processors.append(TopPLogitsWarper(self.top_p))
        return LogitsProcessorList(processors)


# ---------------------------------------------------------------------------------------------------------------------
# Factory


def make_lm(backend: str = "local", *, cache: bool = True, cache_dir: str | Path | None = None, **options) -> ChatLM:
    """Build an environment LM: "local" (SmolLM2, offline) or "openai" (any OpenAI-compatible endpoint).

    `cache=True` wraps it in `CachedLM` with the answer cache in `cache_dir` (None: `config.data_dir()/answers`);
    `options` go to `LocalChatLM` / `OpenAIChatLM`.
    """
    if backend == "local":
        lm: ChatLM = LocalChatLM(**options)
    elif backend == "openai":
        from e2p_lib.openai_lm import OpenAIChatLM

        lm = OpenAIChatLM(**options)
    else:
        raise ValueError(f"Unknown LM backend {backend!r}: use one of {BACKENDS}.")
    if not cache:
        if cache_dir is not None:
            raise ValueError("cache_dir is given but cache=False: drop one of them.")
        return lm
    from e2p_lib.answer_cache import CachedLM

    return CachedLM(lm, cache_dir)
