"""How cost grows with the number of generated parameters: synthetic zoos, and real ones end to end.

    python bench/scaling.py                          # synthetic, 10k to 10M, about 10 minutes on 2 CPU cores
    python bench/scaling.py --sizes 100000 1000000   # some sizes only
    python bench/scaling.py --real mnist1d-convnet mnist1d-mlp mnist1d-mlp100k mnist1d-mlp1m

Synthetic: for each D a zoo of 64 random vectors (timing only: the values do not matter for cost) is
trained with the autoencoder as the product configures it (automatic token size: about 1,024
tokens) and its own training step (autoencoder_step: the batch gathered, normalized and sent through
in micro-batches), and the latent denoiser, batch 64. Each size runs in a fresh process, which reports
the seconds per training step of each model and its peak resident memory against the zoo's own size
(64 x D float32). A second fresh process does the same for the principal-component codec (the
default where it passes the health check's lines): its fit, the diffusion step on its latent and
the decoding of 64 latents. The growth exponents are slopes of log(cost) over log(D) from 100k up.

Real: `nndiff run --task T` with no other settings, in a child process whose peak resident memory is
read per stage (Linux: /proc/PID/status VmHWM, reset at each stage's first line through clear_refs),
with the stage times, the seconds per step of both models, and the generated models' test accuracy
against the originals' (from metrics.json and the novelty report). Runs go to --out/TASK.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

SIZES = (10_000, 100_000, 1_000_000, 10_000_000)
# What both measuring children share: a zoo of 64 random rows of D values, the latent denoiser's
# training step on a latent, and the timing of a step (2 warm-up calls, then at least 5 and 3 s).
SETUP = r"""
import json, resource, sys, time
import torch
from nndiff.generator.denoiser import Denoiser, DenoiserConfig
from nndiff.generator.diffusion import DiffusionConfig, make_scheduler, training_loss
from nndiff.params.normalizer import Normalizer
from nndiff.runtime.memory import reuse_freed_memory
reuse_freed_memory()

dim = int(sys.argv[1])
torch.manual_seed(0)
x = torch.randn(64, dim)
normalizer = Normalizer(torch.zeros(dim), torch.ones(dim))

def denoiser_step(z):
    den = Denoiser(tuple(z.shape[1:]), DenoiserConfig())
    opt = torch.optim.AdamW(den.parameters(), 1e-3)
    sched = make_scheduler(DiffusionConfig())
    def step():
        loss = training_loss(den, z[torch.randint(64, (64,))], sched); opt.zero_grad(); loss.backward(); opt.step()
    return step

def seconds_per_call(step):
    for _ in range(2):
        step()  # warm-up
    n, t0 = 0, time.perf_counter()
    while n < 5 or time.perf_counter() - t0 < 3:
        step(); n += 1
    return (time.perf_counter() - t0) / n

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""
CHILD = SETUP + r"""
from nndiff.generator.autoencoder import Autoencoder, AutoencoderConfig
from nndiff.training.loops import autoencoder_step
ae = Autoencoder(dim, AutoencoderConfig())
opt = torch.optim.AdamW(ae.parameters(), 1e-3)
def ae_step():
    autoencoder_step(ae, ae, opt, x, torch.randint(64, (64,)), normalizer)
with torch.no_grad():
    z = ae.encode(x)
out = {"dim": dim, "token": ae.token, "latent": list(z.shape[1:]), "zoo_mib": x.numel() * 4 / 2**20}
out["autoencoder_s_per_step"] = seconds_per_call(ae_step)
out["diffusion_s_per_step"] = seconds_per_call(denoiser_step(z))
out["peak_rss_mib"] = peak_mib()
print(json.dumps(out))
"""
# The default codec where it passes the health check's lines (whole networks): the zoo's principal
# components. Its one pass over the zoo (the fit), the diffusion step on its [1, K - 1] latent (the
# zoo encoded a block of rows at a time, as training does) and the peak of that training; then
# decoding a batch of 64 latents into parameters (what sampling 64 models adds), in a process of its own.
PRINCIPAL_CHILD = SETUP + r"""
from nndiff.generator.principal import PrincipalCodec
from nndiff.training.loops import encode_all
t0 = time.perf_counter()
codec, _ = PrincipalCodec.fit(x, normalizer)
out = {"dim": dim, "pca_fit_s": time.perf_counter() - t0}
with torch.no_grad():
    z = encode_all(codec, x, normalizer, "cpu")
out["latent"] = list(z.shape[1:])
out["pca_diffusion_s"] = seconds_per_call(denoiser_step(z))
out["pca_peak_rss_mib"] = peak_mib()
out["pca_decode_s"] = seconds_per_call(torch.no_grad()(lambda: codec.decode(z)))
print(json.dumps(out))
"""
STAGES = ("collect", "train", "generate", "evaluate + report")


