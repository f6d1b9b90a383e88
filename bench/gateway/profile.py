"""Where our gateway's time goes at peak: py-spy samples the process during the peak run
(``--profile``) and the run prints the functions that held the CPU longest, by their own
time and with what they called, as shares of all samples.

py-spy is installed on first use into ``.cic/bench-envs/py-spy`` (git-ignored), like the
peers. Sampling costs the machine a little CPU of its own, so a profiled run's figures
are not the ones to report; its shares are what to read.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .peers import ensure_env

__all__ = ["Profile", "profile_lines", "sampled", "top_frames"]

PY_SPY = "py-spy==0.4.3"


class Profile:
    """The collapsed stacks py-spy wrote, once it is done."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def stacks(self) -> Counter[tuple[str, ...]]:
        counts: Counter[tuple[str, ...]] = Counter()
        if not self.path.is_file():
            return counts
        for line in self.path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                counts[tuple(stack.split(";"))] += int(count)
        return counts


@contextmanager
def sampled(pid: int, seconds: float, out: Path) -> Iterator[Profile]:
    """py-spy over ``pid`` (and its children) for ``seconds`` while the block runs."""
    program = ensure_env("py-spy", PY_SPY, "py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    argv = [str(program), "record", "--pid", str(pid), "--subprocesses", "--nonblocking",
            "--rate", "200", "--duration", str(max(1, round(seconds))), "--format", "raw",
            "--output", str(out)]  # fmt: skip
    recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield Profile(out)
    finally:
        try:
            recorder.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            recorder.kill()


def _frame(raw: str) -> str:
    """``function (path/to/module.py:line)`` as ``module.function``."""
    name, _, where = raw.partition(" (")
    module = where.split(":")[0].rsplit("/", 1)[-1].removesuffix(".py")
    return f"{module}.{name}" if module else name


def top_frames(stacks: Counter[tuple[str, ...]], n: int = 15) -> list[tuple[str, float, float]]:
    """The ``n`` frames with the most samples of their own: (frame, own share, share with
    what it called), shares of all samples; idle waits in the event loop excluded."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for stack, count in stacks.items():
        frames = [_frame(f) for f in stack if not f.startswith("process ")]
        idle = frames and frames[-1].endswith((".select", ".poll", ".run_forever"))
        if not frames or (idle and len(frames) <= 3):
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    if not samples:
        return []
    return [(f, c / samples, total[f] / samples) for f, c in own.most_common(n)]


def profile_lines(stacks: Counter[tuple[str, ...]]) -> list[str]:
    top = top_frames(stacks)
    if not top:
        return ["- profile: no samples (is py-spy allowed to read the process?)"]
    lines = ["", "| our gateway at peak: frame | own | with callees |", "|---|---:|---:|"]
    lines += [f"| `{frame}` | {own:.1%} | {total:.1%} |" for frame, own, total in top]
    return lines
