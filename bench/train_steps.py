"""How many training steps do the autoencoder and the diffusion model need? (default task)

    python bench/train_steps.py --zoo runs/mnist1d-cnn/zoo     # about 4 minutes on 2 CPU cores

Trains the generator on one zoo with several step budgets and prints, for 100 generated models
(DDIM, 50 steps), the training time, the mean and median test accuracy and the mean
max-similarity to the training snapshots.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from nndiff.evaluation.engine import evaluate_params
from nndiff.evaluation.metrics import pairwise_iou
from nndiff.generator.config import TrainConfig
from nndiff.training.fit import fit
from nndiff.zoo.format import Zoo

BUDGETS = [(250, 500), (500, 1000), (1000, 1000), (1000, 2000), (2000, 4000)]  # (autoencoder, diffusion) steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", type=Path, required=True)
    args = parser.parse_args()
    zoo = Zoo.load(args.zoo)
    task = zoo.make_task()
    model = zoo.model(task).eval()
    test = task.splits()["test"]
    orig = evaluate_params(task, model, zoo.layout, zoo.params, splits={"test": test}, progress=False)["test"]
    print(f"originals: mean {orig.accuracy.mean():.3f}, median {orig.accuracy.median():.2f}\n")
    print("| autoencoder steps | diffusion steps | train s | recon. MSE | gen. mean | gen. median | max-similarity |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for ae_steps, diff_steps in BUDGETS:
        config = TrainConfig()
        config.autoencoder.steps, config.diffusion.steps = ae_steps, diff_steps
        t0 = time.perf_counter()
        gen, stats = fit(zoo, config, progress=False)
        seconds = time.perf_counter() - t0
        ev = evaluate_params(task, model, zoo.layout, gen.sample(100, seed=0), splits={"test": test}, progress=False)["test"]
        sim = pairwise_iou(ev.predictions, test.y, orig.predictions).max(1).values.mean()
        print(f"| {ae_steps} | {diff_steps} | {seconds:.0f} | {stats['autoencoder']['reconstruction_mse']:.4f} | "
              f"{ev.accuracy.mean():.3f} | {ev.accuracy.median():.2f} | {sim:.3f} |", flush=True)


if __name__ == "__main__":
    main()
