"""The forward model: config checks, shapes and gradients, overfitting, save/load, resume, baselines, the table.

Unit tests use a tiny random BERT (2 layers, width 32) with all-MiniLM-L6-v2's real tokenizer, saved to a temporary
folder. It serves both as the embedder (`LocalEmbedder` over that folder: mean pooling, 32-d unit vectors) and as
the transformer kind's encoder, exactly as MiniLM does in real use, so the residual head's "untrained = prompt
embedding" property is testable in milliseconds. Tests marked slow load the real all-MiniLM-L6-v2.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import e2p_lib.models.forward as fm
from e2p_lib.devices import torch_threads
from e2p_lib.embed import LocalEmbedder, default_local_model_path
from e2p_lib.embed.cache import EmbeddingCache, embed_texts, embedding_cache_path
from e2p_lib.evaluate.metrics import ranking_quality
from e2p_lib.models.forward import (
    EncoderForwardNet,
    ForwardModel,
    ForwardModelConfig,
    MLPForwardNet,
    build_network,
    cosine_table,
    evaluate_forward_model,
    fit_ridge,
    forward_baselines,
    forward_model_config,
    train_forward_model,
)
from e2p_lib.models.forward_ranking import (
    RankingGroups,
    group_batch,
    index_ranking_groups,
    ranking_groups,
    ranking_loss,
)
from e2p_lib.train.loop import load_checkpoint

PROMPTS = [
    "Name three primary colours.",
    "Translate 'good morning' into French.",
    "Write a haiku about the sea.",
    "What is the capital of Japan?",
    "Give two tips for staying healthy.",
    "Explain what a prime number is.",
    "Sort these numbers: 5, 2, 9.",
    "Suggest a name for a pet goldfish.",
    "Describe the smell of rain.",
    "Convert 10 kilometres to miles.",
    "List the planets of the solar system.",
    "Summarise the plot of Hamlet.",
]
ANSWERS = [
    "Red, blue and yellow.",
    "Bonjour.",
    "Waves fold on the shore / salt wind carries gull voices / the tide breathes and sleeps.",
    "Tokyo.",
    "Sleep eight hours and drink water.",
    "A number divisible only by 1 and itself.",
    "2, 5, 9.",
    "Bubbles.",
    "Earthy, fresh and slightly sweet.",
    "About 6.2 miles.",
    "Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus, Neptune.",
    "A prince avenges his father and most die.",
]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread while these tests run: on the shared 2-core machines a second spinning thread made the
    small matrix products here up to ten times slower, and the results do not depend on it."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory) -> str:
    """A random 2-layer, 32-wide BERT with MiniLM's tokenizer: tiny, so each test trains in well under a second."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(default_local_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("encoders") / "tiny-bert"
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_embedder(tiny_encoder_dir) -> LocalEmbedder:
    return LocalEmbedder(model=tiny_encoder_dir, show_progress=False)


@pytest.fixture(scope="module")
def answer_vectors(tiny_embedder) -> np.ndarray:
    return tiny_embedder.embed(ANSWERS)


def tiny_config(kind: str = "mlp", **overrides) -> ForwardModelConfig:
    """Small, quiet and on the CPU; `overrides` win."""
    settings = dict(
        kind=kind,
        hidden_sizes=(64,),
        batch_size=4,
        max_steps=6,
        eval_every_steps=3,
        save_every_steps=3,
        show_progress=False,
        device="cpu",
        lr_scheduler="constant",
        freeze_encoder_layers=1,
    )  # of the tiny encoder's 2 layers
    return ForwardModelConfig(**{**settings, **overrides})


# --- config ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(kind="lstm"), r"kind='lstm' is not a forward model; use one of \('mlp', 'transformer'\)"),
        (dict(loss="l1"), r"loss='l1' is not supported; use one of \('mse', 'cosine'\)"),
        (dict(hidden_sizes=512), r"hidden_sizes must be a sequence of layer widths such as \(1024,\), got 512"),
        (dict(hidden_sizes=(64, 0)), r"hidden_sizes\[1\]=0 must be a positive integer"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
        (dict(dropout=-0.1), "dropout must be a finite number >= 0, got -0.1"),
        (dict(max_seq_len=1), "max_seq_len=1 must be an integer >= 2"),
        (dict(max_seq_len="64"), "max_seq_len='64' must be an integer >= 2"),
        (dict(freeze_encoder_layers=-1), "freeze_encoder_layers=-1 must be an integer >= 0"),
        (dict(encoder_learning_rate=0), "encoder_learning_rate must be a finite number > 0"),
        (dict(batch_size=0), "batch_size=0 must be a positive integer"),  # inherited checks still run
    ],
)
def test_bad_configs_fail_before_any_model_loads(overrides, message):
    with pytest.raises(ValueError, match=message):
        ForwardModelConfig(**overrides)


