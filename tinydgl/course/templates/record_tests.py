"""Run pytest and record each test's outcome and its task markers into the JSON file named by argv[1].

`tinydgl.course.grading.run_tests` runs this text with `python -c` in the graded tree's Python, so it depends
on nothing of that tree (not even tinydgl). The rest of argv goes to pytest.
"""

import json
import sys

import pytest


class Recorder:
    def __init__(self):
        self.tests, self.errors = {}, []

    def pytest_collection_finish(self, session):
        for item in session.items:
            tasks = sorted({m.name for m in item.iter_markers() if m.name.startswith("task_")})
            self.tests[item.nodeid] = {"tasks": tasks, "outcome": "not run", "message": ""}

    def pytest_collectreport(self, report):
        if report.failed:
            self.errors.append(f"{report.nodeid}: {str(report.longrepr).strip().splitlines()[-1]}")

    def pytest_runtest_logreport(self, report):
        entry = self.tests.setdefault(report.nodeid, {"tasks": [], "outcome": "not run", "message": ""})
        if report.failed and entry["outcome"] != "failed":
            crash = getattr(report.longrepr, "reprcrash", None)
            entry["outcome"] = "failed"
            entry["message"] = crash.message if crash is not None else str(report.longrepr).strip().splitlines()[-1]
        elif report.skipped and entry["outcome"] == "not run":
            entry["outcome"] = "skipped"
        elif report.when == "call" and report.passed and entry["outcome"] != "failed":
            entry["outcome"] = "passed"


recorder = Recorder()
status = pytest.main(sys.argv[2:], plugins=[recorder])
with open(sys.argv[1], "w") as f:
    json.dump({"status": int(status), "tests": recorder.tests, "collection_errors": recorder.errors}, f)
