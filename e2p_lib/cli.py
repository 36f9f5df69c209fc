"""The `e2p` command: run the notebooks, write a prompt for a text, or write the README's results table.

    e2p run                                      # the notebooks on the demo profile (as `make run`)
    e2p run --profile smoke --only 01_embed      # any option of `python -m e2p_lib.run_notebooks`
    e2p invert "Paris is the capital of France."              # the search, SearchConfig(): <= 8 calls, clean
    e2p invert "A haiku about rain." --budget 1               # one environment call: the policy's prompt
    e2p invert "A haiku about rain." --pasting --ground 7     # the pasting track (stored outputs in the prompt)
    e2p results                                  # the README's results table from reports/*.json

`invert` loads what `load_inverter` finds in the data folder (04's chosen policy, the forward model, 02's answer
index, store of outputs and clean line) and prints, for each text, the prompt and its quality (copied share,
words, perplexity under the base LM), the achieved cosine of the environment's answer, the answer and the calls.
Options are checked before any model loads; this module imports no model library, so `--help` and a mistyped
option answer at once.
"""

from __future__ import annotations

import argparse
import math
import sys

from e2p_lib.inversion.config import (
    ECHO_TEMPLATE_COUNT,
    GROUND_CALL_COUNT,
    MAX_BUDGET,
    TOPIC_CALL_COUNT,
    SearchConfig,
)

DEFAULTS = SearchConfig()
MAX_ANSWER_TOKENS = 4096  # an answer cap above this is a typo on any environment e2p runs


def count(minimum: int, maximum: int):
    """An argparse type: an integer from `minimum` to `maximum`, refused at parse time with the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{value} is out of range: give {minimum} to {maximum}")
        return value

    return parse


def _cosine(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def search_config(args: argparse.Namespace) -> SearchConfig:
    """The `SearchConfig` the options ask for (the defaults are `SearchConfig()`'s).

    Raises:
        ValueError: a value out of range, or a pasting option without --pasting (the message names the option).
    """
    for flag, value in (("--echo", args.echo), ("--ground", args.ground)):
        if value and not args.pasting:
            raise ValueError(
                f"{flag} {value} pastes stored outputs' text into the prompt (the pasting track): add --pasting."
            )
    return SearchConfig(
        budget=args.budget,
        answer_tokens=args.answer_tokens,
        rounds=args.rounds,
        samples=args.samples,
        seed=args.seed,
        use_policy=not args.no_policy,
        topics=args.topics,
        fluency_margin=args.fluency_margin,
        clean=not args.pasting,
        echo=args.echo,
        ground=args.ground,
    )


def check_texts(texts: list[str]) -> list[str]:
    """The target texts, refused with the argument's position when blank or not valid UTF-8."""
    for position, text in enumerate(texts, start=1):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"TEXT {position} is not valid UTF-8 (the shell passed undecodable bytes): re-encode it as UTF-8."
            ) from None
        if not text.strip():
            raise ValueError(f"TEXT {position} is blank: give the text whose embedding the prompt should reach.")
    return texts


def invert_command(args: argparse.Namespace) -> int:
    """Print one block per text: the prompt, its copied share, the achieved cosine, the answer and the calls."""
    texts = check_texts(args.texts)
    config = search_config(args)  # every option is checked before anything loads
    from e2p_lib.devices import resolve_device
    from e2p_lib.inversion.api import load_inverter
    from e2p_lib.inversion.inverter import base_lm_perplexity

    inverter = load_inverter(
        args.policy,
        False if args.no_forward_model else args.forward_model,
        environment=args.environment,
        device=args.device,
        answer_tokens=config.answer_tokens,
    )
    results = inverter.search(texts, config)
    # the base LM the search's final pick loaded, loaded here when the search had no pick to make
    fluency = base_lm_perplexity([r.prompt for r in results], str(resolve_device(args.device)))
    if config.clean and inverter.max_copied_share is not None:
        print(f"clean line:        copied share <= {inverter.max_copied_share:.3f}\n")
    for text, result, ppl in zip(texts, results, fluency):
        print(f"target:            {text}")
        print(f"prompt:            {result.prompt}")
        print(f"copied share:      {_cosine(result.copied_share)}")
        print(f"words:             {len(result.prompt.split())}")
        print(f"perplexity:        {ppl:.1f}")
        print(f"achieved cosine:   {_cosine(result.achieved_cosine)}")
        print(f"answer:            {result.answer}")
        print(f"environment calls: {result.environment_calls}")
        print()
    return 0


