"""What the policy benches (`policy_sampling.py`, `policy_writing.py`, `policy_scoring.py`) read: a policy (a saved
one, or SmolLM2 with an untrained mapper) and, per target, two Alpaca prompts and one output as its reading, with
random unit target vectors: contexts as long as the search's (about 170 tokens), whatever prompts get written."""

from __future__ import annotations

import argparse

import numpy as np

from e2p_lib.data import load_alpaca
from e2p_lib.models.policy import Hypothesis, PolicyConfig, PromptPolicy


def add_arguments(parser: argparse.ArgumentParser, targets: int, targets_help: str) -> None:
    """The options every policy bench takes: --targets, --repeats, --data, --policy."""
    parser.add_argument("--targets", type=int, default=targets, help=targets_help)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per path, alternated")
    parser.add_argument("--data", default=None, help="Alpaca file (default: $E2P_ALPACA_PATH, then load_alpaca's)")
    parser.add_argument("--policy", help="a saved policy folder (default: SmolLM2 with an untrained mapper)")


def policy_inputs(args: argparse.Namespace, trainable: bool = False):
    """(policy, reading per target, (targets, d) unit vectors) for `args.targets` targets."""
    if args.policy:
        policy = PromptPolicy.load(args.policy, trainable=trainable)
    else:
        policy = PromptPolicy.from_pretrained_base(PolicyConfig(embedding_dim=384, hypotheses=2, answers=1))
    rows = load_alpaca(args.data, download=False, limit=3 * args.targets)
    reading = [
        [Hypothesis(rows["prompt"].iloc[3 * i + j], 0.5 - 0.1 * j) for j in range(2)]
        + [Hypothesis(rows["output"].iloc[3 * i + 2], 0.6, kind="answer")]
        for i in range(args.targets)
    ]
    targets = np.random.default_rng(0).normal(size=(args.targets, policy.config.embedding_dim)).astype(np.float32)
    return policy, reading, targets / np.linalg.norm(targets, axis=1, keepdims=True)
