"""e2p's top-level API (vec2text's `api.py`): find the trained pieces on disk, load them once, ask for prompts.

    >>> import e2p_lib
    >>> e2p_lib.invert_strings(["A haiku about rain."])[0].prompt                 # the search, SearchConfig()
    >>> e2p_lib.invert_strings(texts, config=e2p_lib.SearchConfig(budget=1))     # one environment call per text
    >>> inverter = e2p_lib.load_inverter()                                       # the pieces, for repeated use

What `load_inverter` finds under the models folder (`config.models_dir()`), each of which can be given instead:
- the policy 04_rl chose by its validation score (`chosen_policy_run`), else 04's `policy-rl`, else 03's
  `policy-sft` (`default_policy_dir`);
- the forward model `forward-transformer`, else `forward-mlp` (`default_forward_model_dir`), when 03 trained one;
- the embedder of the forward model's space (else the local MiniLM); the local SmolLM2 environment;
- 02_pinecone's local store `alpaca`: its stored outputs (`default_retrieval_store`), its answer index for this
  environment, embedder and answer length (`default_answer_index`), and the clean line 02 recorded.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from e2p_lib.atomic import write_atomically
from e2p_lib.config import POLICY_CONFIG_FILE, POLICY_FOLDER
from e2p_lib.inversion.config import ANSWER_TOKENS, SearchConfig

POLICY_RUNS = ("policy-rl", "policy-sft")  # under the models folder, most trained first (04_rl, then 03_sft)
# Every trained policy's run folder by the name 04 and 05 report it under (03's SFT, 04's three Stage 2 methods).
POLICY_NAMES = {"SFT": "policy-sft", "PPO": "policy-rl", "RLOO": "policy-rloo", "expert iteration": "policy-ei"}
# Better held-out cosine first (docs/experiments.md#forward-model-presets).
FORWARD_MODEL_RUNS = ("forward-transformer", "forward-mlp")
CHOICE_FILE = "policy-choice.json"  # 04's record of the best policy on validation (docs/experiments.md#policy-choice)
STORE_NAME = "alpaca"  # 02_pinecone's local store: the outputs, the answer index, the clean line's neighbours
log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------------
# Which policy: 04 records each run's validation score, every reader takes the best


def has_saved_policy(models_dir: str | Path, run: str) -> bool:
    """Whether `models_dir/run/policy` holds a saved policy (its config file written last by `PromptPolicy.save`)."""
    return (Path(models_dir) / run / POLICY_FOLDER / POLICY_CONFIG_FILE).is_file()


def save_policy_choice(models_dir: str | Path, scores: Mapping[str, float], *, targets: int) -> str:
    """Record each run's mean validation answer cosine over `targets` targets; return the best run's folder name.

    Raises:
        ValueError: no scores, a score that is not a finite number, or a run with no saved policy in `models_dir`.
    """
    models_dir = Path(models_dir)
    if not scores:
        raise ValueError("save_policy_choice needs the validation score of at least one policy run.")
    clean = {}
    for run, score in scores.items():
        if not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ValueError(f"The validation score of {run!r} is {score!r}: pass a finite mean answer cosine.")
        if not has_saved_policy(models_dir, run):
            raise ValueError(f"{models_dir / run / POLICY_FOLDER} holds no saved policy: train {run!r} first.")
        clean[str(run)] = float(score)
    best = max(clean, key=clean.get)
    record = {"chosen": best, "validation_cosine": clean, "validation_targets": int(targets)}
    write_atomically(models_dir / CHOICE_FILE, (json.dumps(record, indent=2) + "\n").encode("utf-8"))
    return best


def chosen_policy_run(models_dir: str | Path) -> str | None:
    """The run folder 04 chose (the best validation score), or None when 04 has not recorded a choice.

    A record that cannot be read, or that names a policy no longer on disk, is ignored with a warning that says
    how to make a new one (rerun 04_rl), so a stale file never hides the policies that are there.
    """
    path = Path(models_dir) / CHOICE_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        chosen = record["chosen"]
        scores = record["validation_cosine"]
        if not isinstance(chosen, str) or chosen not in scores:
            raise ValueError(f"'chosen' is {chosen!r}, not one of the scored runs {sorted(scores)}")
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("Ignoring %s (%s): rerun notebooks/04_rl.ipynb to record the policy choice again.", path, error)
        return None
    if not has_saved_policy(models_dir, chosen):
        log.warning("%s chose %r, which holds no saved policy any more: rerun notebooks/04_rl.ipynb.", path, chosen)
        return None
    return chosen


# ---------------------------------------------------------------------------------------------------------------------
# Where the trained pieces are


def default_policy_dir(models_dir: str | Path | None = None) -> Path:
    """The policy `load_inverter` uses: 04's choice, else `policy-rl`, else `policy-sft` (under `models_dir`).

    Raises:
        FileNotFoundError: none exists (the message names the notebooks that train one).
    """
    models = _models(models_dir)
    for run in (chosen_policy_run(models), *POLICY_RUNS):  # 04's choice (None when not recorded) first
        if run is not None and has_saved_policy(models, run):
            return models / run / POLICY_FOLDER
    folders = [models / run / POLICY_FOLDER for run in POLICY_RUNS]
    raise FileNotFoundError(
        f"No trained policy in {' or '.join(map(str, folders))}. Run notebooks/03_sft.ipynb "
        "(and 04_rl.ipynb for Stage 2), or pass policy_dir."
    )


def default_forward_model_dir(models_dir: str | Path | None = None) -> Path | None:
    """The folder of the best forward model saved under `models_dir` (`FORWARD_MODEL_RUNS`), or None."""
    from e2p_lib.train.loop import CHECKPOINT_FILE

    models = _models(models_dir)
    return next((models / run for run in FORWARD_MODEL_RUNS if (models / run / CHECKPOINT_FILE).is_file()), None)


def load_forward_model(models_dir: str | Path | None, embedder):
    """The best forward model saved under `models_dir` (03_sft), over `embedder`'s space, or None."""
    from e2p_lib.models.forward import ForwardModel

    folder = default_forward_model_dir(models_dir)
    return None if folder is None else ForwardModel.load(folder, embedder=embedder)