def results_command(args: argparse.Namespace) -> int:
    """Write the README's results table from a run's reports (`e2p_lib.evaluate.readme`)."""
    from e2p_lib.evaluate.readme import update_readme

    path = update_readme(args.readme, args.reports)
    print(f"{path}: results table written from {args.reports}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2p", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "run", help="run the notebooks headless into reports/ (options: e2p run --help)", add_help=False
    )
    invert = commands.add_parser("invert", help="write an instruction whose answer lands near each text's embedding")
    invert.add_argument("texts", nargs="+", metavar="TEXT", help="target text(s), embedded in the policy's space")
    invert.add_argument(
        "--budget",
        type=count(1, MAX_BUDGET),
        default=DEFAULTS.budget,
        help=f"environment calls per text, 1 to {MAX_BUDGET} (default {DEFAULTS.budget}, as 05 reports)",
    )
    invert.add_argument(
        "--no-policy", action="store_true", help="search the answer index and stored prompts alone (no rewrites)"
    )
    invert.add_argument(
        "--topics",
        type=count(0, TOPIC_CALL_COUNT),
        default=DEFAULTS.topics,
        help=f"calls on known prompts with the text's topic words added, clean (default {DEFAULTS.topics})",
    )
    invert.add_argument(
        "--fluency-margin",
        type=float,
        default=DEFAULTS.fluency_margin,
        help="return the most fluent prompt whose answer lands within this cosine of the best "
        f"(default {DEFAULTS.fluency_margin}; 0: the best cosine alone)",
    )
    invert.add_argument(
        "--pasting",
        action="store_true",
        help="allow prompts that paste stored outputs' text (the opt-in track; off: only clean prompts)",
    )
    invert.add_argument(
        "--echo",
        type=count(0, ECHO_TEMPLATE_COUNT),
        default=0,
        help="with --pasting: calls asking the environment to repeat a composed text",
    )
    invert.add_argument(
        "--ground",
        type=count(0, GROUND_CALL_COUNT),
        default=0,
        help="with --pasting: calls on known prompts with a composed text appended",
    )
    invert.add_argument(
        "--rounds",
        type=count(1, 16),
        default=DEFAULTS.rounds,
        help=f"rounds of rewriting, each reading the last one's answers (default {DEFAULTS.rounds}; more: slower)",
    )
    invert.add_argument(
        "--samples",
        type=count(1, 64),
        default=DEFAULTS.samples,
        help=f"rewrites the policy writes per round (default {DEFAULTS.samples}; more use more of the budget, slower)",
    )
    invert.add_argument("--seed", type=count(0, 2**32 - 1), default=DEFAULTS.seed, help="seed of the sampled rewrites")
    invert.add_argument(
        "--answer-tokens",
        type=count(1, MAX_ANSWER_TOKENS),
        default=DEFAULTS.answer_tokens,
        help=f"answer length cap in tokens (default {DEFAULTS.answer_tokens}: the answer index's)",
    )
    invert.add_argument("--policy", default=None, help="a saved policy folder (default: the one 04 chose)")
    forward = invert.add_mutually_exclusive_group()
    forward.add_argument("--forward-model", default=None, help="a saved forward model (default: the trained one)")
    forward.add_argument("--no-forward-model", action="store_true", help="load no forward model")
    invert.add_argument(
        "--environment",
        default="local",
        choices=("local", "openai"),
        help="the LM that answers (openai needs OPENAI_API_KEY)",
    )
    invert.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    results = commands.add_parser("results", help="write README.md's results table from a run's reports/*.json")
    results.add_argument("--reports", default=None, help="the reports folder of the run (default: reports/)")
    results.add_argument("--readme", default=None, help="the README to update (default: the project's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"]:  # everything after `run` belongs to run_notebooks' own parser (its --help included)
        from e2p_lib import run_notebooks

        run_notebooks.main(argv[1:], prog="e2p run")
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    command = {"invert": invert_command, "results": results_command}[args.command]
    from e2p_lib.errors import DataFileError

    try:
        return command(args)
    except (FileNotFoundError, ValueError, DataFileError) as error:  # no model, bad options, an unusable data file
        parser.exit(2, f"e2p: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
