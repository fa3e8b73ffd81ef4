"""The README's first command (scripts/demo) starts px and shows a proxied response."""
import os
import socket
import subprocess
import unittest

from pxtest import ROOT, free_port


class DemoTest(unittest.TestCase):
    def test_demo_shows_a_proxied_response(self):
        port = free_port()
        env = dict(os.environ, PX_SKIP_DEPS="1", PX_DEMO_ONESHOT="1", PX_DEMO_PORT=str(port))
        r = subprocess.run([os.path.join(ROOT, "scripts", "demo")], env=env, capture_output=True, text=True,
                           timeout=600)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("HTTP/1.1 200 OK", r.stdout)
        self.assertIn('"id": "demo-upstream"', r.stdout)
        self.assertIn("X-Forwarded-For", r.stdout)


if __name__ == "__main__":
    unittest.main()
