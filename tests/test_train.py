import torch
from torch import nn

from nndiff.training.loops import cosine_lr, update_ema


def test_ema_update_is_a_convex_combination():
    ema, model = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.detach().clone() for p in ema.parameters()]
    update_ema(ema, model, decay=0.9)
    for e, b, m in zip(ema.parameters(), before, model.parameters()):
        torch.testing.assert_close(e, 0.9 * b + 0.1 * m)


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    assert cosine_lr(0, 1000, 1.0, warmup=100) == 0.01
    assert cosine_lr(99, 1000, 1.0, warmup=100) == 1.0
    assert abs(cosine_lr(1000, 1000, 1.0, warmup=100) - 0.1) < 1e-12
    lrs = [cosine_lr(s, 1000, 1.0, warmup=100) for s in range(100, 1000)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
