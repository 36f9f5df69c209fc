"""Which system prompt makes SmolLM2's answers most like Alpaca's reference outputs?

e2p's targets are embeddings of Alpaca outputs, so the environment should answer in Alpaca's register. This script
answers the first N Alpaca prompts greedily under each candidate system prompt, embeds answers and reference outputs
with the local embedder (all-MiniLM-L6-v2), and prints per candidate the mean cosine(answer, reference), the median
answer length in cl100k tokens (Alpaca's median: 43), and the share of answers cut at max_new_tokens. The winner is
`e2p_lib.lm.DEFAULT_SYSTEM_PROMPT`.

    .venv/bin/python bench/lm_system_prompt.py --prompts 24 --threads 1

Answers are cached (data_dir()/answers), so a rerun only generates what is new.
"""

from __future__ import annotations

import argparse

import numpy as np

from e2p_lib.data import load_alpaca
from e2p_lib.embed import make_embedder
from e2p_lib.lm import LocalChatLM
from e2p_lib.lm.cache import CachedLM
from e2p_lib.tokens import count_tokens

CANDIDATES = {
    "SmolLM2 default (None)": None,
    "Alpaca preamble": "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.",
    "concise assistant": "You are a helpful assistant. Answer the request directly and concisely, in under 100 words.",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data/alpaca_5000.json")
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (None: torch's default)")
    args = parser.parse_args()

    frame = load_alpaca(args.data, limit=args.prompts)
    embedder = make_embedder("local", show_progress=False)
    references = embedder.embed(frame["output"].tolist())
    print(f"{'system prompt':<24} {'cosine':>7} {'median tokens':>14} {'cut':>5}")
    for label, system_prompt in CANDIDATES.items():
        lm = CachedLM(LocalChatLM(system_prompt=system_prompt, num_threads=args.threads))
        answers = lm.generate(frame["prompt"].tolist(), max_new_tokens=args.max_new_tokens)
        cosines = np.sum(embedder.embed([a or "(empty)" for a in answers]) * references, axis=1)
        tokens = np.asarray(count_tokens(answers))
        # Re-tokenising an answer can come out a token shorter than generated, hence the margin of 2.
        lm_tokens = np.asarray([len(ids) for ids in lm.lm.tokenizer(answers)["input_ids"]])
        cut = np.mean(lm_tokens >= args.max_new_tokens - 2)
        print(f"{label:<24} {cosines.mean():7.3f} {np.median(tokens):14.0f} {cut:5.0%}")


if __name__ == "__main__":
    main()
