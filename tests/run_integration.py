#!/usr/bin/env python3
"""Runs px's integration suites (tests/integration/test_*.py) in parallel and
prints one line per test, the slowest tests, and a closing 'N passed, N failed'.

  tests/run_integration.py [PATTERN] [-j JOBS]

The unit of work is a test class: its tests share what setUpClass started, so
they run in order in one process; classes run side by side, JOBS at a time
(PX_TEST_JOBS, default twice the cores). Every class is independent by
construction: its own data directories, and ports chosen at run time from a
block of its own (PX_TEST_SLOT, pxtest.free_port), outside the kernel's
ephemeral range. Classes start longest first, by the times of the last run in
this build directory (test-times.json), else tests/integration/times.json.
A class that runs past PX_TEST_UNIT_TIMEOUT seconds (default 1200) is killed
and counted as failed. Nothing is retried."""
import json
import os
import re
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
INTEGRATION = os.path.join(HERE, "integration")
sys.path.insert(0, INTEGRATION)
RESULT_MARK = "@@px-unit-result "


class Result(unittest.TextTestResult):
    """One line per test with its time; the times are reported to the parent."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.times = {}

    def startTest(self, test):
        self._t0 = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        self.times[test.id()] = time.monotonic() - self._t0
        super().stopTest(test)


def discover(pattern):
    suite = unittest.defaultTestLoader.discover(INTEGRATION, pattern=pattern, top_level_dir=INTEGRATION)
    units = {}  # "module.Class" -> [test ids], in order

    def walk(s):
        for t in s:
            if isinstance(t, unittest.TestSuite):
                walk(t)
            else:
                tid = t.id()
                if tid.startswith("unittest.loader."):  # a module that failed to import
                    units.setdefault(tid, []).append(tid)
                    continue
                units.setdefault(tid.rsplit(".", 1)[0], []).append(tid)
    walk(suite)
    return units


def run_child(unit):
    """In a child process: run one class, print its lines, then one result line for the parent."""
    if unit.startswith("unittest.loader."):
        suite = unittest.defaultTestLoader.discover(INTEGRATION, pattern=unit.split(".")[-1] + ".py",
                                                    top_level_dir=INTEGRATION)
    else:
        suite = unittest.defaultTestLoader.loadTestsFromName(unit)
    runner = unittest.TextTestRunner(verbosity=2, resultclass=Result, stream=sys.stdout)
    res = runner.run(suite)
    failed = len(res.failures) + len(res.errors) + len(res.unexpectedSuccesses)
    passed = res.testsRun - failed - len(res.skipped)
    sys.stdout.flush()
    print(RESULT_MARK + json.dumps({"passed": passed, "failed": failed, "times": res.times}), flush=True)


def load_times(build):
    for path in (os.path.join(build, "test-times.json"), os.path.join(INTEGRATION, "times.json")):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            continue
    return {}


def main():
    args = sys.argv[1:]
    if args[:1] == ["--unit"]:
        run_child(args[1])
        return
    jobs = int(os.environ.get("PX_TEST_JOBS", 2 * (os.cpu_count() or 1)))
    pattern = "test_*.py"
    while args:
        a = args.pop(0)
        if a == "-j":
            jobs = int(args.pop(0))
        else:
            pattern = a
    build = os.environ.get("PX_BUILD", os.path.join(os.path.dirname(HERE), "build"))
    unit_timeout = float(os.environ.get("PX_TEST_UNIT_TIMEOUT", "1200"))
    units = discover(pattern)
    known = load_times(build)
    # Longest first (unknown classes count as long: they may be new and slow).
    order = sorted(units, key=lambda u: -known.get(u, 60.0))
    lock = threading.Lock()
    queue = list(order)
    free_slots = list(range(jobs))
    totals = {"passed": 0, "failed": 0}
    test_times = {}
    unit_times = {}
    t_start = time.monotonic()

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                unit = queue.pop(0)
                slot = free_slots.pop(0)
            t0 = time.monotonic()
            env = dict(os.environ, PX_TEST_SLOT=str(slot), PYTHONUNBUFFERED="1")
            p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--unit", unit], cwd=INTEGRATION,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                 errors="replace")
            try:
                out, _ = p.communicate(timeout=unit_timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
                timed_out = True
            took = time.monotonic() - t0
            result = None
            lines = []
            for line in out.splitlines():
                if line.startswith(RESULT_MARK):
                    result = json.loads(line[len(RESULT_MARK):])
                elif re.match(r"Ran \d+ tests? in |OK( \(.*\))?$", line):
                    if lines and re.match(r"-{20,}$", lines[-1]):
                        lines.pop()  # unittest's closing block: the parent sums up instead
                else:
                    lines.append(line)
            while lines and not lines[-1].strip():
                lines.pop()
            with lock:
                free_slots.append(slot)
                unit_times[unit] = took
                sys.stdout.write("\n".join(lines) + "\n")
                if result is None:
                    why = "timed out after %.0f s" % took if timed_out else "exited with %s" % p.returncode
                    print("FAIL: %s: the class's process %s before reporting (counted as %d failed)"
                          % (unit, why, len(units[unit])))
                    totals["failed"] += len(units[unit])
                else:
                    totals["passed"] += result["passed"]
                    totals["failed"] += result["failed"]
                    test_times.update(result["times"])
                print("-- %s: %.1f s" % (unit, took), flush=True)

    threads = [threading.Thread(target=worker) for _ in range(max(1, jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t_start
    try:
        with open(os.path.join(build, "test-times.json"), "w") as f:
            json.dump(dict(known, **unit_times), f, indent=0, sort_keys=True)
    except OSError:
        pass
    print("slowest tests:")
    for tid, t in sorted(test_times.items(), key=lambda kv: -kv[1])[:10]:
        print("  %7.1f s  %s" % (t, tid))
    print("slowest classes:")
    for u, t in sorted(unit_times.items(), key=lambda kv: -kv[1])[:5]:
        print("  %7.1f s  %s" % (t, u))
    print("integration wall time: %.1f s with %d jobs" % (wall, jobs))
    print("integration: %d passed, %d failed" % (totals["passed"], totals["failed"]))
    sys.exit(1 if totals["failed"] or totals["passed"] == 0 else 0)


if __name__ == "__main__":
    main()
