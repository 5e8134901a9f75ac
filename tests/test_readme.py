"""The README's two set-up commands are the ones CI and newcomers run."""
import os
import re
import shlex
import subprocess
import sys

from conftest import REPO

README = (REPO / "README.md").read_text()


def setup_commands():
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", section, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = setup_commands()
    assert len(commands) == 2, commands
    main_job, tests = commands
    assert main_job.startswith("pip install") and "python -m mmder_tf.finetune --strategy cfas" in main_job
    assert tests.startswith("pip install") and "pytest" in tests
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci, "the README's test command and .ci/run differ"


def test_readme_main_job_runs_end_to_end(tmp_path):
    """The main job's own command, with one epoch of one fold on a smaller generated set."""
    main_job = setup_commands()[0]
    command = shlex.split(main_job.split("&&", 1)[1])
    assert command[:3] == ["python", "-m", "mmder_tf.finetune"]
    command = [sys.executable] + command[1:] + [
        "--epochs", "1", "--folds", "1", "--out", str(tmp_path / "run"), "--verbose", "0",
        "--synthetic-actors", "4", "--synthetic-clips", "1", "--image-size", "32"]
    env = dict(os.environ, MMDER_CACHE=str(tmp_path / "cache"))
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "WAR" in result.stdout and "UAR" in result.stdout
    assert (tmp_path / "run" / "results.md").is_file()
    assert (tmp_path / "run" / "results.json").is_file()
