"""Run every benchmark script and write ``benchmarks/results.md``.

Runs each ``benchmarks/*.py`` except this file, ``gpu.py`` (for a GPU machine) and private
helpers (``_*.py``) as a subprocess, one after the other, collects their ``RATIO name=value``
lines and tables, and writes the figures with the machine, the date and the command.
Run: ``python benchmarks/run_all.py [--smoke] [--only NAME ...]``.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = {"run_all.py", "gpu.py"}


def scripts(only: list[str] | None) -> list[Path]:
    found = sorted(HERE.glob("*.py"))
    return [p for p in found if p.name not in SKIP and not p.name.startswith("_")
            and (not only or p.stem in only)]


def run(script: Path, smoke: bool, timeout: float) -> tuple[int | str, float, str]:
    cmd = [sys.executable, str(script)] + (["--smoke"] if smoke else [])
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent)
        code, out = done.returncode, done.stdout + (done.stderr[-2000:] if done.returncode else "")
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout or ""
        code = "timeout"
        out = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
    return code, time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="pass --smoke to every script")
    parser.add_argument("--only", nargs="*", help="script names (without .py) to run")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per script")
    parser.add_argument("--output", type=Path, default=HERE / "results.md")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from _timing import machine

    command = "python " + " ".join([str(Path(sys.argv[0]).as_posix())] + sys.argv[1:])
    ratios, sections = [], []
    for script in scripts(args.only):
        print(f"== {script.name}", flush=True)
        code, seconds, out = run(script, args.smoke, args.timeout)
        found = [line.split(None, 1)[1] for line in out.splitlines() if line.startswith("RATIO ")]
        for item in found or ["(no RATIO line)"]:
            ratios.append(f"| {script.stem} | {item} | {code} | {seconds:.0f} |")
            print(f"   {item} (exit {code}, {seconds:.0f} s)", flush=True)
        sections.append(f"## {script.name}\n\n```\n{out.strip()}\n```\n")
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    text = "\n".join([
        "# Benchmark results", "",
        f"- date: {now}", f"- machine: {machine()}", f"- command: `{command}`",
        f"- mode: {'smoke (tiny models, few repeats)' if args.smoke else 'full'}", "",
        "| script | RATIO | exit | seconds |", "|---|---|---|---|", *ratios, "", *sections,
    ])
    args.output.write_text(text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
