"""The `e2p` command: run the notebooks, or write a prompt for a text from the trained models.

    e2p run                                   # the notebooks on the demo profile (as `make run`)
    e2p run --profile smoke --only 01_embed   # any option of `python -m e2p_lib.run_notebooks`
    e2p invert "Paris is the capital of France."
    e2p invert "A haiku about rain." --best-of 4 --measure   # + the achieved cosine of the environment's answer
    e2p invert "A haiku about rain." --budget 8              # the search (answer index + grounded), <= 8 calls
    e2p invert "A haiku about rain." --budget 8 --echo 2     # ... 2 of whose calls may ask to repeat a composed text
    e2p invert "A haiku about rain." --budget 8 --ground 2   # ... 2 of whose calls add a composed text as ideas

`invert` loads what `load_inverter` finds under data/models (the RL policy, else SFT; a forward model when trained)
and prints, for each text, the prompt and its predicted cosine (NaN without a forward model); `--measure` has the
environment answer the prompt and adds the achieved cosine.
"""

from __future__ import annotations

import argparse
import math
import sys

from e2p_lib.answer_index import DEFAULT_ANSWER_TOKENS
from e2p_lib.ground import DEFAULT_GROUND_CALLS, GROUND_MARGIN


def _cosine(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def invert_command(args: argparse.Namespace) -> int:
    """Print one block per text: the prompt, its predicted and (with --measure) achieved cosine."""
    from e2p_lib.invert import load_inverter

    if args.echo and args.budget is None:
        raise ValueError(f"--echo {args.echo} is a search option: add --budget B (e.g. --budget 8 --echo {args.echo})")
    if args.ground and args.budget is None:
        raise ValueError(f"--ground {args.ground} is a search option: add --budget B (e.g. --budget 8 --ground 2)")
    needs_environment = args.measure or args.rerank == "environment" or args.budget is not None
    inverter = load_inverter(
        args.policy,
        False if args.no_forward_model else args.forward_model,
        environment=args.environment if needs_environment else None,
        device=args.device,
        answer_max_new_tokens=args.answer_max_new_tokens,
    )
    if args.budget is not None:  # the search: the answer index's prompts and the policy's rewrites, <= B calls
        ground = args.ground
        if ground is None:  # as 05 reports `e2p, <=B calls`: grounded where 02's store of outputs is there to compose
            ground = DEFAULT_GROUND_CALLS if inverter.retrieval is not None else 0
        results = inverter.invert(args.texts, budget=args.budget, seed=args.seed, echo=args.echo, ground=ground)
    else:
        results = inverter.invert(
            args.texts,
            best_of=args.best_of,
            rerank=args.rerank if args.best_of > 1 else None,
            measure=args.measure,
            seed=args.seed,
        )
    measured = args.measure or args.budget is not None
    for text, result in zip(args.texts, results):
        print(f"target:           {text}")
        print(f"prompt:           {result.prompt}")
        print(f"predicted cosine: {_cosine(result.predicted_cosine)}")
        if measured:
            print(f"achieved cosine:  {_cosine(result.achieved_cosine)}")
            print(f"answer:           {result.answer}")
        if args.budget is not None:
            print(f"environment calls: {result.environment_calls}")
        print()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2p", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "run", help="run the notebooks headless into reports/ (options: e2p run --help)", add_help=False
    )
    invert = commands.add_parser("invert", help="write a prompt whose answer lands near each text's embedding")
    invert.add_argument("texts", nargs="+", metavar="TEXT", help="target text(s), embedded in the policy's space")
    invert.add_argument("--policy", default=None, help="a saved policy folder (default: data/models' RL, else SFT)")
    invert.add_argument("--forward-model", default=None, help="a saved forward model (default: the trained one)")
    invert.add_argument("--no-forward-model", action="store_true", help="load no forward model")
    invert.add_argument("--best-of", type=int, default=1, help="candidates per text, re-ranked (default 1: greedy)")
    invert.add_argument(
        "--rerank",
        choices=("forward", "environment"),
        default="forward",
        help="how best-of candidates are ranked (environment: one answer per candidate)",
    )
    invert.add_argument(
        "--measure", action="store_true", help="have the environment answer the prompt and print the achieved cosine"
    )
    invert.add_argument(
        "--environment",
        default="local",
        choices=("local", "openai"),
        help="the LM that answers (openai needs OPENAI_API_KEY)",
    )
    invert.add_argument(
        "--answer-max-new-tokens",
        type=int,
        default=DEFAULT_ANSWER_TOKENS,
        help="answer length cap in tokens (the answer index's)",
    )
    invert.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    invert.add_argument("--seed", type=int, default=0, help="seed of the sampled candidates")
    invert.add_argument(
        "--budget",
        type=int,
        default=None,
        help="search with at most B environment calls per text (the answer index from 02 and the policy's "
        "rewrites; what 05_eval reports as 'e2p, <=B calls'); prints the achieved cosine",
    )
    invert.add_argument(
        "--echo",
        type=int,
        default=0,
        help="with --budget: up to N of the search's calls ask the environment to repeat a text composed from the "
        "stored outputs nearest the target (README, 'Echo prompts'); at --budget 1, 1 lets such a prompt replace the "
        "index's when its text lies clearly nearer",
    )
    invert.add_argument(
        "--ground",
        type=int,
        default=None,
        help="with --budget: up to N of the search's calls answer the best indexed prompts with a text composed "
        "from the nearest stored outputs appended (3 wordings of the best, 2 of the second and third; README, "
        f"'Grounded prompts'); at --budget 1 the best prompt grounded replaces it when the text lies {GROUND_MARGIN} "
        f"nearer; default {DEFAULT_GROUND_CALLS} when 02's store is there, as 05 searches; 0: none",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"]:  # everything after `run` belongs to run_notebooks' own parser (its --help included)
        from e2p_lib import run_notebooks

        run_notebooks.main(argv[1:], prog="e2p run")
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return invert_command(args)
    except (FileNotFoundError, ValueError) as error:  # no trained model, or bad options: a message, not a traceback
        parser.exit(2, f"e2p: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
