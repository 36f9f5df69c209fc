"""The `e2p` console script: its help, and one `e2p invert` on a tiny policy in MiniLM's space.

The policy is tests/tiny.py's random SmolLM2-shaped model (its prompts are gibberish: the plumbing is the point),
made for 384-d targets so the real MiniLM embedder can embed the target text; the forward model is a tiny untrained
MLP over the same space, so a predicted cosine is printed; `--measure` asks the real local SmolLM2 for the answer.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import tiny_policy

from e2p_lib.cli import main
from e2p_lib.embed import DEFAULT_LOCAL_MODEL, make_embedder
from e2p_lib.models.forward import ForwardModel, MLPForwardNet, forward_model_config

E2P = Path(sys.executable).parent / "e2p"  # the console script pyproject's [project.scripts] installs
MINILM_DIMS = 384


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--help"], "usage: e2p [-h] {run,invert}"),
        (["run", "--help"], "usage: e2p run [-h] [--profile {"),
        (["invert", "--help"], "usage: e2p invert [-h]"),
    ],
)
def test_console_script_help(argv, expected):
    assert E2P.is_file(), f"{E2P} is missing: reinstall the project (`make setup` or `pip install -e .`)."
    done = subprocess.run([str(E2P), *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(expected), done.stdout[:300]


def test_invert_without_a_trained_policy_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["invert", "some text", "--policy", str(tmp_path / "nothing")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith("e2p: error: ")


def test_echo_without_a_budget_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["invert", "some text", "--echo", "1", "--policy", str(tmp_path / "nothing")])
    assert stop.value.code == 2
    assert "--echo 1 is a search option: add --budget" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["invert", "some text", "--ground", "2", "--policy", str(tmp_path / "nothing")])
    assert stop.value.code == 2
    assert "--ground 2 is a search option: add --budget" in capsys.readouterr().err


@pytest.mark.slow  # loads MiniLM and SmolLM2 (seconds each)
def test_invert_prints_the_prompt_with_predicted_and_achieved_cosine(
    isolated_dirs, tmp_path, capsys, smollm2_tokenizer
):
    torch.manual_seed(0)
    policy = tiny_policy(smollm2_tokenizer, embedding_dim=MINILM_DIMS)
    policy.save(tmp_path / "policy")
    embedder = make_embedder("local")
    config = forward_model_config("mlp", hidden_sizes=(16,), device="cpu")  # 16 wide: tiny, untrained on purpose
    forward = ForwardModel(
        config,
        MLPForwardNet(config, MINILM_DIMS),
        target_space=f"local/{DEFAULT_LOCAL_MODEL}",
        dimensions=MINILM_DIMS,
        device=torch.device("cpu"),
        embedder=embedder,
        cache_dir=tmp_path,
    )
    forward.save(tmp_path / "forward")
    text = "Paris is the capital of France."
    target = embedder.embed([text])

    # best-of-3: the random policy's greedy prompt is empty, its samples are not, and the forward model ranks them.
    code = main(
        [
            "invert",
            text,
            "--policy",
            str(tmp_path / "policy"),
            "--forward-model",
            str(tmp_path / "forward"),
            "--best-of",
            "3",
            "--measure",
            "--answer-max-new-tokens",
            "8",
            "--device",
            "cpu",
        ]
    )

    assert code == 0
    lines = {
        k: v.strip() for k, v in (line.split(":", 1) for line in capsys.readouterr().out.splitlines() if ":" in line)
    }
    assert lines["target"] == text and lines["prompt"], lines
    predicted, achieved = float(lines["predicted cosine"]), float(lines["achieved cosine"])
    assert predicted == pytest.approx(float(forward.predict_cosine([lines["prompt"]], target)[0]), abs=2e-3)
    assert achieved == pytest.approx(float(embedder.embed([lines["answer"]])[0] @ target[0]), abs=2e-3)

    # --budget: the search (no answer index was built here, so rewrites only), within its environment calls
    code = main(
        ["invert", text, "--policy", str(tmp_path / "policy"), "--forward-model", str(tmp_path / "forward")]
        + ["--budget", "2", "--answer-max-new-tokens", "8", "--device", "cpu"]
    )
    assert code == 0
    out = capsys.readouterr().out
    calls = int(out.split("environment calls:")[1].split()[0])
    assert 1 <= calls <= 2 and "achieved cosine:" in out

    # --echo needs the stored outputs (02's store) to compose from; there is none here: a message naming the fix
    with pytest.raises(SystemExit) as stop:
        main(["invert", text, "--policy", str(tmp_path / "policy"), "--budget", "2", "--echo", "1", "--device", "cpu"])
    assert stop.value.code == 2
    assert "echo=1 composes texts from the stored outputs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(
            ["invert", text, "--policy", str(tmp_path / "policy"), "--budget", "2", "--ground", "1", "--device", "cpu"]
        )
    assert stop.value.code == 2
    assert "ground=1 composes texts from the stored outputs" in capsys.readouterr().err
