"""``scripts/demo``: the §13 use case with the real CLIs as processes, against a
real server process; it must succeed, and fail loudly when a step fails."""

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "scripts" / "demo.py"


def test_demo_runs_the_use_case_end_to_end():
    done = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for step in ("registered alice@demo.test", "published 3 KeyInit(s)", '"pfkeys"',
                 "published 2 KeyInit(s) (0 fallback) under the new key",
                 "recovered alice@demo.test at position 3 with a new signing key (msgcount 2)",
                 "log:        witnessed up to size 2 by witness.test/witness (quorum 1)",
                 "new signing key", "last synced",
                 "DEMO OK"):
        assert step in done.stdout, done.stdout


def test_demo_fails_when_a_step_fails(tmp_path):
    """The demo runs the tools beside its interpreter: run it from a folder whose
    keyclient always fails."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("keyserver", "gunicorn"):
        (bin_dir / name).symlink_to(Path(sys.executable).parent / name)
    (bin_dir / "keyclient").write_text("#!/bin/sh\necho 'Error: broken on purpose' >&2\nexit 1\n")
    (bin_dir / "keyclient").chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    done = subprocess.run([str(bin_dir / "python"), str(DEMO)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert "DEMO FAILED" in done.stdout and "broken on purpose" in done.stdout
