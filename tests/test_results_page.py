"""docs/results.md is generated from the recorded runs: it must match what the generator writes from them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_results_page_is_generated_from_the_records():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "make_results.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
