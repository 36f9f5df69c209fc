"""torch's training speed after the CTranslate2 environment is loaded, with and without restoring torch's threads.

A CTranslate2 Generator with single-threaded workers (the 2-core default, `CTranslate2ChatLM(workers=...)`) sets the
loading thread's OpenMP count to 1; torch reads its default count from OpenMP lazily, so every later torch step of
that process ran on one core (03's policy, 04's PPO, 05's rewrites). `CTranslate2ChatLM` now puts torch's count back.
Each setting runs in a fresh interpreter, as a notebook kernel does: load the environment (or not), then time
SmolLM2-135M training steps (forward and backward, batch 8 x 64 tokens, the policy's base model).

    E2P_DATA_DIR=data .venv/bin/python bench/torch_threads.py --steps 5

Timings move with other processes on the same cores; compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

WORKLOAD = """
import json, time, torch
from e2p_lib.lm import ctranslate2 as ct2
from e2p_lib.lm.smollm import load_smollm2, smollm2_path
setting = {setting!r}
if setting == "raw Generator (before the fix)":
    folder = str(ct2.ct2_model_path(None, smollm2_path()))
    import ctranslate2  # after torch: imported before it, it left torch at 2 threads in one run (not investigated)
    ctranslate2.Generator(folder, device="cpu", inter_threads=2, intra_threads=1)
elif setting == "CTranslate2ChatLM (now)":
    ct2.CTranslate2ChatLM(num_threads=2, workers=2, show_progress=False)
model, _ = load_smollm2()
model.train()
ids = torch.randint(0, 1000, (8, 64))
times = []
for _ in range({steps} + 1):  # the first step warms up
    start = time.perf_counter()
    model(input_ids=ids, labels=ids).loss.backward()
    times.append(time.perf_counter() - start)
print(json.dumps({{"threads": torch.get_num_threads(), "seconds": sum(times[1:]) / {steps}}}))
"""

SETTINGS = ("no environment", "raw Generator (before the fix)", "CTranslate2ChatLM (now)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per setting")
    args = parser.parse_args()
    results = {}
    for setting in SETTINGS:
        code = WORKLOAD.format(setting=setting, steps=args.steps)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        results[setting] = json.loads(done.stdout.strip().splitlines()[-1])
    base = results["no environment"]["seconds"]
    print("| setting | torch threads | s per step | vs no environment |\n|---|--:|--:|--:|")
    for setting, r in results.items():
        print(f"| {setting} | {r['threads']} | {r['seconds']:.2f} | {r['seconds'] / base:.2f}x |")


if __name__ == "__main__":
    main()
