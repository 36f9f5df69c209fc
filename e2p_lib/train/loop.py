"""Training-loop utilities shared by e2p's trainers (the forward model, the policy's SFT and PPO).

A trainer supplies one function, `train_step(step) -> {"loss": ...}`, and optionally `evaluate() -> {...}` and
`save(state)`; `run_training_loop` does the rest the same way for every model:

- a progress bar (tqdm.auto, so it renders in JupyterLab and papermill logs) showing the latest losses;
- periodic validation every `eval_every_steps` and after the last step;
- a checkpoint every `save_every_steps` and after the last step, written atomically (a crash mid-write leaves the
  previous checkpoint intact), holding the resolved config, model, optimiser, scheduler, RNG states and history;
- a loss history in tidy form (step, split, metric, value) for plots.

Resuming gives the same result as never stopping: batches come from `batch_indices(n_rows, batch_size, seed, step)`,
a pure function of the step, and the checkpoint restores every RNG (Python, NumPy, torch CPU and CUDA), so dropout
draws the same masks after a restart. `check_resumable` refuses a checkpoint whose config differs in anything but
the fields in `RESUMABLE_FIELDS` (run length, logging, device).

    >>> config = TrainingConfig(output_dir="data/models/demo", max_steps=200)
    >>> device = resolve_device(config.device)       # e2p_lib.devices: "auto" is accelerate's choice
    >>> seed_everything(config.seed)
    >>> checkpoint = load_checkpoint(config.output_dir)
    >>> state = TrainState()
    >>> if checkpoint is not None:
    ...     check_resumable(checkpoint, config)
    ...     model.load_state_dict(checkpoint["model"]); optimizer.load_state_dict(checkpoint["optimizer"])
    ...     state = TrainState.from_checkpoint(checkpoint); restore_rng_state(checkpoint["rng"])
    >>> run_training_loop(train_step, total_steps=config.total_steps(len(rows)), state=state, config=config,
    ...                   evaluate=evaluate, save=lambda s: save_checkpoint(config.output_dir, config=config,
    ...                   state=s, model=model, optimizer=optimizer))

Several processes (`accelerate launch`): `prepare_for_processes(model, method)` wraps the model so gradients are
averaged across processes (`method` routes a loss computed in a method, as the policy's are, through the wrapper),
`local_rows` gives each process its share of the global batch (and the weight of its loss), and `global_mean` /
`global_means` reduce metrics; one process validates and writes. The forward model and the policy's SFT reach the
weights one process reaches on the same global batches. PPO's processes each roll out an equal share of a step's
targets and update on their own minibatches: the updates are synchronised, but sampling, advantage whitening and
minibatches are per process, so N processes are not one process's run.

Contents, in the order data flows: `TrainingConfig` -> `seed_everything` -> several processes -> `batch_indices`,
`data_fingerprint` -> `LossHistory`, `TrainState` -> RNG capture/restore -> checkpoint save/load/check ->
`run_training_loop`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from e2p_lib.atomic import sweep_staging, write_atomically
from e2p_lib.checks import check_int
from e2p_lib.devices import check_device_name

CHECKPOINT_FILE = "checkpoint.pt"  # model, optimiser, scheduler, RNG, history and the resolved config
CONFIG_FILE = "config.json"  # the same resolved config, readable without torch
CHECKPOINT_FORMAT_VERSION = 1
TENSORBOARD_FOLDER = "tensorboard"  # under output_dir, when TrainingConfig.track is on

# Learning-rate schedules from transformers.get_scheduler that need nothing beyond warm-up and total steps.
LR_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")

# Config fields that may change between a checkpoint and its resumption: how long to run, how often to log and
# save, and where. Everything else (model, optimiser, data order) must match, or the result is not one run.
RESUMABLE_FIELDS = frozenset(
    {
        "num_epochs",
        "max_steps",
        "eval_every_steps",
        "save_every_steps",
        "show_progress",
        "track",
        "device",
        "output_dir",
    }
)


# --- config ----------------------------------------------------------------------------------------------------


@dataclass
class TrainingConfig:
    """Settings every e2p trainer shares; model configs subclass it and add their own fields.

    Parameters that control the optimisation:
        learning_rate (`float`, defaults to `1e-3`): AdamW's peak learning rate.
        weight_decay (`float`, defaults to `0.0`): AdamW's decoupled weight decay (not applied to biases and norms).
        batch_size (`int`, defaults to `64`): rows per optimiser step; the last batch of an epoch may be smaller.
        num_epochs (`int`, defaults to `3`): passes over the training rows. Ignored when `max_steps` is set.
        max_steps (`int` or `None`, defaults to `None`): total optimiser steps; overrides `num_epochs`. Raising it
            on resume continues the same run (with a "constant" schedule the result equals one longer run).
        lr_scheduler (`str`, defaults to `"linear"`): one of `LR_SCHEDULERS`, from `transformers.get_scheduler`;
            "linear" and "cosine" decay to 0 at the last step.
        warmup_fraction (`float`, defaults to `0.0`): share of the steps spent warming the learning rate up from 0.
        max_grad_norm (`float` or `None`, defaults to `1.0`): gradient-norm clipping. If `None`, no clipping.

    Parameters that control reproducibility and hardware:
        seed (`int`, defaults to `0`): seeds Python, NumPy and torch, the initial weights and the batch order.
        device (`str`, defaults to `"auto"`): "auto" (CUDA when present, else CPU, as accelerate picks it), "cpu",
            "cuda", "cuda:N" or "mps". Checked against the hardware when training starts.

    Parameters that control validation, checkpoints and logging:
        eval_every_steps (`int`, defaults to `50`): validate every N steps. If `0`, only after the last step.
        save_every_steps (`int`, defaults to `50`): checkpoint every N steps. If `0`, only after the last step.
            Ignored when `output_dir` is `None`.
        output_dir (`str` or `None`, defaults to `None`): where `checkpoint.pt` and `config.json` go; training
            resumes from a checkpoint found there. If `None`, nothing is written and nothing can resume.
        show_progress (`bool`, defaults to `True`): show a tqdm progress bar.
        track (`bool`, defaults to `False`): also write every train and validation scalar to TensorBoard under
            `<output_dir>/tensorboard` (`make tensorboard` shows them). Needs `output_dir`.
    """

    # optimisation
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    num_epochs: int = 3
    max_steps: int | None = None
    lr_scheduler: str = "linear"
    warmup_fraction: float = 0.0
    max_grad_norm: float | None = 1.0
    # reproducibility and hardware
    seed: int = 0
    device: str = "auto"
    # validation, checkpoints, logging
    eval_every_steps: int = 50
    save_every_steps: int = 50
    output_dir: str | None = None
    show_progress: bool = True
    track: bool = False

    def __post_init__(self) -> None:
        check_number_field(self, "learning_rate", minimum=0, exclusive=True)
        check_number_field(self, "weight_decay", minimum=0)
        check_int_field(self, "batch_size", minimum=1)
        check_int_field(self, "num_epochs", minimum=1)
        if self.max_steps is not None:
            check_int_field(self, "max_steps", minimum=1)
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"lr_scheduler={self.lr_scheduler!r} is not supported; use one of {LR_SCHEDULERS}.")
        check_number_field(self, "warmup_fraction", minimum=0)
        if self.warmup_fraction >= 1:
            raise ValueError(f"warmup_fraction={self.warmup_fraction} must be < 1 (a share of the steps).")
        if self.max_grad_norm is not None:
            check_number_field(self, "max_grad_norm", minimum=0, exclusive=True)
        check_int_field(self, "seed", minimum=0)
        check_device_name(self.device)
        check_int_field(self, "eval_every_steps", minimum=0)
        check_int_field(self, "save_every_steps", minimum=0)
        if self.track and self.output_dir is None:
            raise ValueError("track=True writes TensorBoard logs under output_dir; set output_dir or track=False.")
        if self.output_dir is not None:
            self.output_dir = str(Path(self.output_dir).expanduser())

    def steps_per_epoch(self, num_rows: int) -> int:
        return math.ceil(num_rows / self.batch_size)

    def total_steps(self, num_rows: int) -> int:
        """Optimiser steps in the whole run: `max_steps`, else `num_epochs` passes over `num_rows` rows."""
        if num_rows < 1:
            raise ValueError("There are no training rows; pass at least one.")
        return self.max_steps if self.max_steps is not None else self.num_epochs * self.steps_per_epoch(num_rows)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain JSON-able values (what checkpoints store)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]):
        """Rebuild a config saved by `to_dict`; unknown keys are an error, not silently dropped."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"Unknown {cls.__name__} key(s) {unknown}; known keys: {sorted(known)}.")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def check_int_field(config: Any, name: str, minimum: int) -> None:
    """Raise ValueError naming `config.<name>` unless it is an integer >= `minimum` (bools refused)."""
    check_int(getattr(config, name), name, minimum=minimum)