def _peak_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak(pid: int) -> None:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


def real_run(task: str, out: Path) -> dict:
    """`nndiff run --task TASK --out OUT/TASK` with its peak memory per stage."""
    run_dir = out / task
    cmd = [sys.executable, "-m", "nndiff", "run", "--task", task, "--out", str(run_dir), "--fresh"]
    log = (out / f"{task}.log").open("w")
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    stage, peaks, polled = [0], [0.0] * len(STAGES), [0.0]

    def follow() -> None:
        for line in child.stdout:
            log.write(line)
            log.flush()
            if line.startswith("[") and "/4]" in line[:6]:
                k = int(line[1]) - 1
                if k > stage[0]:
                    peaks[stage[0]] = max(peaks[stage[0]], _peak_mib(child.pid) or polled[0])
                    _reset_peak(child.pid)
                    stage[0], polled[0] = k, 0.0

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    t0 = time.perf_counter()
    while child.poll() is None:
        polled[0] = max(polled[0], _peak_mib(child.pid) or 0.0)
        time.sleep(0.25)
    wall = time.perf_counter() - t0
    reader.join()
    peaks[stage[0]] = max(peaks[stage[0]], polled[0])
    if child.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {child.returncode}; see {out / (task + '.log')}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    stats = json.loads((run_dir / "train_stats.json").read_text())
    novelty = json.loads((run_dir / "report" / "novelty.json").read_text())
    t, g = metrics["timings_s"], novelty["groups"]["generated"]
    dist = novelty.get("distribution", {})
    return {
        "task": task,
        "dim": json.loads((run_dir / "zoo" / "manifest.json").read_text())["dim"],
        "zoo_mib": (run_dir / "zoo" / "params.safetensors").stat().st_size / 2**20,
        "wall_s": wall,
        "seconds": {k: t.get(k) for k in ("collect", "train_autoencoder", "train_diffusion", "evaluate", "report")},
        "codec": stats["autoencoder"].get("kind", "conv"),
        "autoencoder_steps": stats["autoencoder"].get("steps", 0),
        "diffusion_steps": stats["diffusion"]["steps"],
        "autoencoder_s_per_step": t["train_autoencoder"] / max(stats["autoencoder"].get("steps", 0), 1),
        "diffusion_s_per_step": t["train_diffusion"] / max(stats["diffusion"]["steps"], 1),
        "peak_mib": dict(zip(STAGES, peaks)),
        "originals_mean": metrics["originals"]["test_acc"]["mean"],
        "generated_mean": metrics["generated"]["test_acc"]["mean"],
        "generated_minus_originals": metrics["comparisons"]["generated_minus_originals"],
        "oracle_within_1pt_of_best_original": metrics["generated"]["oracle_within_1pt_of_best_original"],
        "replica_share": g.get("replica_share"),
        "spread_ratio_median": dist.get("spread_ratio", {}).get("median"),
        "health": {c["check"]: c["status"] for c in novelty.get("health", [])},
    }


