"""Are the environment engines' answers as good? 05_eval's `original prompt` row, engine by engine (issue 14).

05_eval scores every method by how close the environment's answers land to held-out Alpaca outputs; its
`original prompt` row answers each target's own Alpaca prompt. An engine that answers as well as transformers
float32 must keep that row: issue 14 asks for CTranslate2 int8 (the default of `make_lm("local")`) to stay within
0.01 of transformers float32 there. This script rebuilds the row with library calls only:

- the targets: `load_alpaca` -> `add_split` -> `pipeline.split_rows(frame, "test", targets)`, the same first
  `--targets` test rows as 05_eval (which reads the same frame from 01_embed's cache), and their Alpaca outputs
  embedded by MiniLM through the project's embedding cache (`embed_texts`: the vectors 05_eval uses);
- the answers: the original prompts answered greedily, `--max-new-tokens` (05_eval's 64), by each engine built by
  `make_lm("local", engine=..., cache=False)`, so every engine really generates (no answer cache is read or
  written); transformers float32, CTranslate2 float32 and CTranslate2 int8 (the default) by default;
- the score: `embed_answers` (MiniLM, a blank answer as `NO_ANSWER`) and `answer_cosines` to the targets, the
  mean with its 95% bootstrap interval (`mean_ci`), and the paired difference to transformers float32 with its
  paired bootstrap interval (`paired_difference`): exactly 05_eval's metrics.

Beside quality, the cost of the same call: answer tokens per second (wall) and CPU seconds of this process (all
threads, `time.process_time`) per 1,000 answer tokens, which other jobs on shared cores disturb far less than wall
time. Engines run one after the other in one process, each after an untimed warm-up call; the load average is
printed before and after, since the cores may be shared.

    .venv/bin/python bench/environment_quality.py                       # 120 test targets, 64 tokens, 3 engines
    .venv/bin/python bench/environment_quality.py --targets 24 --engines "CTranslate2 int8"   # a quick look
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from e2p_lib.data import add_split, load_alpaca
from e2p_lib.embed import LocalEmbedder
from e2p_lib.embed.cache import embed_texts
from e2p_lib.evaluate.metrics import answer_cosines, mean_ci, paired_difference
from e2p_lib.lm import make_lm
from e2p_lib.lm.ctranslate2 import default_threads
from e2p_lib.pipeline import split_rows
from e2p_lib.train.rewards import embed_answers

BASELINE = "transformers float32"
# name -> make_lm options; every engine on CPU with the project's chat template and system prompt, batch 32.
ENGINES = {
    BASELINE: {"engine": "transformers", "device": "cpu", "dtype": "float32"},
    "CTranslate2 float32": {"engine": "ctranslate2", "compute_type": "float32"},
    "CTranslate2 int8": {"engine": "ctranslate2", "compute_type": "int8"},
}
TOLERANCE = 0.01  # issue 14: int8's original-prompt mean within 0.01 of transformers float32's


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min) on {os.cpu_count()} cores"


def build(name: str, threads: int):
    options = dict(ENGINES[name])
    # torch's thread setting is process-wide (LocalChatLM's num_threads), CTranslate2's is per model.
    return make_lm("local", cache=False, num_threads=threads, show_progress=False, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("E2P_ALPACA_PATH") or "/work/shared/data/alpaca_5000.json")
    parser.add_argument("--targets", type=int, default=120, help="first test targets, as 05_eval's eval_targets")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="05_eval's answer_max_new_tokens")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    parser.add_argument("--threads", type=int, default=None, help="None: the cores this process may use")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (05_eval's default)")
    args = parser.parse_args()
    if BASELINE not in args.engines:
        parser.error(f"--engines must include {BASELINE!r}: the paired differences are against it.")
    threads = default_threads() if args.threads is None else args.threads

    frame = add_split(load_alpaca(args.data))
    test = split_rows(frame, "test", args.targets)
    prompts = frame["prompt"].to_numpy()[test].tolist()
    embedder = LocalEmbedder(show_progress=False)
    targets = embed_texts(frame["output"].to_numpy()[test].tolist(), embedder, show_progress=False)
    print(
        f"SmolLM2-135M-Instruct on {platform.processor() or platform.machine()}, {threads} threads; "
        f"05_eval's original prompt row: the first {len(test)} of {int((frame['split'] == 'test').sum())} test "
        f"targets of {args.data} ({len(frame)} rows), greedy, max_new_tokens={args.max_new_tokens}, batch 32, "
        f"no answer cache; embedder {embedder.name}\nbefore: {load_line()}\n"
    )

    results = {}
    for name in args.engines:
        lm = build(name, threads)
        lm.generate(prompts[:2], max_new_tokens=8)  # warm-up: first-call allocations and lazy initialisation
        tokens_before = lm.tokens_generated
        wall, cpu = time.perf_counter(), time.process_time()
        answers = lm.generate(prompts, max_new_tokens=args.max_new_tokens)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        tokens = lm.tokens_generated - tokens_before
        cosines = answer_cosines(embed_answers(answers, embedder, show_progress=False), targets)
        resolved = getattr(lm, "compute_type", None)  # CTranslate2 resolves "int8" to "int8_float32" on CPU
        label = f"{name} ({resolved})" if resolved and resolved not in name else name
        results[name] = {"label": label, "answers": answers, "cosines": cosines, "wall": wall, "cpu": cpu}
        results[name]["tokens"] = tokens
        print(f"{label}: {tokens} answer tokens in {wall:.1f} s wall, {cpu:.1f} s CPU; {load_line()}", flush=True)
        del lm

    base = results[BASELINE]
    base_cpu_per_token = base["cpu"] / base["tokens"]
    print(
        f"\n| engine | mean cosine to Alpaca output | 95% interval | paired difference vs {BASELINE} [95%] "
        "| answers identical to transformers | answer tokens | tok/s | CPU s per 1k tokens | x CPU per token |"
    )
    print("|:--|--:|--:|--:|--:|--:|--:|--:|--:|")
    for name, r in results.items():
        low, high = mean_ci(r["cosines"], n_resamples=args.resamples)
        if name == BASELINE:
            difference = "—"
        else:
            mean, d_low, d_high = paired_difference(r["cosines"], base["cosines"], n_resamples=args.resamples)
            difference = f"{mean:+.4f} [{d_low:+.4f}, {d_high:+.4f}]"
        same = sum(a == b for a, b in zip(r["answers"], base["answers"]))
        cpu_per_token = r["cpu"] / r["tokens"]
        print(
            f"| {r['label']} | {r['cosines'].mean():.4f} | {low:.4f}-{high:.4f} | {difference} | {same}/{len(test)} "
            f"| {r['tokens']} | {r['tokens'] / r['wall']:.1f} | {1000 * cpu_per_token:.1f} "
            f"| {cpu_per_token / base_cpu_per_token:.2f} |"
        )
    print(f"\nafter: {load_line()}")
    for name, r in results.items():
        if name == BASELINE:
            continue
        gap = float(r["cosines"].mean() - base["cosines"].mean())
        verdict = "within" if abs(gap) <= TOLERANCE else "NOT within"
        print(f"{r['label']}: mean {gap:+.4f} vs {BASELINE}, {verdict} {TOLERANCE} (issue 14)")


if __name__ == "__main__":
    main()