def check_number_field(config: Any, name: str, minimum: float, exclusive: bool = False) -> None:
    """Raise ValueError naming `config.<name>` unless it is a finite number >= `minimum` (> when `exclusive`)."""
    value = getattr(config, name)
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float, np.number))
        and math.isfinite(value)
        and (value > minimum if exclusive else value >= minimum)
    )
    if not ok:
        raise ValueError(f"{name} must be a finite number {'>' if exclusive else '>='} {minimum}, got {value!r}.")


# --- hardware and seeds ----------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, torch and every CUDA device (accelerate's `set_seed`)."""
    from accelerate.utils import set_seed

    set_seed(int(seed))


# --- several processes -----------------------------------------------------------------------------------------


class MethodAsForward(torch.nn.Module):
    """`module.<method>(...)` as a forward pass. DistributedDataParallel averages the gradients of passes made
    through its wrapper only, and e2p's policy computes its losses in methods, not in `forward`."""

    def __init__(self, module: torch.nn.Module, method: str):
        super().__init__()
        self.module, self.method = module, method

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.module, self.method)(*args, **kwargs)


def prepare_for_processes(model: torch.nn.Module, method: str | None = None):
    """(accelerator, wrapped): `model` made ready for every process of this run (`accelerate launch`).

    With several processes `wrapped` is the DistributedDataParallel wrapper: run the forward pass through it and
    call `accelerator.backward(loss)`, and the gradients are averaged across processes before the optimiser step.
    Alone, `wrapped` is `model` itself. With `method`, calling `wrapped(...)` runs `model.<method>(...)` instead of
    `model(...)`. The model stays where the caller put it (`resolve_device`).
    """
    from accelerate import Accelerator

    accelerator = Accelerator(device_placement=False)
    return accelerator, accelerator.prepare_model(model if method is None else MethodAsForward(model, method))