def open_answer_index(store, lm, embedder, answer_tokens: int = ANSWER_TOKENS):
    """The answer index of this environment, answer length and embedder in `store` (built by 02_pinecone).

    Raises:
        FileNotFoundError: it is empty: run 02_pinecone with the same environment and answer length.
    """
    from e2p_lib.answer_index import AnswerIndex, answer_namespace

    index = AnswerIndex(store, answer_namespace(lm, embedder, answer_tokens))
    if len(index) == 0:
        raise FileNotFoundError(
            f"No answer index for {lm.name} (answers of {answer_tokens} tokens) in {store!r}: "
            "run notebooks/02_pinecone.ipynb with the same environment and answer length."
        )
    return index


def existing_local_store(store: Any = STORE_NAME):
    """The local store named `store`, or None when it was never built (opening a missing store would create it);
    a store already opened (or None) is returned as it is."""
    from e2p_lib.config import data_dir
    from e2p_lib.store import make_vector_store

    if not isinstance(store, str):
        return store
    if not (data_dir() / "vectorstores" / store).is_dir():
        log.info("No local store %r: run notebooks/02_pinecone.ipynb to build it.", store)
        return None
    return make_vector_store("local", store)


def default_retrieval_store(embedder, store: Any = STORE_NAME):
    """02's store of the dataset's outputs when it holds `embedder`'s vectors, else None (`store`: a local store's
    name, opened only if built, or a store already opened)."""
    store = existing_local_store(store)
    if store is None or store.count() == 0 or int(store.dimensions) != int(embedder.dimensions):
        return None
    if getattr(store, "embedder", None) not in (None, embedder.name):  # another space of the same size
        log.info("The store %r holds %s vectors, not %s: no retrieval.", store, store.embedder, embedder.name)
        return None
    return store


def default_answer_index(environment, embedder, answer_tokens: int = ANSWER_TOKENS, store: Any = STORE_NAME):
    """02's answer index in `store` for this environment, embedder and answer length, or None (no environment, no
    such store, or no index of these settings in it)."""
    from e2p_lib.answer_index import AnswerIndex, answer_namespace

    store = existing_local_store(store) if environment is not None else None
    if store is None:
        return None
    index = AnswerIndex(store, answer_namespace(environment, embedder, answer_tokens))
    if len(index) == 0:
        built = [n for n in store.namespaces() if n.startswith("answers-")]
        if built:  # 02 ran, with other settings: searching without its index would be silently weaker
            raise ValueError(
                f"{store!r} holds {len(built)} answer index(es), none for {environment.name} with "
                f"answer_tokens={answer_tokens} and {embedder.name}: pass the answer length 02 used "
                "(`e2p invert --answer-tokens`, load_inverter(answer_tokens=...)), or rerun 02 with these settings."
            )
        log.info("No answer index in %r: run notebooks/02_pinecone.ipynb to build one.", store)
        return None
    return index


def _models(models_dir: str | Path | None) -> Path:
    from e2p_lib.config import models_dir as default_models_dir

    return Path(models_dir) if models_dir is not None else default_models_dir()


# ---------------------------------------------------------------------------------------------------------------------
# Loading


