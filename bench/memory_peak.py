"""Where a command's memory peaks: run an nndiff command in this process while a thread samples
the resident set every few milliseconds, and print the highest samples with the main thread's
Python stack at that moment (nndiff's own frames).

    python bench/memory_peak.py report --run runs/mlp1m

The stack is sampled, not traced: a peak shorter than the interval can be missed, and the line
shown is the one running when the sample was taken.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str]) -> int:
    from nndiff.cli.main import main as nndiff

    main_thread = threading.main_thread().ident
    samples: list[tuple[float, str]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            frame = sys._current_frames().get(main_thread)
            if frame is None:
                continue
            stack = [f for f in traceback.extract_stack(frame) if "/nndiff/" in f.filename]
            where = " > ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in stack[-4:])
            samples.append((rss_mib(), where))

    thread = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    thread.start()
    code = nndiff(argv)
    done.set()
    thread.join()
    print(f"\n{time.perf_counter() - start:.0f} s, {len(samples)} samples; where the peak so far grew by 100 MiB:")
    high = 0.0
    for mib, where in samples:
        if mib > high + 100:
            high = mib
            print(f"{mib:8.0f} MiB  {where}")
    print("the highest samples by place:")
    best: dict[str, float] = {}
    for mib, where in samples:
        best[where] = max(best.get(where, 0.0), mib)
    for where, mib in sorted(best.items(), key=lambda kv: -kv[1])[:12]:
        print(f"{mib:8.0f} MiB  {where}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
