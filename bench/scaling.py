"""How training cost grows with the number of generated parameters (synthetic zoos).

    python bench/scaling.py                  # about 3 minutes on 2 CPU cores

For D = 10k, 100k and 1M parameters, a synthetic zoo of 64 random vectors (timing only: the
values do not matter for cost) is trained with the tokenized autoencoder (token_size 64) and the
latent denoiser. Each size runs in a fresh process, which reports the seconds per training step
of each model and its peak resident memory; the growth exponent is the slope of log(cost) over
log(D).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

SIZES = (10_000, 100_000, 1_000_000)
TOKEN = 64
CHILD = r"""
import json, resource, sys, time
import torch, torch.nn.functional as F
from nndiff.autoencoder import Autoencoder, AutoencoderConfig
from nndiff.denoiser import Denoiser, DenoiserConfig
from nndiff.diffusion import DiffusionConfig, make_scheduler, training_loss

dim, token = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
x = torch.randn(64, dim)
ae = Autoencoder(dim, AutoencoderConfig(token_size=token))
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
out = {"dim": dim, "latent": list(z.shape[1:])}
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
    rows = []
    for dim in SIZES:
        result = subprocess.run([sys.executable, "-c", CHILD, str(dim), str(TOKEN)], capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"D={dim:>9,}: latent {r['latent']}, autoencoder {r['autoencoder_s_per_step']:.3f} s/step, "
              f"diffusion {r['diffusion_s_per_step']:.3f} s/step, peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
    dims = [r["dim"] for r in rows]
    print("\n| parameters | latent (channels x length) | autoencoder s/step | diffusion s/step | peak RSS MiB |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['dim']:,} | {r['latent'][0]} x {r['latent'][1]} | {r['autoencoder_s_per_step']:.3f} | "
              f"{r['diffusion_s_per_step']:.3f} | {r['peak_rss_mib']:.0f} |")
    total = [r["autoencoder_s_per_step"] + r["diffusion_s_per_step"] for r in rows]
    print(f"\ngrowth exponents (slope of log cost over log D): autoencoder step "
          f"{slope(dims, [r['autoencoder_s_per_step'] for r in rows]):.2f}, diffusion step "
          f"{slope(dims, [r['diffusion_s_per_step'] for r in rows]):.2f}, both {slope(dims, total):.2f}, "
          f"peak memory {slope(dims, [r['peak_rss_mib'] for r in rows]):.2f}")


if __name__ == "__main__":
    main()