def local_rows(index: np.ndarray, accelerator: Any, sizes: Sequence[float] | None = None) -> tuple[np.ndarray, float]:
    """This process's share of the global batch `index`, and the factor for its mean loss.

    Every process computes the same `batch_indices` (the global batch) and trains on one contiguous share of it.
    DDP averages gradients across processes, so a share's mean loss is weighted by its share of the batch (times
    the number of processes): the update then equals one process's on the whole batch, even when the shares differ
    in size. `sizes` are what each row adds to that mean (its tokens, for a mean over tokens); None counts rows.
    """
    world, rank = accelerator.num_processes, accelerator.process_index
    if len(index) < world:
        raise ValueError(
            f"A batch of {len(index)} rows cannot be shared by {world} processes; use batch_size >= "
            f"{world} and a training-row count whose remainder by batch_size is 0 or >= {world}."
        )
    mine = np.array_split(np.arange(len(index)), world)[rank]
    sizes = np.ones(len(index)) if sizes is None else np.asarray(sizes, dtype=np.float64)
    return np.asarray(index)[mine], float(sizes[mine].sum() * world / sizes.sum())


def global_mean(accelerator: Any, value: torch.Tensor) -> float:
    """The mean over processes of a scalar already weighted by `local_rows`: the whole batch's value."""
    return float(accelerator.reduce(value.detach().reshape(1), reduction="mean")[0])


def global_means(accelerator: Any, metrics: Mapping[str, float]) -> dict[str, float]:
    """Each metric's mean over processes, in one reduction; every process must pass the same keys in the same
    order. For metrics of equal shares (PPO's rollouts), this is the metric of the whole batch."""
    if accelerator.num_processes == 1:
        return {k: float(v) for k, v in metrics.items()}
    values = torch.tensor([float(v) for v in metrics.values()], dtype=torch.float64, device=accelerator.device)
    return dict(zip(metrics, accelerator.reduce(values, reduction="mean").tolist()))


# --- data order ------------------------------------------------------------------------------------------------


