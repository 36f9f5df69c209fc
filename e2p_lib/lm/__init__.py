"""Language-model environments: the model that answers e2p's prompts, behind one batched interface.

e2p searches for a prompt whose answer lands near a target embedding, so every candidate prompt is answered by an
"environment" LM. Every environment has the same verb:

    lm.generate(prompts, max_new_tokens=128, temperature=0.0, seed=0) -> list[str]     # answers in input order

- `CTranslate2ChatLM` (in `e2p_lib.lm.ctranslate2`): SmolLM2-135M-Instruct on CTranslate2, float32 by default. The
  offline default (`make_lm("local")`): the same chat template, fewer CPU seconds per answer token; sampled answers
  come from `LocalChatLM`.
- `LocalChatLM`: SmolLM2-135M-Instruct (`e2p_lib.lm.smollm`) on transformers, CPU or CUDA, with its chat template,
  batched with left padding, prompts sorted by length (`make_lm("local", engine="transformers")`).
- `OpenAIChatLM` (in `e2p_lib.lm.openai`): any OpenAI-compatible chat endpoint, rate-limited and retried.
- `CachedLM` (in `e2p_lib.lm.cache`): wraps either; each (model, settings, prompt, parameters, seed) is
  answered once, ever, and a killed run resumes.
- `make_lm("local" | "openai", engine=..., ...)` builds one, cached by default.

    >>> lm = make_lm("local")                                # SmolLM2, answers cached under data_dir()/answers
    >>> lm.generate(["What is the capital of France?"])
    ['The capital of France is Paris.']
    >>> lm.generate(prompts, temperature=0.7, seed=[0, 1, 2])   # one seed per prompt: 3 samples of one prompt

Generation parameters:
    max_new_tokens  answer tokens at most (default 128, enough for about 90% of Alpaca's reference outputs).
    temperature     0.0 means greedy decoding (the seed is then ignored, also by the answer cache). Above 0, tokens
                    are sampled from softmax(logits / temperature), cut to the `top_p` nucleus (an LM setting).
    seed            an int for every prompt, or one int per prompt. Each prompt draws from its own random stream,
                    seeded by (seed, prompt), so its answer does not depend on the other prompts in the call, on the
                    batch size, or on its position: the same (prompt, seed) gives the same sample.
    system prompt   an LM setting (`system_prompt`), not a call argument; see `DEFAULT_SYSTEM_PROMPT`.

LocalChatLM runs in float32 by default: there, sampled answers with a seed repeat exactly whatever the batch, and
greedy answers in a batch equal those generated one by one (tested on CPU). Left padding changes the shapes of the
matrix products, so where two tokens are within rounding of each other an answer could still flip; in bfloat16 that
is common, for no gain in speed at 135M parameters (docs/experiments.md#environment-engine). Use the largest batch
that fits.

Bad input (a single string instead of a list, a blank prompt, a bad `max_new_tokens`, temperature or seed) raises
TypeError or ValueError before any work, naming the values and the fix.
"""

from __future__ import annotations

from pathlib import Path

from e2p_lib.lm.base import (
    BACKENDS,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_SEED,
    DEFAULT_SYSTEM_PROMPT,
    DEFAULT_TEMPERATURE,
    ChatLM,
    check_answer_settings,
    check_generation_args,
    check_prompts,
    prompt_seed,
)
from e2p_lib.lm.cache import AnswerCache, CachedLM
from e2p_lib.lm.local import LocalChatLM, count_answer_tokens, make_prompt_sampler
from e2p_lib.lm.openai import OpenAIChatLM

__all__ = [
    "BACKENDS",
    "DEFAULT_ENGINE",
    "DEFAULT_MAX_NEW_TOKENS",
    "DEFAULT_SEED",
    "DEFAULT_SYSTEM_PROMPT",
    "DEFAULT_TEMPERATURE",
    "ENGINES",
    "AnswerCache",
    "CachedLM",
    "ChatLM",
    "LocalChatLM",
    "OpenAIChatLM",
    "check_answer_settings",
    "check_generation_args",
    "check_prompts",
    "count_answer_tokens",
    "make_lm",
    "make_prompt_sampler",
    "prompt_seed",
]


# ---------------------------------------------------------------------------------------------------------------------
# Factory


# The local engines; the default gives transformers' answers for less CPU time (docs/experiments.md#environment-engine).
ENGINES = ("ctranslate2", "transformers")
DEFAULT_ENGINE = "ctranslate2"


def make_lm(
    backend: str = "local",
    *,
    engine: str | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    **options,
) -> ChatLM:
    """Build an environment LM: "local" (SmolLM2, offline) or "openai" (any OpenAI-compatible endpoint).

    `engine` picks the local engine: "ctranslate2" (`CTranslate2ChatLM`, float32, the default) or "transformers"
    (`LocalChatLM`); None: `DEFAULT_ENGINE`. `cache=True` wraps the LM in `CachedLM` with the answer cache in
    `cache_dir` (None: `config.data_dir()/answers`); `options` go to the LM's constructor.

    Raises:
        ValueError: an unknown backend or engine, an engine for "openai", or `cache_dir` with `cache=False`.
    """
    if backend == "local":
        engine = DEFAULT_ENGINE if engine is None else engine
        if engine == "ctranslate2":
            from e2p_lib.lm.ctranslate2 import CTranslate2ChatLM  # imports ctranslate2 only when it is used

            lm: ChatLM = CTranslate2ChatLM(**options)
        elif engine == "transformers":
            lm = LocalChatLM(**options)
        else:
            raise ValueError(f"Unknown local engine {engine!r}: use one of {ENGINES}.")
    elif backend == "openai":
        if engine is not None:
            raise ValueError(f"engine={engine!r} applies to the local backend only; the server picks its own.")
        lm = OpenAIChatLM(**options)
    else:
        raise ValueError(f"Unknown LM backend {backend!r}: use one of {BACKENDS}.")
    if not cache:
        if cache_dir is not None:
            raise ValueError("cache_dir is given but cache=False: drop one of them.")
        return lm
    return CachedLM(lm, cache_dir)