def print_real(rows: list[dict]) -> None:
    print("\n| task | parameters | zoo MiB | codec | wall s | collect s | autoencoder s/step (steps) | "
          "diffusion s/step (steps) | report s | peak MiB: collect / train / generate / evaluate + report | originals | generated - "
          "originals | within 1 pt | replicas | spread | health: not passed |")
    print("| --- " * 16 + "|")
    for r in rows:
        d, s, p = r["generated_minus_originals"], r["seconds"], r["peak_mib"]
        spread = r["spread_ratio_median"]
        ae = f"{r['autoencoder_s_per_step']:.3f} ({r['autoencoder_steps']})" if r["autoencoder_steps"] else "-"
        health = ", ".join(f"{k} {v}" for k, v in r.get("health", {}).items() if v != "pass") or "all pass"
        print(f"| {r['task']} | {r['dim']:,} | {r['zoo_mib']:.0f} | {r.get('codec', 'conv')} | {r['wall_s']:.0f} | "
              f"{s['collect']:.0f} | {ae} | {r['diffusion_s_per_step']:.3f} "
              f"({r['diffusion_steps']}) | {s['report']:.0f} | {' / '.join(f'{p[k]:.0f}' for k in STAGES)} | "
              f"{r['originals_mean']:.2f} | {d['estimate']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] | "
              f"{100 * r['oracle_within_1pt_of_best_original']:.0f}% | {100 * (r['replica_share'] or 0):.0f}% | "
              f"{'-' if spread is None else f'{spread:.2f}x'} | {health} |")


def _child(code: str, dim: int) -> dict:
    """The JSON line a measuring child prints, for a zoo of `dim` values."""
    result = subprocess.run([sys.executable, "-c", code, str(dim)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def slope(xs, ys) -> float:
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="synthetic zoos' numbers of parameters")
    p.add_argument("--real", nargs="+", metavar="TASK", help="whole-network tasks to run end to end instead")
    p.add_argument("--out", default="bench/results/scaling", help="where --real writes its runs and results.json")
    args = p.parse_args()
    if args.real:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        rows = []
        for task in args.real:
            rows.append(real_run(task, out))
            print(json.dumps(rows[-1]), flush=True)
        (out / "results.json").write_text(json.dumps(rows, indent=1))
        print_real(rows)
        return
    sizes = args.sizes
    rows = []
    for dim in sizes:
        conv, pca = _child(CHILD, dim), _child(PRINCIPAL_CHILD, dim)
        r = {**conv, **{k: v for k, v in pca.items() if k.startswith("pca_")}, "pca_latent": pca["latent"]}
        rows.append(r)
        print(f"D={dim:>10,}: token {r['token']}, latent {r['latent']}, autoencoder {r['autoencoder_s_per_step']:.3f} "
              f"s/step, diffusion {r['diffusion_s_per_step']:.3f} s/step, peak RSS {r['peak_rss_mib']:.0f} MiB "
              f"(zoo {r['zoo_mib']:.0f} MiB); principal components: fit {r['pca_fit_s']:.2f} s, diffusion "
              f"{r['pca_diffusion_s']:.3f} s/step, decode 64 {r['pca_decode_s']:.3f} s, peak RSS "
              f"{r['pca_peak_rss_mib']:.0f} MiB", flush=True)
    print("\n| parameters | token | latent (channels x length) | autoencoder s/step | diffusion s/step | peak RSS MiB | zoo MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['dim']:,} | {r['token']} | {r['latent'][0]} x {r['latent'][1]} | {r['autoencoder_s_per_step']:.3f} | "
              f"{r['diffusion_s_per_step']:.3f} | {r['peak_rss_mib']:.0f} | {r['zoo_mib']:.0f} |")
    print("\n| parameters | principal components: latent | fit s (one pass) | diffusion s/step | decode 64 s | "
          "peak RSS MiB (fit + training) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['dim']:,} | {r['pca_latent'][0]} x {r['pca_latent'][1]} | {r['pca_fit_s']:.2f} | "
              f"{r['pca_diffusion_s']:.3f} | {r['pca_decode_s']:.3f} | {r['pca_peak_rss_mib']:.0f} |")
    big = [r for r in rows if r["dim"] >= 100_000]
    if len(big) >= 2:
        dims = [r["dim"] for r in big]
        grow = lambda key: slope(dims, [r[key] for r in big])  # noqa: E731
        print(f"\ngrowth exponents from {dims[0]:,} to {dims[-1]:,} (slope of log cost over log D): autoencoder step "
              f"{grow('autoencoder_s_per_step'):.2f}, diffusion step {grow('diffusion_s_per_step'):.2f}, peak memory "
              f"{grow('peak_rss_mib'):.2f}; principal components: fit {grow('pca_fit_s'):.2f}, diffusion step "
              f"{grow('pca_diffusion_s'):.2f}, decode {grow('pca_decode_s'):.2f}, peak memory "
              f"{grow('pca_peak_rss_mib'):.2f}")


if __name__ == "__main__":
    main()
