"""Models for tasks the generator never saw: `nndiff run --family` on every built-in family with
its default settings, timed, and the table of bench/unseen.md.

    python bench/unseen.py --out /tmp/unseen     # prints the markdown; one run directory per family
"""

import argparse
import math
import platform
import time
from datetime import date
from pathlib import Path

import torch

from nndiff.families.builtin import FAMILIES
from nndiff.report.family import label, methods
from nndiff.families.config import FamilyConfig
from nndiff.families.run import run_family


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, {date.today()}\n")
    for name in FAMILIES:
        t0 = time.perf_counter()
        m = run_family(FamilyConfig(family=name), args.out / name, progress=False, log=lambda *_: None)
        wall = time.perf_counter() - t0
        chosen = m["chosen_on_validation_tasks"]["generator"]
        print(f"## {name}: {m['tasks']['heldout']} held-out tasks, end to end {wall / 60:.1f} min\n")
        print(f"| method | test accuracy | minus {chosen} (the default, chosen on validation tasks) |")
        print("|---|---|---|")
        for k in sorted(methods(m), key=lambda k: -m[k]["test_acc_mean"]):
            d = m[k][f"minus_{chosen}"]
            print(f"| {label(k)} | {m[k]['test_acc_mean']:.2f} [{m[k]['ci95'][0]:.2f}, {m[k]['ci95'][1]:.2f}] | "
                  f"{d['estimate']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] |")
        for g, steps in m["sgd_steps_worth"].items():
            s = m["sampling_s"][g]
            worth = "> 1,000" if math.isinf(steps) else f"{steps:.0f}"
            print(f"\n- {g}: worth {worth} SGD steps; 100 models for one task in {s['100_models_one_task']:.3f} s")
        if "regression_examples" in m:
            d = m["regression_examples"][f"minus_{chosen}"]
            print(f"- asked for by {m['shots']} examples per class instead of the code: {d['estimate']:+.2f} "
                  f"[{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] points against the code-conditioned {chosen}")
            d = m["regression_examples_per_base_class"][f"minus_{chosen}"]
            print(f"- asked for by {m['shots']} examples of every base class (labelled by the task): "
                  f"{d['estimate']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] points against the code")
        d = m["diffusion_minus_regression"]
        print(f"- latent diffusion minus the plain (MSE) regression: {d['estimate']:+.2f} "
              f"[{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]")
        nov = m["novelty"]
        print(f"- novelty of the {chosen} generator's heads: nearest distance to the task's own trained heads "
              f"{nov['relative_nearest_distance_median']:.2f} of their spacing (median), "
              f"{100 * nov['replica_share']:.0f}% replicas")
        print(f"- timings (s): {', '.join(f'{k} {v:.1f}' for k, v in m['timings_s'].items())}\n")


if __name__ == "__main__":
    main()
