"""A training loop's progress: its whole state saved every CHECKPOINT_EVERY steps, and restored."""

from __future__ import annotations

from nndiff.io.checkpoint import rng_state, set_rng_state
from nndiff.runtime.distributed import all_gather, rank
from nndiff.runtime.stage import Stage

CHECKPOINT_EVERY = 250  # training steps between progress checkpoints


def save_progress(stage: Stage, name, step, total, *, model, opt, gen, loss, curve, ema=None, force=False) -> None:
    """Save the loop's whole state every CHECKPOINT_EVERY steps, at the end, and where it stops early (`force`).

    Under torchrun the weights are the same on every rank but the random streams are not: every
    rank's RNG state is gathered into the one checkpoint rank 0 writes.
    """

    def state() -> dict:
        saved = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "rng": all_gather(rng_state(gen)),
            "step": step,
            "loss": loss,
            "curve": curve,
        }
        return {**saved, "ema": ema.state_dict()} if ema is not None else saved

    stage.checkpoint(name, step, total, state, every=CHECKPOINT_EVERY, force=force)


def resume(stage: Stage, name, model, opt, *, gen, ema=None) -> tuple[int, float | None, list[dict]]:
    """Restore a loop's state from its checkpoint (rank 0 reads it and hands it to the other ranks);
    returns (first step to run, last loss, the curve so far)."""
    saved = stage.load(name)
    if saved is None:
        return 0, None, []
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    if ema is not None:
        ema.load_state_dict(saved["ema"])
    set_rng_state(gen, saved["rng"][rank()])
    return saved["step"], saved["loss"], list(saved.get("curve", []))
