"""How training cost grows with the number of generated parameters (synthetic zoos).

    python bench/scaling.py                          # 10k to 10M, about 10 minutes on 2 CPU cores
    python bench/scaling.py --sizes 100000 1000000   # some sizes only

For each D a synthetic zoo of 64 random vectors (timing only: the values do not matter for cost) is
trained with the autoencoder as the product configures it (automatic token size: about 1,024
tokens) and the latent denoiser, batch 64. Each size runs in a fresh process, which reports the
seconds per training step of each model and its peak resident memory against the zoo's own size
(64 x D float32); the growth exponents are slopes of log(cost) over log(D) from 100k up.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

SIZES = (10_000, 100_000, 1_000_000, 10_000_000)
CHILD = r"""
import json, resource, sys, time
import torch, torch.nn.functional as F
from nndiff.autoencoder import Autoencoder, AutoencoderConfig
from nndiff.denoiser import Denoiser, DenoiserConfig
from nndiff.diffusion import DiffusionConfig, make_scheduler, training_loss

dim = int(sys.argv[1])
torch.manual_seed(0)
x = torch.randn(64, dim)
ae = Autoencoder(dim, AutoencoderConfig())
opt = torch.optim.AdamW(ae.parameters(), 1e-3)
def ae_step():
    idx = torch.randint(64, (64,))
    loss = F.mse_loss(ae(x[idx]), x[idx]); opt.zero_grad(); loss.backward(); opt.step()
with torch.no_grad():
    z = ae.encode(x)
den = Denoiser(tuple(z.shape[1:]), DenoiserConfig())
dopt = torch.optim.AdamW(den.parameters(), 1e-3)
sched = make_scheduler(DiffusionConfig())
def diff_step():
    idx = torch.randint(64, (64,))
    loss = training_loss(den, z[idx], sched); dopt.zero_grad(); loss.backward(); dopt.step()
out = {"dim": dim, "token": ae.token, "latent": list(z.shape[1:]), "zoo_mib": x.numel() * 4 / 2**20}
for name, step in (("autoencoder", ae_step), ("diffusion", diff_step)):
    for _ in range(2):
        step()  # warm-up
    n, t0 = 0, time.perf_counter()
    while n < 5 or time.perf_counter() - t0 < 3:
        step(); n += 1
    out[name + "_s_per_step"] = (time.perf_counter() - t0) / n
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def slope(xs, ys) -> float:
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    sizes = p.parse_args().sizes
    rows = []
    for dim in sizes:
        result = subprocess.run([sys.executable, "-c", CHILD, str(dim)], capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"D={dim:>10,}: token {r['token']}, latent {r['latent']}, autoencoder {r['autoencoder_s_per_step']:.3f} "
              f"s/step, diffusion {r['diffusion_s_per_step']:.3f} s/step, peak RSS {r['peak_rss_mib']:.0f} MiB "
              f"(zoo {r['zoo_mib']:.0f} MiB)", flush=True)
    print("\n| parameters | token | latent (channels x length) | autoencoder s/step | diffusion s/step | peak RSS MiB | zoo MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['dim']:,} | {r['token']} | {r['latent'][0]} x {r['latent'][1]} | {r['autoencoder_s_per_step']:.3f} | "
              f"{r['diffusion_s_per_step']:.3f} | {r['peak_rss_mib']:.0f} | {r['zoo_mib']:.0f} |")
    big = [r for r in rows if r["dim"] >= 100_000]
    if len(big) >= 2:
        dims = [r["dim"] for r in big]
        print(f"\ngrowth exponents from {dims[0]:,} to {dims[-1]:,} (slope of log cost over log D): autoencoder step "
              f"{slope(dims, [r['autoencoder_s_per_step'] for r in big]):.2f}, diffusion step "
              f"{slope(dims, [r['diffusion_s_per_step'] for r in big]):.2f}, peak memory "
              f"{slope(dims, [r['peak_rss_mib'] for r in big]):.2f}")


if __name__ == "__main__":
    main()
