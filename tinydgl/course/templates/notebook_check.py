import os
import subprocess
import sys

ROOT = os.path.abspath("..")  # the student copy: this notebook lives in its assignments/ folder


def check(marker):
    """Run the tests with this pytest marker (one task, or a whole assignment) and show pytest's report."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            marker,
            "tests/test_assignments_tasks.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    print((done.stdout + done.stderr)[-6000:])
