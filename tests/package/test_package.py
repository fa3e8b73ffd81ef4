"""The Debian package: scripts/package builds it and lintian reports nothing
(errors and warnings fail; pkg/lintian-overrides says why a tag is kept), and
what it ships is complete and runs: the binaries start with their libraries,
pxd accepts the shipped pxd.conf, the units verify, /etc files are conffiles,
and postinst makes the px user."""
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class PackageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        r = subprocess.run([os.path.join(ROOT, "scripts", "package")], capture_output=True, text=True,
                           env=dict(os.environ, PX_SKIP_DEPS="1"))
        cls.build = r
        cls.deb = os.path.join(ROOT, r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else None
        cls.dir = tempfile.mkdtemp(prefix="pxdeb-")
        if cls.deb and os.path.exists(cls.deb):
            subprocess.run(["dpkg-deb", "-x", cls.deb, cls.dir], check=True)
            subprocess.run(["dpkg-deb", "-e", cls.deb, os.path.join(cls.dir, "DEBIAN")], check=True)

    def test_builds_and_lintian_is_clean(self):
        self.assertEqual(self.build.returncode, 0, self.build.stdout + self.build.stderr)
        self.assertNotRegex(self.build.stdout + self.build.stderr, r"(?m)^[EW]: ")

    def test_contents(self):
        for path in ("usr/sbin/pxd", "usr/sbin/pxadmind", "usr/bin/pxctl", "etc/px/pxd.conf",
                     "lib/systemd/system/pxd.service", "lib/systemd/system/pxadmind.service",
                     "etc/logrotate.d/px", "etc/fail2ban/filter.d/px.conf", "usr/share/px/lua/px.lua",
                     "usr/share/px/filters/acme.lua", "usr/share/man/man8/pxd.8.gz", "usr/share/man/man1/pxctl.1.gz",
                     "usr/share/doc/px/copyright", "usr/share/px/grafana/px-dashboard.json"):
            self.assertTrue(os.path.exists(os.path.join(self.dir, path)), path)
        with open(os.path.join(self.dir, "DEBIAN", "conffiles")) as f:
            conffiles = set(f.read().split())
        etc = set()
        for d, _, files in os.walk(os.path.join(self.dir, "etc")):
            etc |= {"/" + os.path.relpath(os.path.join(d, n), self.dir) for n in files}
        self.assertEqual(conffiles, etc)
        with open(os.path.join(self.dir, "DEBIAN", "postinst")) as f:
            self.assertIn("adduser --quiet --system --group", f.read())

    def test_shipped_programs_run(self):
        for prog in ("usr/bin/pxctl", "usr/sbin/pxd", "usr/sbin/pxadmind"):
            r = subprocess.run([os.path.join(self.dir, prog), "--version"], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("0.", r.stdout)
        r = subprocess.run([os.path.join(self.dir, "usr/sbin/pxd"), "-t", "-c", os.path.join(self.dir, "etc/px/pxd.conf")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("configuration ok", r.stdout + r.stderr)


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print("package: %d passed, %d failed" % (result.testsRun - failed, failed))
    sys.exit(1 if failed else 0)