def batch_indices(num_rows: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Row indices of the batch for optimiser step `step` (0-based): a pure function of its arguments.

    Each epoch is a fresh permutation drawn from (seed, epoch), so a run resumed at any step sees exactly the
    batches an uninterrupted run would, with no sampler state to save. The last batch of an epoch may be short.
    """
    if num_rows < 1 or batch_size < 1 or step < 0:
        raise ValueError(
            f"batch_indices needs num_rows >= 1, batch_size >= 1, step >= 0; got {num_rows}, {batch_size}, {step}."
        )
    per_epoch = math.ceil(num_rows / batch_size)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_rows)
    return order[position * batch_size : (position + 1) * batch_size]


def data_fingerprint(texts: Sequence[str], vectors: np.ndarray) -> str:
    """sha256 of training rows (texts and their vectors): `check_resumable` refuses to resume on other data."""
    digest = hashlib.sha256(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")  # the separator keeps ["ab", "c"] apart from ["a", "bc"]
    return digest.hexdigest()


# --- history and state -----------------------------------------------------------------------------------------


@dataclass
class LossHistory:
    """Every logged number as a tidy record (step, split, metric, value): one `to_frame()` away from a plot."""

    records: list[dict[str, Any]] = field(default_factory=list)

    def log(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        for metric, value in metrics.items():
            self.records.append({"step": int(step), "split": split, "metric": metric, "value": float(value)})

    def last(self, split: str, metric: str) -> float | None:
        """The latest value of `metric` on `split`, or None if it was never logged."""
        for record in reversed(self.records):
            if record["split"] == split and record["metric"] == metric:
                return record["value"]
        return None

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.records, columns=["step", "split", "metric", "value"])


@dataclass
class TrainState:
    """What the loop advances: steps done, the history, and training wall time (summed across resumptions)."""

    step: int = 0
    history: LossHistory = field(default_factory=LossHistory)
    train_seconds: float = 0.0

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any]) -> TrainState:
        return cls(
            step=int(checkpoint["step"]),
            history=LossHistory(list(checkpoint["history"])),
            train_seconds=float(checkpoint.get("train_seconds", 0.0)),
        )


# --- RNG state -------------------------------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from, in a form `torch.load(weights_only=True)` accepts."""
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        # NumPy's state holds an ndarray, which safe unpickling refuses: keep it as a tensor.
        "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        # A checkpoint from a machine with more GPUs restores as many as exist here.
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)


