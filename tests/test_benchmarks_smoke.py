"""Every script in benchmarks/ runs end to end in its --smoke mode (tiny sizes, seconds), so none can rot
behind the README figure it backs. The numbers of a smoke run mean nothing and are not checked."""
import os
import subprocess
import sys

import pytest

from conftest import REPO

BENCHMARKS = REPO / "benchmarks"
# Scripts, not the helpers they import (percore, _smoke): a script is what has a __main__ block.
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if 'if __name__ == "__main__"' in p.read_text())


def test_every_benchmark_has_a_smoke_mode():
    assert len(SCRIPTS) >= 20
    missing = [name for name in SCRIPTS if "smoke(" not in (text := (BENCHMARKS / name).read_text())
               and '"--smoke"' not in text]
    assert not missing, f"benchmarks without --smoke: {missing}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_smoke_run(script, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--smoke"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{script} --smoke failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