def load_inverter(
    policy_dir: str | Path | None = None,
    forward_model_dir: str | Path | None | bool = None,
    environment: Any = "local",
    embedder=None,
    device: str = "auto",
    index: Any = "auto",
    retrieval: Any = "auto",
    clean_line: Any = "auto",
    answer_tokens: int = ANSWER_TOKENS,
    **options: Any,
):
    """An `Inverter` over the trained pieces on disk (see the module docstring for what "auto" finds).

    Args:
        policy_dir: a saved policy folder (None: `default_policy_dir()`).
        forward_model_dir: a saved forward model (None: the best one 03 saved, if any; False: none).
        environment: "local" or "openai" (`make_lm`, answers cached), an LM object, or None (no environment).
        embedder: the policy's embedder (None: the forward model's space, else the local MiniLM).
        device: for the policy and forward model ("auto": CUDA when available).
        index: "auto" (02's answer index for this environment, embedder and `answer_tokens`), an `AnswerIndex`, or
            None.
        retrieval: "auto" (02's store of outputs, when it holds vectors of the embedder's size), a store, or None.
        clean_line: "auto" (the line 02 recorded; None when it has not run), a `CleanLine` or float, or None.
        answer_tokens: the answer length of the index to find (`SearchConfig.answer_tokens` must match it).
        options: passed to `Inverter` (generation_batch_size, embedding_cache_dir).

    Raises:
        FileNotFoundError: no trained policy (run 03_sft / 04_rl), or no forward model in `forward_model_dir`.
        ValueError: the pieces are of different vector spaces, or an "auto" option is another string.
    """
    from e2p_lib.embed import embedder_from_name, make_embedder
    from e2p_lib.inversion.inverter import Inverter
    from e2p_lib.models.forward import ForwardModel
    from e2p_lib.models.policy import PromptPolicy

    if forward_model_dir is True:
        raise ValueError("forward_model_dir=True is ambiguous: pass a folder, None (the default one) or False.")
    for name, value in (("index", index), ("retrieval", retrieval), ("clean_line", clean_line)):
        if isinstance(value, str) and value != "auto":
            raise ValueError(f"{name}={value!r}: pass 'auto', the object itself, or None.")
    policy_dir = policy_dir or default_policy_dir()  # first: a missing policy fails before anything loads
    policy = PromptPolicy.load(policy_dir, device=device)
    forward_dir = default_forward_model_dir() if forward_model_dir is None else forward_model_dir or None
    forward_model = ForwardModel.load(forward_dir, embedder=embedder, device=device) if forward_dir else None
    if embedder is None:
        embedder = (
            forward_model.embedder or embedder_from_name(forward_model.target_space, forward_model.dimensions)
            if forward_model is not None
            else make_embedder("local")
        )
    if isinstance(environment, str):
        from e2p_lib.lm import make_lm

        environment = make_lm(environment)
    if "auto" in (index, retrieval):  # both live in 02's store: open it once
        store = existing_local_store(STORE_NAME)
        if index == "auto":
            index = default_answer_index(environment, embedder, answer_tokens, store)
        if retrieval == "auto":
            retrieval = default_retrieval_store(embedder, store)
    if clean_line == "auto":
        from e2p_lib.config import data_dir
        from e2p_lib.evaluate.quality import load_clean_line

        clean_line = load_clean_line(data_dir())
    return Inverter(
        policy, embedder, forward_model, environment, index=index, retrieval=retrieval, clean_line=clean_line, **options
    )


@functools.lru_cache(maxsize=1)
def default_inverter():
    """`load_inverter()` once per process; call `default_inverter.cache_clear()` after training a new model."""
    return load_inverter()


def invert_embeddings(embeddings, inverter=None, config: SearchConfig | None = None):
    """The best prompt for each embedding ((d,) or (n, d)) by the search (`config`: None is `SearchConfig()`).

    `inverter` None uses `default_inverter()` (the trained pieces on disk, loaded on first use).
    """
    if isinstance(embeddings, str) or (
        isinstance(embeddings, (list, tuple)) and embeddings and isinstance(embeddings[0], str)
    ):
        raise TypeError("invert_embeddings takes vectors; for texts use invert_strings.")
    return (inverter or default_inverter()).search(embeddings, config)


def invert_strings(strings: Sequence[str], inverter=None, config: SearchConfig | None = None):
    """The best prompt for each text's embedding (the text is embedded first): an instruction whose answer means
    the same, never pasting the text (its copied share is measured against it). `config` as in `invert_embeddings`.
    """
    if isinstance(strings, str):
        raise TypeError("invert_strings takes a list of texts, not one string: wrap it as [text].")
    from e2p_lib.embed.base import check_texts

    return (inverter or default_inverter()).search(check_texts(list(strings)), config)