def _as_tuples(value: Any) -> Any:
    """random.setstate needs tuples; a checkpoint may hand them back as lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


# --- checkpoints -----------------------------------------------------------------------------------------------


def save_checkpoint(
    directory: str | Path,
    *,
    config: TrainingConfig,
    state: TrainState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write `checkpoint.pt` (and a readable `config.json`) under `directory`, each atomically; return its path.

    The resolved config travels in the checkpoint, so a model is rebuilt from the file alone (as nanoGPT's
    `sample.py` does). `extra` holds trainer-specific values (plain types and tensors only, so the file loads
    with `weights_only=True`). Without `optimizer` the file is a finished model and cannot resume training.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "config_class": type(config).__name__,
        "config": config.to_dict(),
        "step": state.step,
        "train_seconds": state.train_seconds,
        "history": state.history.records,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": capture_rng_state(),
        "extra": dict(extra or {}),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path = directory / CHECKPOINT_FILE
    for name in (CHECKPOINT_FILE, CONFIG_FILE):  # a killed save left its staging files: this run writes them alone
        sweep_staging(directory / name)
    write_atomically(path, buffer.getvalue())
    readable = {"config_class": payload["config_class"], "step": state.step, "config": payload["config"]}
    write_atomically(directory / CONFIG_FILE, (json.dumps(readable, indent=2) + "\n").encode("utf-8"))
    return path


def load_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The checkpoint under `directory`, or None when there is none. Loads with `weights_only=True` (no code runs)."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    version = checkpoint.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format {version!r}; this e2p reads format "
            f"{CHECKPOINT_FORMAT_VERSION}. Retrain, or load it with the e2p version that wrote it."
        )
    return checkpoint


def check_resumable(checkpoint: Mapping[str, Any], config: TrainingConfig, data_fingerprint: str | None = None) -> None:
    """Raise ValueError unless training under `config` can continue `checkpoint` as one run.

    Compares every config field outside `RESUMABLE_FIELDS`, and the training data's fingerprint when given.
    """
    where = config.output_dir or "the checkpoint folder"
    fix = f"Use the checkpoint's values, or start afresh in another output_dir (or delete {where})."
    if checkpoint["config_class"] != type(config).__name__:
        raise ValueError(
            f"The checkpoint in {where} was written by a {checkpoint['config_class']}, not a "
            f"{type(config).__name__}. {fix}"
        )
    if checkpoint.get("optimizer") is None:
        raise ValueError(
            f"The checkpoint in {where} is a saved model without optimiser state; it cannot resume training. {fix}"
        )
    saved, now = checkpoint["config"], config.to_dict()
    changed = [
        f"{k}: checkpoint {saved.get(k)!r}, now {now[k]!r}"
        for k in now
        if k not in RESUMABLE_FIELDS and saved.get(k) != now[k]
    ]
    if changed:
        raise ValueError(f"Cannot resume from {where}: the config changed ({'; '.join(changed)}). {fix}")
    saved_fingerprint = checkpoint.get("extra", {}).get("data_fingerprint")
    if data_fingerprint is not None and saved_fingerprint is not None and saved_fingerprint != data_fingerprint:
        raise ValueError(
            f"Cannot resume from {where}: it was trained on other data (fingerprint "
            f"{saved_fingerprint[:12]}…, now {data_fingerprint[:12]}…). {fix}"
        )


def restore_training_state(
    checkpoint: Mapping[str, Any], *, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any | None = None
) -> TrainState:
    """Continue a run: load the checkpoint's weights, optimiser, scheduler and RNG states; return its TrainState.

    Call `check_resumable` first. `model` is anything with `load_state_dict` (a module, or a trainer's view of the
    weights that train).
    """
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
    restore_rng_state(checkpoint["rng"])
    return TrainState.from_checkpoint(checkpoint)


# --- the loop --------------------------------------------------------------------------------------------------


def is_due(step: int, every_steps: int) -> bool:
    """Whether a periodic action (validation, checkpoint) falls on `step`; `every_steps` 0 means never."""
    return every_steps > 0 and step % every_steps == 0


def run_training_loop(
    train_step: Callable[[int], Mapping[str, float]],
    *,
    total_steps: int,
    state: TrainState,
    config: TrainingConfig,
    evaluate: Callable[[], Mapping[str, float]] | None = None,
    save: Callable[[TrainState], Any] | None = None,
    desc: str = "train",
) -> TrainState:
    """Run `train_step(step)` from `state.step` up to `total_steps`, validating and saving on schedule.

    `train_step` takes the 0-based step and returns its metrics ("loss" first, shown on the bar); `evaluate`
    returns validation metrics; `save` writes a checkpoint of the state it is given. Both also run after the last
    step, so the final model is always validated and saved. A state already at `total_steps` returns at once.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
    latest_val = _latest_val(state.history)
    tracker = _tensorboard_writer(config)
    with (
        tracker or contextlib.nullcontext(),
        tqdm(
            total=total_steps,
            initial=min(state.step, total_steps),
            desc=desc,
            unit="step",
            disable=not config.show_progress,
            dynamic_ncols=True,
        ) as bar,
    ):
        while state.step < total_steps:
            # 1. one optimiser step
            started = time.perf_counter()
            metrics = train_step(state.step)
            state.train_seconds += time.perf_counter() - started
            state.step += 1
            state.history.log(state.step, "train", metrics)
            _track(tracker, "train", metrics, state.step)
            bar.update(1)
            shown = {f"train_{k}": v for k, v in metrics.items() if k == "loss"}
            last = state.step == total_steps
            # 2. periodic validation
            if evaluate is not None and (last or is_due(state.step, config.eval_every_steps)):
                latest_val = dict(evaluate())
                state.history.log(state.step, "val", latest_val)
                _track(tracker, "val", latest_val, state.step)
            shown.update({f"val_{k}": v for k, v in latest_val.items()})
            bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
            # 3. checkpoint
            if save is not None and (last or is_due(state.step, config.save_every_steps)):
                save(state)
    return state


def _tensorboard_writer(config: TrainingConfig):
    """A TensorBoard SummaryWriter on `<output_dir>/tensorboard` when `config.track` is on, else None."""
    if not config.track:
        return None
    from torch.utils.tensorboard import SummaryWriter  # needs the `tensorboard` package, a declared dependency

    return SummaryWriter(str(Path(config.output_dir) / TENSORBOARD_FOLDER))


def _track(writer, split: str, metrics: Mapping[str, float], step: int) -> None:
    """Log each metric as the scalar `<split>/<name>` at `step` (nothing when tracking is off)."""
    if writer is not None:
        for name, value in metrics.items():
            writer.add_scalar(f"{split}/{name}", float(value), step)


def _latest_val(history: LossHistory) -> dict[str, float]:
    """Metrics of the most recent validation (for the progress bar of a resumed run)."""
    val = [r for r in history.records if r["split"] == "val"]
    return {r["metric"]: r["value"] for r in val if r["step"] == val[-1]["step"]} if val else {}
