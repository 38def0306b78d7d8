"""The suite on the oldest and the newest supported Python: `nox` (pip install nox).

CI (.ci/run) runs on the machine's Python (3.11 here) and checks 3.10 statically (tests/test_habits.py,
vermin); this file runs the whole suite on 3.10 and 3.13 wherever those interpreters are installed
(`nox -s tests-3.10`, `nox -s tests-3.13`; nox skips a session whose interpreter it cannot find).
"""

import nox

nox.options.error_on_missing_interpreters = False


@nox.session(python=["3.10", "3.13"])
def tests(session):
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)
