#!/usr/bin/env bash
# Gradescope runs this once, as root, in /autograder/source, when it builds the autograder's image (with
# network access). It installs Python and the packages of requirements.txt into /autograder/venv; the course
# itself (course/: the student copy as handed out, with the instructor's tests) needs no install, as
# run_autograder puts it on PYTHONPATH.
set -euo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! command -v python3 >/dev/null || ! python3 -m venv --help >/dev/null 2>&1; then
    apt-get update && apt-get install -y python3 python3-pip python3-venv
fi
python3 -m venv "$ROOT/venv"
"$ROOT/venv/bin/python" -m pip install --upgrade pip
"$ROOT/venv/bin/python" -m pip install -r "$HERE/requirements.txt"
chmod +x "$HERE/run_autograder"
