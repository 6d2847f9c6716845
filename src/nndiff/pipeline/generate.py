"""`nndiff generate`: a new set of generated models in place of the run's, and what goes with it."""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

from nndiff.errors import NndiffError
from nndiff.generator.generated import GENERATED, SampleConfig, check_generate_args, write_generated
from nndiff.generator.sampler import ParamGenerator
from nndiff.params.rows import fingerprint, finite_rows
from nndiff.pipeline.rundir import _locked_run, generated_info, load_run_zoo, read_run_config, training_id
from nndiff.runtime.device import resolve_device


@_locked_run
def generate_run(
    run_dir: str | Path,
    sample: SampleConfig | None = None,
    seed: int = 0,
    device: str = "auto",
    *,
    keep_report: bool = False,
    log=print,
) -> Path:
    """Sample models into run_dir/generated as `sample` says (aimed at validation accuracy
    `sample.target_acc` when the generator is conditional and a target is given). The evaluation
    and the report of the set it replaces go with it (`keep_report`: report/ stays); `log` hears
    what was replaced. A set of only non-finite models replaces nothing."""
    s = sample or SampleConfig()
    check_generate_args(s.n, seed, s.sampler, s.steps, target_acc=s.target_acc, guidance=s.guidance)
    run_dir = Path(run_dir)
    zoo_dir, config = read_run_config(run_dir)
    if (zoo_dir / "manifest.json").is_file():  # a run moved without its zoo still samples
        load_run_zoo(run_dir, zoo_dir)  # refused when the zoo changed since training (metrics.json stays)
    generator = ParamGenerator.load(run_dir, config, resolve_device(device))
    t0 = time.perf_counter()
    vectors = generator.sample(s.n, seed, s.sampler, s.steps, target_acc=s.target_acc, guidance=s.guidance)
    seconds = time.perf_counter() - t0
    bad = int((~finite_rows(vectors)).sum())
    if bad == s.n:
        raise NndiffError(
            f"all {bad} sampled models contain NaN or Inf, so nothing was written ({run_dir / GENERATED} is as it "
            f"was); see `nndiff doctor --run {run_dir}` and retrain with --fresh"
        )
    if bad:
        warnings.warn(f"{bad} of {s.n} sampled models ({100 * bad / s.n:.0f}%) contain NaN or Inf; they count as "
                      f"failures (accuracy 0) in every evaluation; see `nndiff doctor --run {run_dir}`")
    old = generated_info(run_dir) if (run_dir / GENERATED).is_dir() else None
    aim = {"target_acc": s.target_acc, "guidance": s.guidance} if s.target_acc is not None else {}
    info = {"count": s.n, "seed": seed, "sampler": s.sampler, "steps": s.steps, **aim, "seconds": round(seconds, 3)}
    stage = training_id(run_dir)
    info = {**info, "fingerprint": fingerprint(vectors), **({"generator": stage} if stage else {})}
    out = write_generated(
        run_dir, vectors, generator.layout, seed, sampler=s.sampler, steps=s.steps, extra=aim, info=info
    )
    # The evaluation and the report described the previous models: remove them rather than leave
    # numbers beside models they are not about (report/ stays when asked, and says which set it is about).
    removed = [name for name in ("metrics.json", "report")[: 1 if keep_report else 2] if (run_dir / name).exists()]
    (run_dir / "metrics.json").unlink(missing_ok=True)
    if not keep_report:
        shutil.rmtree(run_dir / "report", ignore_errors=True)
    if old is not None:
        what = f"{old.get('count', '?')} models (seed {old.get('seed', '?')}, {old.get('steps', '?')} steps)"
        gone = f"; removed {' and '.join(removed)}, which described them" if removed else ""
        kept = (
            f"; report/ still describes them (`nndiff report --run {run_dir}` rewrites it)"
            if keep_report and (run_dir / "report").exists()
            else ""
        )
        log(f"replaced the {what} in {out} with {s.n}{gone}{kept}")
    return out


def reusable_set(run_dir: Path, sample: SampleConfig, seed: int) -> bool:
    """Whether generated/ holds the set `generate` would sample now: same settings, same generator."""
    info = generated_info(run_dir) if (run_dir / GENERATED / "info.json").is_file() else {}
    wanted = {
        "count": sample.n,
        "seed": seed,
        "sampler": sample.sampler,
        "steps": sample.steps,
        "target_acc": sample.target_acc,
        "guidance": sample.guidance if sample.target_acc is not None else None,
    }
    same = all(info.get(k) == v for k, v in wanted.items()) and info.get("generator") is not None
    return same and info["generator"] == training_id(run_dir)