def test_presets_and_their_errors():
    config = forward_model_config("transformer", "gpu", seed=3)
    assert (config.kind, config.max_seq_len, config.freeze_encoder_layers, config.seed) == ("transformer", 256, 0, 3)
    assert forward_model_config("mlp").hidden_sizes == (1024,)
    with pytest.raises(ValueError, match=r"Unknown preset 'tpu'; choose one of \['cpu', 'gpu'\]"):
        forward_model_config("mlp", "tpu")
    with pytest.raises(ValueError, match=r"Unknown ForwardModelConfig key\(s\) \['epochs'\]"):
        forward_model_config("mlp", epochs=3)


# --- networks --------------------------------------------------------------------------------------------------


def _assert_every_trainable_parameter_learns(net: torch.nn.Module, batch: dict, targets: torch.Tensor) -> None:
    """Two SGD steps (the residual head's last layer starts at zero, which blocks gradients below it for one step),
    then every trainable parameter must have a non-zero gradient and every frozen one none."""
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        optimizer.zero_grad()
        fm.forward_loss(net(**batch), targets, "mse").backward()
        optimizer.step()
    for name, param in net.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


def test_mlp_shapes_and_gradients():
    torch.manual_seed(0)
    net = MLPForwardNet(tiny_config(hidden_sizes=(32, 32), dropout=0.0), dimensions=16)
    vectors = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    assert net(prompt_vectors=vectors).shape == (8, 16)
    torch.testing.assert_close(net(prompt_vectors=vectors), vectors)  # residual, zero-initialised: starts at input
    _assert_every_trainable_parameter_learns(net, {"prompt_vectors": vectors}, torch.randn(8, 16))
    plain = MLPForwardNet(tiny_config(hidden_sizes=(), residual=False), dimensions=16)
    assert plain(prompt_vectors=vectors).shape == (8, 16)


def test_transformer_shapes_gradients_and_frozen_layers(tiny_encoder_dir):
    config = tiny_config("transformer", encoder=tiny_encoder_dir, freeze_encoder_layers=1, dropout=0.0)
    net, tokenizer = build_network(config, dimensions=32)
    assert isinstance(net, EncoderForwardNet) and net.encoder.pooler is None
    frozen = {name for name, p in net.named_parameters() if not p.requires_grad}
    assert any(name.startswith("encoder.embeddings.") for name in frozen)
    assert any(name.startswith("encoder.encoder.layer.0.") for name in frozen)
    assert not any(name.startswith(("encoder.encoder.layer.1.", "head.")) for name in frozen)
    batch = fm.PromptTokens(PROMPTS[:8], tokenizer, max_seq_len=16).batch(np.arange(8), torch.device("cpu"))
    assert batch["input_ids"].shape[0] == 8 and batch["input_ids"].shape[1] <= 16
    assert net(**batch).shape == (8, 32)
    _assert_every_trainable_parameter_learns(net, batch, torch.randn(8, 32))


def test_residual_head_refuses_mismatched_sizes(tiny_encoder_dir):
    with pytest.raises(
        ValueError,
        match="residual=True needs features and targets of the same size, got 32 and 384. Set residual=False",
    ):
        build_network(tiny_config("transformer", encoder=tiny_encoder_dir), dimensions=384)
    with pytest.raises(ValueError, match="freeze_encoder_layers=5 but the encoder has 2 layers"):
        build_network(tiny_config("transformer", encoder=tiny_encoder_dir, freeze_encoder_layers=5), dimensions=32)


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_an_untrained_model_predicts_the_prompt_embedding(kind, tiny_encoder_dir, tiny_embedder):
    # With lr tiny and one step the weights barely move: the prediction must still be the prompt's own embedding.
    config = tiny_config(kind, encoder=tiny_encoder_dir, max_steps=1, learning_rate=1e-12, encoder_learning_rate=1e-12)
    model, _ = train_forward_model(PROMPTS, tiny_embedder.embed(ANSWERS), None, None, config, tiny_embedder)
    np.testing.assert_allclose(model.predict(PROMPTS), tiny_embedder.embed(PROMPTS), atol=1e-5)


