"""`nndiff doctor`: copies in the zoo and an under-fit autoencoder are failed with their fix; a
generator that learned its zoo is not."""

import json

from nndiff.analysis.doctor import _grade
from nndiff.cli.main import main


def doctor(capsys, path):
    code = main(["--quiet", "doctor", "--run", str(path)])
    return code, capsys.readouterr().out


def status(out: str, check: str) -> str:
    return next(line.split()[0] for line in out.splitlines() if f"  {check}  " in line)


def test_grades():
    assert [_grade(v, 1, 2) for v in (0.5, 1.5, 2.5, float("nan"))] == ["pass", "warn", "fail", "fail"]
    assert [_grade(v, 0.3, 0.1, higher_is_worse=False) for v in (1.0, 0.2, 0.05)] == ["pass", "warn", "fail"]


def test_a_zoo_of_copies_fails_with_a_larger_lr_as_its_fix(tmp_path, capsys):
    zoo = tmp_path / "zoo"
    assert main(["--quiet", "collect", "--task", "digits-cnn", "-k", "12", "--burn-in", "10", "--heldout", "4",
                 "--lr", "1e-4", "--out", str(zoo)]) == 0
    code, out = doctor(capsys, zoo)
    assert code == 1
    assert status(out, "zoo diversity") == "FAIL"
    assert "near-copies" in out and "larger --lr (e.g. 0.001 instead of 0.0001)" in out


def test_an_underfit_autoencoder_fails_with_more_steps_as_its_fix(tiny_run, tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["--quiet", "train", "--zoo", str(tiny_run / "zoo"), "--out", str(run), "--ae-steps", "10",
                 "--diffusion-steps", "10"]) == 0
    assert main(["--quiet", "generate", "--run", str(run), "-n", "4", "--steps", "5"]) == 0
    code, out = doctor(capsys, run)
    assert code == 1
    assert status(out, "autoencoder") == "FAIL" and "--ae-steps 1000" in out
    assert status(out, "generator spread") == "FAIL"  # it collapsed onto the mean: the fix is the autoencoder again
    assert status(out, "zoo diversity") == "PASS"  # the zoo itself is fine


def test_a_trained_run_has_no_failing_check_and_the_report_carries_them(trained_run, capsys):
    code, out = doctor(capsys, trained_run)
    assert code == 0, out
    for check in ("autoencoder", "generator spread", "replicas", "non-finite models", "generated accuracy"):
        assert status(out, check) == "PASS", out
    health = json.loads((trained_run / "report" / "novelty.json").read_text())["health"]
    assert {c["check"]: c["status"] for c in health}["autoencoder"] == "pass"
    assert "## Health check" in (trained_run / "report" / "report.md").read_text()


def test_same_mistakes_with_distinct_parameters_is_a_warning_not_a_failure(tiny_run, capsys, monkeypatch):
    """A model robust to its own noise makes the same few validation mistakes at every snapshot while
    its parameters still differ: that is worth a warning, not the verdict 'copies'."""
    import nndiff.analysis.doctor

    monkeypatch.setattr(nndiff.analysis.doctor, "mean_offdiagonal", lambda m: 1.0)  # every snapshot makes the same mistakes
    code, out = doctor(capsys, tiny_run / "zoo")
    assert code == 0 and status(out, "zoo diversity") == "WARN", out


def test_the_autoencoder_check_a_few_rows_at_a_time_says_what_it_says_whole(tiny_run, monkeypatch):
    """The check goes over its rows in chunks (a whole network's rows are large): its share of the
    variation missed and its accuracy loss must not depend on the chunk size, here the whole set at
    once, one row at a time, and chunks that leave a remainder."""
    import nndiff.analysis.doctor
    import nndiff.pipeline.stages

    results = []
    for chunk in (10**6, 1, 5):
        monkeypatch.setattr(nndiff.analysis.doctor, "RECONSTRUCT_CHUNK", chunk)
        checks = nndiff.pipeline.stages.doctor_run(tiny_run, "cpu")
        results.append(next(c for c in checks if c.check == "autoencoder"))
    assert len({(c.status, c.measured) for c in results}) == 1, results
    assert "% of the snapshots' variation not reproduced" in results[0].measured
