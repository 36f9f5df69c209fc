"""Which trained policy e2p uses: the one 04_rl scored best on its validation targets.

03 trains one policy and 04 two more from it (PPO, expert iteration); which writes the best prompts is a measurement,
not an order of training, so 04 records the validation answer cosine of each (`save_policy_choice`) and every
reader (05's search, `load_inverter`, `e2p invert`) takes the best one (`chosen_policy_run`). The record names run
folders under the models folder (`policy-sft`, `policy-rl`, `policy-ei`) and is written atomically.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path

from e2p_lib.atomic import write_atomically

CHOICE_FILE = "policy-choice.json"
log = logging.getLogger(__name__)


def has_saved_policy(models_dir: str | Path, run: str) -> bool:
    """Whether `models_dir/run/policy` holds a saved policy (its config file written last by `PromptPolicy.save`)."""
    from e2p_lib.models.policy import CONFIG_FILE
    from e2p_lib.train.sft import POLICY_FOLDER

    return (Path(models_dir) / run / POLICY_FOLDER / CONFIG_FILE).is_file()


def save_policy_choice(models_dir: str | Path, scores: Mapping[str, float], *, targets: int) -> str:
    """Record each run's mean validation answer cosine over `targets` targets; return the best run's folder name.

    Raises:
        ValueError: no scores, a score that is not a finite number, or a run with no saved policy in `models_dir`.
    """
    from e2p_lib.train.sft import POLICY_FOLDER

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
