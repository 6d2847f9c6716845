"""Is the variation the conv autoencoder misses signal or SGD noise? (bench/whole_networks.md)

    nndiff collect --task mnist1d-mlp --out /tmp/exp35/mnist1d-mlp/zoo
    python bench/check_the_check.py /tmp/exp35/mnist1d-mlp/zoo

The conv autoencoder at its automatic budget on mnist1d-mlp's default zoo; every third snapshot, its
reconstruction, the next snapshot (10 SGD steps on) and the zoo's mean, compared by validation
accuracy and by the share of validation predictions on which they differ from the snapshot."""
import sys
import torch
from nndiff.zoo.format import Zoo
from nndiff.generator.config import TrainConfig
from nndiff.training.fit import fit
from nndiff.evaluation.engine import evaluate_params
from nndiff.analysis.distribution import variation_missed, unexplained_share
torch.set_num_threads(2)
zoo = Zoo.load(sys.argv[1])
task = zoo.make_task(); model = zoo.model(task); val = task.splits()["val"]
cfg = TrainConfig(); cfg.autoencoder.kind = "conv"; cfg.diffusion.steps = 10
gen, stats = fit(zoo, cfg, progress=False)
print("ae steps", stats["autoencoder"]["steps"], stats["autoencoder"]["curve"][-1])
rows = torch.arange(0, 199, 3)
x = zoo.params[rows]
xn = gen.normalizer(x)
rn = gen.autoencoder.reconstruct(xn)
missed, spread = variation_missed(xn, rn, xn.mean(0))
r = gen.normalizer.inverse(rn)
nxt = zoo.params[rows + 1]
ev = lambda p: evaluate_params(task, model, zoo.layout, p, splits={"val": val}, progress=False)["val"]
ex, er, en = ev(x), ev(r), ev(nxt)
y = val.y
def dis(a, b): return float((a.predictions != b.predictions).float().mean() * 100)
print("missed share (around the rows' mean)", round(unexplained_share(missed, spread), 3))
print("val acc snapshots", float(ex.accuracy.mean()), "reconstructions", float(er.accuracy.mean()), "next snapshots", float(en.accuracy.mean()))
print("disagreement % snapshot vs its reconstruction", dis(ex, er))
print("disagreement % snapshot vs the next snapshot (10 SGD steps)", dis(ex, en))
far = zoo.params[(rows + 20).clamp_max(199)]
print("disagreement % snapshot vs 20 snapshots later (200 steps)", dis(ex, ev(far)))
mean = zoo.params.mean(0, keepdim=True).expand(len(rows), -1)
print("disagreement % snapshot vs the zoo mean", dis(ex, ev(mean.contiguous())))
