"""How long each lesson computes in the cpu profile: each run alone under nbval, as `make test` runs the lessons.

    .venv/bin/python benchmarks/lesson_times.py            # every lesson, one after another (~10 min on 2 cores)
    .venv/bin/python benchmarks/lesson_times.py 03_ddim    # some

Writes benchmarks/lesson_times.json and each lesson's "**Time:** about N minutes" line (rounded up; .py, then the
paired .ipynb), which tests/test_prose.py holds to the JSON. Run it on a quiet machine: two heavy jobs at once on
2 cores slow each other down many times over. Latents and Inception features cached by an earlier run are reused,
as a learner's second run would reuse them.
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

from diffedu import env  # noqa: E402

OUT = ROOT / "benchmarks" / "lesson_times.json"
TIME = re.compile(r"(\*\*Time:\*\* about )\d+ minutes?( of computing in the `cpu` profile\.)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("lessons", nargs="*", help="lesson names (default: all)")
    args = p.parse_args()
    scripts = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.py"))
    chosen = [s for s in scripts if not args.lessons or s.stem in args.lessons]
    record = json.loads(OUT.read_text()) if OUT.exists() else {"lessons": {}}
    for script in chosen:
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "--nbval-lax",
                "-p",
                "no:cacheprovider",
                str(script.with_suffix(".ipynb")),
            ],
            check=True,
            cwd=ROOT,
            env={**os.environ, "DIFFEDU_PROFILE": "cpu"},
        )
        seconds = time.perf_counter() - start
        record["lessons"][script.stem] = round(seconds, 1)
        minutes = max(1, math.ceil(seconds / 60))
        text = script.read_text()
        script.write_text(TIME.sub(rf"\g<1>{minutes} minute{'s' if minutes > 1 else ''}\g<2>", text))
        subprocess.run([sys.executable, "-m", "jupytext", "--sync", "--quiet", str(script)], check=True)
        print(f"{script.stem}: {seconds:.0f} s, about {minutes} min", flush=True)
    record.update(profile="cpu", machine=env.machine(torch.device("cpu")), date=time.strftime("%Y-%m-%d"))
    record["lessons"] = dict(sorted(record["lessons"].items()))
    OUT.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
