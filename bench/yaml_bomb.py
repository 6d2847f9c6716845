"""How long and how much memory refusing a YAML "billion laughs" takes, in `--config` and in a
run's config.yaml (each measured in a fresh process: its time from reading the file to the refusal,
and how much its peak resident memory grew).

    python bench/yaml_bomb.py        # prints a markdown table for bench/README.md
"""

import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

PROBE = """
import resource, sys, time
from nndiff.errors import NndiffError
from nndiff.io.files import load_yaml
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
try:
    load_yaml(sys.argv[1])
    print("accepted")
except NndiffError:
    print("refused")
print(time.perf_counter() - t0)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024, after / 1024)
"""


def bomb(levels: int) -> str:
    """Nine aliases of nine aliases, `levels` deep: 9^levels values once expanded."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    names = "abcdefghijklmnop"[:levels]
    for prev, name in zip(names, names[1:]):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for levels in (6, 9, 12):
            path = Path(d) / f"bomb{levels}.yaml"
            path.write_text(bomb(levels))
            out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True)
            verdict, seconds, grown, peak = out.stdout.split()
            rows.append(f"| 9^{levels} = {9 ** levels:,} | {path.stat().st_size} B | {verdict} | "
                        f"{float(seconds) * 1000:.1f} ms | {float(grown):.1f} MB | {float(peak):.0f} MB |")
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, {date.today()}\n")
    print("| values once expanded | file | result | time to refuse | memory grown | process peak (imports included) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