# --- training --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, loss", [("mlp", "mse"), ("mlp", "cosine"), ("transformer", "mse")])
def test_overfitting_a_batch_of_8_cuts_the_loss_by_more_than_90_percent(
    kind, loss, tiny_encoder_dir, tiny_embedder, answer_vectors
):
    config = tiny_config(
        kind,
        loss=loss,
        encoder=tiny_encoder_dir,
        freeze_encoder_layers=0,
        hidden_sizes=(256,),
        dropout=0.0,
        batch_size=8,
        max_steps=60,
        learning_rate=3e-3,
        encoder_learning_rate=1e-3,
        weight_decay=0.0,
        max_grad_norm=None,
    )
    _, history = train_forward_model(PROMPTS[:8], answer_vectors[:8], None, None, config, tiny_embedder)
    losses = history.query("split == 'train' and metric == 'loss'")["value"].to_numpy()
    assert len(losses) == 60  # all three cross the 10% line by about step 30
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])


def test_training_validates_periodically_and_returns_a_tidy_history(tiny_embedder, answer_vectors):
    config = tiny_config(max_steps=7, eval_every_steps=3)
    model, history = train_forward_model(
        PROMPTS[:8], answer_vectors[:8], PROMPTS[8:], answer_vectors[8:], config, tiny_embedder
    )
    val = history.query("split == 'val'")
    assert sorted(val["step"].unique()) == [3, 6, 7]
    assert set(val["metric"]) == {"loss", "cosine"}
    assert val.query("metric == 'cosine'")["value"].between(-1, 1).all()
    assert model.state.step == 7 and model.state.train_seconds > 0


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_save_load_round_trip_gives_identical_predictions(
    kind, tiny_encoder_dir, tiny_embedder, answer_vectors, tmp_path
):
    config = tiny_config(kind, encoder=tiny_encoder_dir, learning_rate=1e-2)
    model, _ = train_forward_model(
        PROMPTS[:8], answer_vectors[:8], PROMPTS[8:], answer_vectors[8:], config, tiny_embedder
    )
    model.save(tmp_path / "saved")
    loaded = ForwardModel.load(tmp_path / "saved", embedder=tiny_embedder)
    assert loaded.config == config and loaded.state.history.records == model.state.history.records
    np.testing.assert_array_equal(loaded.predict(PROMPTS), model.predict(PROMPTS))
    assert not np.allclose(model.predict(PROMPTS), tiny_embedder.embed(PROMPTS), atol=1e-3)  # it did learn


def test_load_rebuilds_the_embedder_and_refuses_a_missing_model_or_another_space(
    tiny_embedder, answer_vectors, tmp_path
):
    with pytest.raises(FileNotFoundError, match="No forward model in"):
        ForwardModel.load(tmp_path / "nothing")
    model, _ = train_forward_model(PROMPTS, answer_vectors, None, None, tiny_config(max_steps=1), tiny_embedder)
    model.save(tmp_path)
    loaded = ForwardModel.load(tmp_path)  # the prompt embedder is rebuilt from the recorded space
    assert loaded.embedder.name == tiny_embedder.name
    np.testing.assert_allclose(loaded.predict(PROMPTS), model.predict(PROMPTS), atol=1e-6)

    class OtherSpace:
        name, dimensions = "openai/text-embedding-3-small", 1024

    with pytest.raises(
        ValueError,
        match=r"predicts local/.*tiny-bert vectors \(32-d\), but the embedder given is "
        "openai/text-embedding-3-small",
    ):
        ForwardModel.load(tmp_path, embedder=OtherSpace())


def _train_losses(history):
    return history.query("split == 'train' and metric == 'loss'").set_index("step")["value"]


def test_resuming_to_2n_steps_equals_an_uninterrupted_2n_run(tiny_embedder, answer_vectors, tmp_path):
    # Dropout on, so resuming also has to restore the RNG to draw the same masks.
    common = dict(dropout=0.3, batch_size=3, eval_every_steps=2, save_every_steps=2)
    data = (PROMPTS[:9], answer_vectors[:9], PROMPTS[9:], answer_vectors[9:])
    first, _ = train_forward_model(
        *data, tiny_config(max_steps=5, output_dir=tmp_path / "run", **common), tiny_embedder
    )
    assert load_checkpoint(tmp_path / "run")["step"] == 5
    resumed, resumed_history = train_forward_model(
        *data, tiny_config(max_steps=10, output_dir=tmp_path / "run", **common), tiny_embedder
    )
    straight, straight_history = train_forward_model(
        *data, tiny_config(max_steps=10, output_dir=tmp_path / "straight", **common), tiny_embedder
    )
    np.testing.assert_array_equal(resumed.predict(PROMPTS), straight.predict(PROMPTS))
    np.testing.assert_array_equal(_train_losses(resumed_history), _train_losses(straight_history))
    assert not np.array_equal(first.predict(PROMPTS), straight.predict(PROMPTS))  # the resumed run did train on


