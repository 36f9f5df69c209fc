"""The `e2p` console script: its help, the search config its options build, option errors refused before anything
loads (and no model library imported), and one `e2p invert` end to end on a tiny policy in MiniLM's space.

The end-to-end policy is tests/tiny.py's random SmolLM2-shaped model (its prompts are gibberish: the plumbing is the
point), made for 384-d targets so the real MiniLM embedder can embed the target text; the forward model is a tiny
untrained MLP over the same space; the environment is tests/test_invert.py's `EchoLM`.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

import e2p_lib.inversion.api
from e2p_lib.cli import build_parser, main, search_config
from e2p_lib.inversion import InversionResult, SearchConfig
from e2p_lib.inversion.inverter import base_lm_perplexity

E2P = Path(sys.executable).parent / "e2p"  # the console script pyproject's [project.scripts] installs
MINILM_DIMS = 384
MODEL_LIBRARIES = ("torch", "trl", "transformers", "peft", "sentence_transformers", "ctranslate2")
# In a fresh interpreter: run e2p's main on the arguments given after the code, then print the model libraries
# imported, whatever main did (exit, error or not).
FRESH = f"""
import json, sys
from e2p_lib.cli import main
try:
    main(sys.argv[1:])
finally:
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {MODEL_LIBRARIES!r})))
"""


def fresh(*argv: str | bytes) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", FRESH, *argv], capture_output=True, text=True, timeout=120)


def loaded_libraries(done: subprocess.CompletedProcess) -> list[str]:
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--help"], "usage: e2p [-h] {run,invert,results}"),
        (["run", "--help"], "usage: e2p run [-h] [--profile {"),
        (["invert", "--help"], "usage: e2p invert [-h] [--budget BUDGET]"),
        (["results", "--help"], "usage: e2p results [-h]"),
    ],
)
def test_console_script_help(argv, expected):
    assert E2P.is_file(), f"{E2P} is missing: reinstall the project (`make setup` or `pip install -e .`)."
    done = subprocess.run([str(E2P), *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(expected), done.stdout[:300]


# --- options -> SearchConfig ---------------------------------------------------------------------------------------


def test_the_cli_builds_the_search_searchconfig_describes():
    parse = build_parser().parse_args
    assert search_config(parse(["invert", "x"])) == SearchConfig()  # no option: the method 05 reports
    argv = ["invert", "x", "--budget", "1", "--no-policy", "--seed", "4", "--answer-tokens", "32", "--samples", "10"]
    argv += ["--rounds", "3", "--topics", "5"]
    expected = SearchConfig(budget=1, use_policy=False, seed=4, answer_tokens=32, samples=10, rounds=3, topics=5)
    assert search_config(parse(argv)) == expected
    pasting = ["invert", "x", "--pasting", "--echo", "3", "--ground", "7", "--budget", "256"]
    assert search_config(parse(pasting)) == SearchConfig(budget=256, clean=False, echo=3, ground=7)
    assert search_config(parse(["invert", "x", "--pasting"])) == SearchConfig(clean=False)


def fail_if_loaded(*args, **kwargs):
    raise AssertionError("load_inverter was called before the options were checked")


@pytest.mark.parametrize(
    "options, message",
    [
        (["--budget", "0"], "argument --budget: 0 is out of range: give 1 to 256"),
        (["--budget", "-1"], "argument --budget: -1 is out of range: give 1 to 256"),
        (["--budget", "100000"], "argument --budget: 100000 is out of range: give 1 to 256"),
        (["--budget", "two"], "argument --budget: 'two' is not an integer"),
        (["--budget", "2.5"], "argument --budget: '2.5' is not an integer"),
        (["--echo", "4", "--pasting"], "argument --echo: 4 is out of range: give 0 to 3"),
        (["--ground", "8", "--pasting"], "argument --ground: 8 is out of range: give 0 to 7"),
        (["--topics", "8"], "argument --topics: 8 is out of range: give 0 to 7"),
        (["--seed", "-1"], "argument --seed: -1 is out of range"),
        (["--samples", "0"], "argument --samples: 0 is out of range: give 1 to 64"),
        (["--rounds", "0"], "argument --rounds: 0 is out of range: give 1 to 16"),
        (["--answer-tokens", "0"], "argument --answer-tokens: 0 is out of range: give 1 to 4096"),
        (["--environment", "remote"], "argument --environment: invalid choice: 'remote'"),
        (["--echo", "1"], "e2p: error: --echo 1 pastes stored outputs' text into the prompt (the pasting track): add"),
        (["--ground", "2"], "e2p: error: --ground 2 pastes stored outputs' text into the prompt"),
    ],
)
def test_bad_options_exit_2_naming_the_option_before_anything_loads(options, message, capsys, monkeypatch):
    monkeypatch.setattr(e2p_lib.inversion.api, "load_inverter", fail_if_loaded)
    with pytest.raises(SystemExit) as stop:
        main(["invert", "some text", *options])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    "texts, message",
    [
        (["  "], "TEXT 1 is blank"),
        (["a fine text", "\n"], "TEXT 2 is blank"),
        (["a\udcff"], "TEXT 1 is not valid UTF-8"),  # what sys.argv holds for the undecodable byte 0xff
    ],
)
def test_bad_texts_exit_2_naming_the_text_before_anything_loads(texts, message, capsys, monkeypatch):
    monkeypatch.setattr(e2p_lib.inversion.api, "load_inverter", fail_if_loaded)
    with pytest.raises(SystemExit) as stop:
        main(["invert", *texts])
    assert stop.value.code == 2
    assert f"e2p: error: {message}" in capsys.readouterr().err


def test_help_and_option_errors_import_no_model_library_in_a_fresh_interpreter():
    done = fresh("--help")
    assert done.stdout.startswith("usage: e2p") and loaded_libraries(done) == []
    done = fresh("invert", "some text", "--budget", "0")
    assert done.returncode == 2 and "--budget: 0 is out of range" in done.stderr
    assert loaded_libraries(done) == []
    done = fresh("invert", b"caf\xff")  # an undecodable argument, as a shell passes it
    assert done.returncode == 2 and "TEXT 1 is not valid UTF-8" in done.stderr
    assert loaded_libraries(done) == []
    done = fresh("invert", "some text", "--ground", "1")
    assert done.returncode == 2 and "add --pasting" in done.stderr and loaded_libraries(done) == []


def test_help_starts_within_a_few_times_a_bare_interpreter():
    """`e2p --help` against `python -c pass`, alternating, median of each: a ratio, so a busy machine slows both."""
    assert E2P.is_file()
    seconds: dict[str, list[float]] = {"help": [], "bare": []}
    commands = {"help": [str(E2P), "--help"], "bare": [sys.executable, "-c", "pass"]}
    for _ in range(7):
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True, timeout=120)
            seconds[name].append(time.perf_counter() - start)
    ratio = statistics.median(seconds["help"]) / statistics.median(seconds["bare"])
    assert ratio < 10, f"e2p --help took {ratio:.1f}x a bare interpreter: a model library imported at start-up?"


# --- e2p invert -------------------------------------------------------------------------------------------------


class FakeInverter:
    """What `invert_command` needs of an inverter: `search` (recorded) and the clean line."""

    max_copied_share = 0.125

    def __init__(self):
        self.searched: list[tuple[list[str], SearchConfig]] = []

    def search(self, texts, config):
        self.searched.append((texts, config))
        return [
            InversionResult(f"Write about {t}.", math.nan, 0.5, f"About {t}", 3, "search", copied_share=0.0)
            for t in texts
        ]


def test_invert_searches_the_texts_with_the_options_config_and_prints_each_result(capsys, monkeypatch):
    inverter, loads = FakeInverter(), []
    monkeypatch.setattr(e2p_lib.inversion.api, "load_inverter", lambda *a, **k: loads.append((a, k)) or inverter)
    code = main(["invert", "rain", "bread", "--budget", "3", "--no-forward-model", "--device", "cpu"])
    assert code == 0
    assert inverter.searched == [(["rain", "bread"], SearchConfig(budget=3))]
    [(args, kwargs)] = loads
    assert args == (None, False) and kwargs == {
        "environment": "local",
        "device": "cpu",
        "answer_tokens": SearchConfig().answer_tokens,
    }
    out = capsys.readouterr().out
    fluency = base_lm_perplexity(["Write about rain."], "cpu")  # under the base LM, as 05 measures fluency
    assert out.startswith("clean line:        copied share <= 0.125\n")
    blocks = [block.splitlines() for block in out.split("\n\n")[1:] if block.strip()]
    assert blocks[0] == [
        "target:            rain",
        "prompt:            Write about rain.",
        "copied share:      0.000",
        "words:             3",
        f"perplexity:        {fluency[0]:.1f}",
        "achieved cosine:   0.500",
        "answer:            About rain",
        "environment calls: 3",
    ]
    assert blocks[1][0] == "target:            bread" and len(blocks) == 2

    main(["invert", "rain", "--pasting", "--ground", "2", "--policy", "p", "--forward-model", "f"])
    assert inverter.searched[-1][1] == SearchConfig(clean=False, ground=2)
    assert loads[-1][0] == ("p", "f")
    assert "clean line" not in capsys.readouterr().out  # the pasting track has none to print


def test_invert_without_a_trained_policy_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["invert", "some text", "--policy", str(tmp_path / "nothing")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("e2p: error: No saved policy in ") and "Traceback" not in err


@pytest.fixture
def cli_dirs(tmp_path, monkeypatch, alpaca_path):
    """Every artefact folder under tmp_path (as conftest's isolated_dirs), but SmolLM2's converted cache kept where
    it is (a new one converts the GGUF again, ~15-40 s) and `make_lm` answering with EchoLM (the CTranslate2 model
    would be converted too; the plumbing is the point). Returns the data folder."""
    from test_invert import EchoLM

    import e2p_lib.lm
    from e2p_lib.lm import smollm

    converted = smollm.default_cache_dir()  # before E2P_DATA_DIR moves
    monkeypatch.setattr(smollm, "default_cache_dir", lambda: converted)
    monkeypatch.setattr(e2p_lib.lm, "make_lm", lambda name, **options: EchoLM())
    for var, sub in (("E2P_DATA_DIR", "data"), ("E2P_FIGURES_DIR", "figures"), ("E2P_REPORTS_DIR", "reports")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("E2P_ALPACA_PATH", str(alpaca_path))
    return tmp_path / "data"


@pytest.mark.slow  # loads MiniLM and SmolLM2 (seconds each)
def test_invert_prints_the_prompt_its_copied_share_and_achieved_cosine(cli_dirs, tmp_path, capsys, smollm2_tokenizer):
    import torch
    from tiny import tiny_policy

    from e2p_lib.embed import DEFAULT_LOCAL_MODEL, make_embedder
    from e2p_lib.evaluate.quality import clean_line, save_clean_line
    from e2p_lib.models.forward import ForwardModel, MLPForwardNet, forward_model_config

    torch.manual_seed(0)
    tiny_policy(smollm2_tokenizer, embedding_dim=MINILM_DIMS).save(tmp_path / "policy")
    embedder = make_embedder("local")
    config = forward_model_config("mlp", hidden_sizes=(16,), device="cpu")  # 16 wide: tiny, untrained on purpose
    ForwardModel(
        config,
        MLPForwardNet(config, MINILM_DIMS),
        target_space=f"local/{DEFAULT_LOCAL_MODEL}",
        dimensions=MINILM_DIMS,
        device=torch.device("cpu"),
        embedder=embedder,
        cache_dir=tmp_path,
    ).save(tmp_path / "forward")
    text = "Paris is the capital of France."
    target = embedder.embed([text])
    argv = ["invert", text, "--policy", str(tmp_path / "policy"), "--forward-model", str(tmp_path / "forward")]
    argv += ["--budget", "2", "--device", "cpu"]

    # 02 has not run: a clean search of a text needs the clean line it records
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and "needs the clean line" in capsys.readouterr().err
    save_clean_line(clean_line([0.0, 0.1, 0.2], neighbours=8, store="alpaca"), cli_dirs)

    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = {k: v.strip() for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)}
    assert lines["clean line"] == "copied share <= 0.180" and lines["target"] == text and lines["prompt"], lines
    assert float(lines["copied share"]) <= 0.18
    assert lines["answer"] == f"Answer to: {lines['prompt']}"
    achieved = float(lines["achieved cosine"])
    assert achieved == pytest.approx(float(embedder.embed([lines["answer"]])[0] @ target[0]), abs=2e-3)
    assert 1 <= int(lines["environment calls"]) <= 2

    # --pasting --echo needs the stored outputs (02's store) to compose from; there is none here: a message naming it
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--pasting", "--echo", "1"])
    assert stop.value.code == 2
    assert "echo=1 reads the stored outputs" in capsys.readouterr().err
    # without the policy there is nothing to answer: no index, no store
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--no-policy"])
    assert stop.value.code == 2 and "have no prompt to answer" in capsys.readouterr().err