def test_a_run_killed_mid_way_resumes_from_its_last_checkpoint(tiny_embedder, answer_vectors, tmp_path, monkeypatch):
    config = tiny_config(
        max_steps=12, save_every_steps=4, dropout=0.2, lr_scheduler="linear", batch_size=3, output_dir=tmp_path / "run"
    )
    data = (PROMPTS, answer_vectors, None, None)
    real_loss, calls = fm.forward_loss, []

    def dies_at_step_7(*args):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt("killed")
        return real_loss(*args)

    monkeypatch.setattr(fm, "forward_loss", dies_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        train_forward_model(*data, config, tiny_embedder)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "run")["step"] == 4  # the last checkpoint before the kill
    resumed, history = train_forward_model(*data, config, tiny_embedder)
    straight, straight_history = train_forward_model(
        *data,
        ForwardModelConfig.from_dict({**config.to_dict(), "output_dir": str(tmp_path / "straight")}),
        tiny_embedder,
    )
    assert history["step"].min() == 1 and resumed.state.step == 12  # the history survived the restart
    np.testing.assert_array_equal(resumed.predict(PROMPTS), straight.predict(PROMPTS))
    np.testing.assert_array_equal(_train_losses(history), _train_losses(straight_history))


def test_resume_refuses_another_config_or_other_data(tiny_embedder, answer_vectors, tmp_path):
    train_forward_model(PROMPTS, answer_vectors, None, None, tiny_config(output_dir=tmp_path), tiny_embedder)
    with pytest.raises(ValueError, match=r"config changed \(hidden_sizes: checkpoint \[64\], now \[128\]\)"):
        train_forward_model(
            PROMPTS, answer_vectors, None, None, tiny_config(output_dir=tmp_path, hidden_sizes=(128,)), tiny_embedder
        )
    with pytest.raises(ValueError, match="trained on other data"):
        train_forward_model(
            PROMPTS[::-1], answer_vectors[::-1], None, None, tiny_config(output_dir=tmp_path), tiny_embedder
        )


def test_bad_training_inputs_name_the_problem(tiny_embedder, answer_vectors):
    with pytest.raises(ValueError, match=r"train_targets has shape \(12, 32\); expected \(11, 32\)"):
        train_forward_model(PROMPTS[:11], answer_vectors, None, None, tiny_config(), tiny_embedder)
    with pytest.raises(ValueError, match=r"expected \(12, 32\): one vector per train prompt, from the embedder"):
        train_forward_model(PROMPTS, answer_vectors[:, :16], None, None, tiny_config(), tiny_embedder)
    with pytest.raises(ValueError, match="Pass both val_prompts and val_targets, or neither"):
        train_forward_model(PROMPTS, answer_vectors, PROMPTS, None, tiny_config(), tiny_embedder)
    broken = answer_vectors.copy()
    broken[3, 0] = np.nan
    with pytest.raises(ValueError, match="train_targets holds NaN"):
        train_forward_model(PROMPTS, broken, None, None, tiny_config(), tiny_embedder)
    with pytest.raises(ValueError, match=r"1 input\(s\) are not non-empty strings \(2: ''\)"):
        train_forward_model(PROMPTS[:2] + [""], answer_vectors[:3], None, None, tiny_config(), tiny_embedder)
    with pytest.raises(TypeError, match="config must be a ForwardModelConfig"):
        train_forward_model(PROMPTS, answer_vectors, None, None, {"kind": "mlp"}, tiny_embedder)


def test_predict_cosine_is_the_cosine_to_each_target_or_to_one_shared_target(tiny_embedder, answer_vectors):
    model, _ = train_forward_model(PROMPTS, answer_vectors, None, None, tiny_config(), tiny_embedder)
    predicted = model.predict(PROMPTS)
    np.testing.assert_allclose(np.linalg.norm(predicted, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(
        model.predict_cosine(PROMPTS, 3 * answer_vectors), np.sum(predicted * answer_vectors, axis=1), atol=1e-6
    )
    np.testing.assert_allclose(
        model.predict_cosine(PROMPTS, answer_vectors[0]), predicted @ answer_vectors[0], atol=1e-6
    )
    with pytest.raises(ValueError, match=r"targets has shape \(3, 32\); expected \(12, 32\)"):
        model.predict_cosine(PROMPTS, answer_vectors[:3])
    assert model.predict([]).shape == (0, 32)


# --- the ranking term ------------------------------------------------------------------------------------------


class TableEmbedder:
    """Looks each prompt up in a fixed table of unit vectors: a synthetic prompt space with no model to load."""

    def __init__(self, prompts: list[str], vectors: np.ndarray):
        self.name, self.dimensions = "test/table", vectors.shape[1]
        self.rows = dict(zip(prompts, vectors))

    def embed(self, texts):
        return np.stack([self.rows[t] for t in texts]).astype(np.float32)


def _unit(rng: np.random.Generator, n: int, dims: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dims)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _tiny_groups(n_prompts: int = 12, dims: int = 32, k: int = 3, seed: int = 0) -> RankingGroups:
    """One group per prompt: anchored near its own answer, candidates its k nearest other prompts."""
    rng = np.random.default_rng(seed)
    answers = _unit(rng, n_prompts, dims)
    ids = [f"row-{i}" for i in range(n_prompts)]
    return ranking_groups(answers, [[i] for i in ids], ids, ids, answers, k)


def test_ranking_config_values_are_checked_with_the_fix_named():
    with pytest.raises(ValueError, match=r"ranking_weight=-0.5 must be a finite number >= 0; use 0 for no ranking"):
        ForwardModelConfig(ranking_weight=-0.5)
    with pytest.raises(
        ValueError, match=r"ranking_loss='softmax' is not supported; use one of \('listnet', 'pairwise'"
    ):
        ForwardModelConfig(ranking_loss="softmax")
    with pytest.raises(ValueError, match="ranking_temperature must be a finite number > 0, got 0"):
        ForwardModelConfig(ranking_temperature=0)
    with pytest.raises(ValueError, match="ranking_groups_per_step=0 must be a positive integer"):
        ForwardModelConfig(ranking_groups_per_step=0)
    with pytest.raises(ValueError, match=r"k=1 must be an integer >= 2 \(candidates per ranking group; a ranking"):
        _tiny_groups(k=1)
    with pytest.raises(ValueError, match=r"RankingGroups has k=1 candidates per group; a ranking needs k >= 2"):
        RankingGroups(np.ones((2, 4)), np.zeros((2, 1), dtype=int), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="Target 0 has fewer than k=12 candidates once its own and same-output rows"):
        _tiny_groups(k=12)  # 12 prompts, one of them the anchor's own


def test_ranking_needs_groups_that_fit_the_training_prompts(tiny_embedder, answer_vectors):
    with pytest.raises(ValueError, match=r"ranking_weight=1.0 needs ranking_groups .*; pass them, or set ranking_"):
        train_forward_model(PROMPTS, answer_vectors, None, None, tiny_config(ranking_weight=1.0), tiny_embedder)
    groups = _tiny_groups()
    with pytest.raises(ValueError, match="candidates run from 0 to 11, but there are 8 training prompts"):
        train_forward_model(
            PROMPTS[:8],
            answer_vectors[:8],
            None,
            None,
            tiny_config(ranking_weight=1.0),
            tiny_embedder,
            ranking_groups=groups,
        )
    with pytest.raises(ValueError, match="ranking_groups.targets are 16-d but the embedder gives 32-d"):
        train_forward_model(
            PROMPTS,
            answer_vectors,
            None,
            None,
            tiny_config(ranking_weight=1.0),
            tiny_embedder,
            ranking_groups=_tiny_groups(dims=16),
        )


def test_groups_never_hold_the_anchor_row_a_same_output_row_or_a_prompt_outside_training():
    rng = np.random.default_rng(1)
    answers = _unit(rng, 10, 8)
    answers[3] = answers[0]  # row 3 has the same output (and so the same answer) as row 0
    frame = pd.DataFrame(
        {"id": [f"r{i}" for i in range(10)], "output": [f"out {i % 3 if i in (0, 3) else i}" for i in range(10)]}
    )
    train_ids = [f"r{i}" for i in range(9)]  # r9 is held out: answered, but never a candidate

    class Index:
        def answer_vectors(self, ids):
            return list(ids) + ["r9"], np.concatenate([answers[[int(i[1:]) for i in ids]], answers[[9]]])

    anchors = answers.copy()
    anchors[1] = answers[9]  # anchor 1 sits on the held-out row's answer
    groups = index_ranking_groups(Index(), frame, np.arange(9), anchors, train_ids, k=4)
    assert groups.candidates.shape == (9, 4)
    assert groups.cosines[1].max() < 0.99  # r9's answer is anchor 1 itself, yet r9 is not a training prompt
    assert not np.isin(groups.candidates[0], [0, 3]).any() and not np.isin(groups.candidates[3], [0, 3]).any()
    for row in range(9):
        assert row not in groups.candidates[row]
        np.testing.assert_allclose(groups.cosines[row], answers[groups.candidates[row]] @ anchors[row], atol=1e-6)
        assert np.all(np.diff(groups.cosines[row]) <= 0)  # best first
    unrestricted = ranking_groups(anchors[:9], [[] for _ in range(9)], train_ids, train_ids, answers[:9], 4)
    assert unrestricted.candidates[0][:2].tolist() in ([0, 3], [3, 0])  # left in, they would come first


def test_ranking_weight_0_trains_exactly_todays_weights(tiny_encoder_dir, tiny_embedder, answer_vectors):
    common = dict(encoder=tiny_encoder_dir, dropout=0.2, max_steps=4)
    for kind in ("mlp", "transformer"):
        plain, _ = train_forward_model(PROMPTS, answer_vectors, None, None, tiny_config(kind, **common), tiny_embedder)
        zero, _ = train_forward_model(
            PROMPTS,
            answer_vectors,
            None,
            None,
            tiny_config(kind, ranking_weight=0.0, ranking_temperature=0.5, ranking_groups_per_step=2, **common),
            tiny_embedder,
            ranking_groups=_tiny_groups(),
        )
        ranked, history = train_forward_model(
            PROMPTS,
            answer_vectors,
            None,
            None,
            tiny_config(kind, ranking_weight=1.0, **common),
            tiny_embedder,
            ranking_groups=_tiny_groups(),
        )
        for name, weights in plain.net.state_dict().items():
            torch.testing.assert_close(zero.net.state_dict()[name], weights, rtol=0, atol=0)
        assert not np.array_equal(ranked.predict(PROMPTS), plain.predict(PROMPTS))  # the term does train
        assert {"regression", "ranking"} <= set(history["metric"])


def _synthetic_ranking_task(n_prompts: int = 96, dims: int = 8, k: int = 6):
    """Prompts with random embeddings x; their real answers a = x rotated (a map the model can learn). The regression
    targets are unrelated noise, so MSE alone cannot learn the ranking; the groups' labels cos(a_i, t) can."""
    rng = np.random.default_rng(0)
    prompts = [f"prompt {i}" for i in range(n_prompts)]
    x = _unit(rng, n_prompts, dims)
    rotation = np.linalg.qr(rng.standard_normal((dims, dims)))[0].astype(np.float32)
    answers = x @ rotation
    ids = [f"row-{i}" for i in range(n_prompts)]
    train_anchors = _unit(rng, 4 * n_prompts, dims)
    groups = ranking_groups(train_anchors, [[] for _ in train_anchors], ids, ids, answers, k)
    eval_anchors = _unit(rng, 40, dims)  # fresh targets, ranked over the same prompts
    evaluation = ranking_groups(eval_anchors, [[] for _ in eval_anchors], ids, ids, answers, k)
    return prompts, TableEmbedder(prompts, x), _unit(rng, n_prompts, dims), groups, evaluation


@pytest.mark.parametrize("ranking_loss", ["listnet", "pairwise"])
def test_the_ranking_term_learns_an_order_that_regression_alone_misses(ranking_loss):
    prompts, embedder, noise_targets, groups, evaluation = _synthetic_ranking_task()

    def spearman(weight: float) -> float:
        config = tiny_config(
            hidden_sizes=(32,),
            dropout=0.0,
            batch_size=16,
            max_steps=150,
            learning_rate=1e-2,
            ranking_weight=weight,
            ranking_loss=ranking_loss,
            ranking_temperature=0.1,
            ranking_groups_per_step=16,
        )
        model, _ = train_forward_model(prompts, noise_targets, None, None, config, embedder, ranking_groups=groups)
        predicted = [
            model.predict_cosine([prompts[i] for i in row], t)
            for row, t in zip(evaluation.candidates, evaluation.targets)
        ]
        return ranking_quality(predicted, evaluation.cosines)["spearman"]

    plain, ranked = spearman(0.0), spearman(1.0)
    assert plain < 0.3 and ranked > plain + 0.4, (plain, ranked)


def test_resuming_a_ranked_run_equals_an_uninterrupted_one_and_refuses_other_groups(
    tiny_embedder, answer_vectors, tmp_path
):
    common = dict(
        dropout=0.3, batch_size=3, eval_every_steps=2, save_every_steps=2, ranking_weight=0.5, ranking_groups_per_step=5
    )  # 12 groups in batches of 5: passes end mid-run, short batches too
    data = (PROMPTS, answer_vectors, None, None)
    groups = _tiny_groups()
    train_forward_model(
        *data, tiny_config(max_steps=5, output_dir=tmp_path / "run", **common), tiny_embedder, ranking_groups=groups
    )
    resumed, resumed_history = train_forward_model(
        *data, tiny_config(max_steps=10, output_dir=tmp_path / "run", **common), tiny_embedder, ranking_groups=groups
    )
    straight, straight_history = train_forward_model(
        *data,
        tiny_config(max_steps=10, output_dir=tmp_path / "straight", **common),
        tiny_embedder,
        ranking_groups=groups,
    )
    np.testing.assert_array_equal(resumed.predict(PROMPTS), straight.predict(PROMPTS))
    np.testing.assert_array_equal(_train_losses(resumed_history), _train_losses(straight_history))
    with pytest.raises(ValueError, match="trained on other data"):
        train_forward_model(
            *data,
            tiny_config(max_steps=12, output_dir=tmp_path / "run", **common),
            tiny_embedder,
            ranking_groups=_tiny_groups(seed=1),
        )


def test_a_checkpoint_saved_before_the_ranking_fields_existed_still_resumes(tiny_embedder, answer_vectors, tmp_path):
    data = (PROMPTS, answer_vectors, None, None)
    train_forward_model(*data, tiny_config(max_steps=3, output_dir=tmp_path), tiny_embedder)
    path = tmp_path / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    for name in fm.LATER_FIELDS:
        del checkpoint["config"][name]
    torch.save(checkpoint, path)
    model, _ = train_forward_model(*data, tiny_config(max_steps=6, output_dir=tmp_path), tiny_embedder)
    assert model.state.step == 6
    assert ForwardModel.load(tmp_path).config.ranking_weight == 0.0


def test_ranking_losses_are_zero_or_least_for_the_right_order():
    labels = torch.tensor([[0.6, 0.5, 0.4]])
    right, wrong = labels.clone(), labels.flip(-1)
    assert ranking_loss(right, labels, 0.05, "listnet").item() == pytest.approx(0.0, abs=1e-6)
    assert ranking_loss(wrong, labels, 0.05, "listnet") > 0.5
    assert ranking_loss(right, labels, 0.05, "pairwise") < ranking_loss(wrong, labels, 0.05, "pairwise")
    assert group_batch(10, 4, seed=0, step=2).tolist() != group_batch(10, 4, seed=0, step=5).tolist()
    assert sorted(np.concatenate([group_batch(10, 4, 0, s) for s in range(3)]).tolist()) == list(range(10))


# --- baselines and evaluation ----------------------------------------------------------------------------------


def test_cosine_table_normalises_predictions_and_refuses_misaligned_ones():
    targets = np.eye(3, dtype=np.float32)
    table = cosine_table({"exact but scaled": 5 * targets, "orthogonal": np.roll(targets, 1, axis=0)}, targets)
    assert table.columns.tolist() == ["method", "mean_cosine", "median_cosine", "std_cosine", "n"]
    assert table["mean_cosine"].round(6).tolist() == [1.0, 0.0] and table["n"].tolist() == [3, 3]
    with pytest.raises(ValueError, match=r"Predictions of 'short' have shape \(2, 3\); targets have \(3, 3\)"):
        cosine_table({"short": targets[:2]}, targets)


def test_ridge_recovers_a_linear_map_and_picks_alpha_on_validation():
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(16, 16))
    x_train, x_val = rng.normal(size=(200, 16)), rng.normal(size=(50, 16))
    ridge, alpha = fit_ridge(x_train, x_train @ weights, x_val, x_val @ weights, alphas=(1e-3, 1e3))
    assert alpha == 1e-3  # no noise: the weakest penalty fits best
    assert cosine_table({"ridge": ridge.predict(x_val)}, x_val @ weights)["mean_cosine"].iloc[0] > 0.999
    noisy_train, noisy_val = rng.normal(size=(20, 16)), rng.normal(size=(50, 16))  # targets unrelated to x
    _, alpha = fit_ridge(x_train[:20], noisy_train, x_val, noisy_val, alphas=(1e-3, 1e3))
    assert alpha == 1e3  # pure noise: the strongest penalty generalises best


def test_evaluation_table_has_models_and_both_baselines(tiny_embedder, answer_vectors):
    model, _ = train_forward_model(PROMPTS[:8], answer_vectors[:8], None, None, tiny_config(), tiny_embedder)
    baselines = forward_baselines(
        PROMPTS[:6], answer_vectors[:6], PROMPTS[6:9], answer_vectors[6:9], PROMPTS[9:], tiny_embedder
    )
    np.testing.assert_allclose(baselines["prompt embedding"], tiny_embedder.embed(PROMPTS[9:]), atol=1e-6)
    table = evaluate_forward_model({"mlp": model}, PROMPTS[9:], answer_vectors[9:], baselines)
    assert table["method"].tolist()[:2] == ["mlp", "prompt embedding"]
    assert table["method"].iloc[2].startswith("ridge (alpha=")
    assert (table["n"] == 3).all() and table["mean_cosine"].between(-1, 1).all()


def test_embed_texts_caches_vectors_without_touching_the_dataset_rows(tiny_embedder, tmp_path):
    class Counting:
        """The tiny embedder, counting the texts it is asked to embed."""

        name, dimensions = tiny_embedder.name, tiny_embedder.dimensions
        texts = 0

        def embed(self, texts):
            Counting.texts += len(texts)
            return tiny_embedder.embed(texts)

    first = embed_texts(PROMPTS + PROMPTS[:2], Counting(), cache_dir=tmp_path)
    assert Counting.texts == len(PROMPTS)  # duplicates embedded once
    np.testing.assert_allclose(embed_texts(PROMPTS, Counting(), cache_dir=tmp_path), first[:12], atol=0)
    assert Counting.texts == len(PROMPTS)  # the second call was all cache hits
    np.testing.assert_allclose(first[:12], tiny_embedder.embed(PROMPTS), atol=1e-6)
    with EmbeddingCache(embedding_cache_path(tiny_embedder.name, 32, tmp_path), tiny_embedder.name, 32) as cache:
        assert len(cache) == 12 and cache.read_records()[0].empty


# --- the real all-MiniLM-L6-v2 ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> LocalEmbedder:
    return LocalEmbedder(show_progress=False)


@pytest.mark.slow
def test_real_minilm_transformer_starts_at_the_embedder_and_round_trips(minilm, tmp_path):
    config = forward_model_config(
        "transformer", max_steps=2, batch_size=4, show_progress=False, device="cpu", output_dir=str(tmp_path)
    )
    untrained, tokenizer = build_network(config, dimensions=384)
    inputs = fm.PromptTokens(PROMPTS, tokenizer, config.max_seq_len)
    raw = fm.predict_raw(untrained, inputs, torch.device("cpu")).numpy()
    np.testing.assert_allclose(raw, minilm.embed(PROMPTS), atol=1e-5)  # same pooling as sentence-transformers
    model, history = train_forward_model(
        PROMPTS[:8], minilm.embed(ANSWERS[:8]), PROMPTS[8:], minilm.embed(ANSWERS[8:]), config, minilm
    )
    assert history.query("split == 'val'")["step"].tolist() == [2, 2]
    loaded = ForwardModel.load(tmp_path)  # no embedder needed, and none built, for the transformer kind
    assert loaded.embedder is None
    np.testing.assert_array_equal(loaded.predict(PROMPTS), model.predict(PROMPTS))
    assert model.predict(PROMPTS).shape == (12, 384)


@pytest.mark.slow
def test_real_minilm_mlp_loads_with_its_default_embedder(minilm, tmp_path):
    model, _ = train_forward_model(
        PROMPTS,
        minilm.embed(ANSWERS),
        None,
        None,
        forward_model_config("mlp", max_steps=3, show_progress=False),
        minilm,
    )
    model.save(tmp_path)
    loaded = ForwardModel.load(tmp_path)  # rebuilds the packaged all-MiniLM-L6-v2 embedder by itself
    assert loaded.embedder.name == "local/all-MiniLM-L6-v2"
    np.testing.assert_allclose(loaded.predict(PROMPTS), model.predict(PROMPTS), atol=1e-6)
