"""The web dashboard in a real browser: Debian's headless Chromium driven by Selenium, against the real
pxadmind (--ui) and pxd on loopback. The first-run path end to end (setup token, admin, a route that
proxies through pxd, an edit, a validation error shown by its field, a delete), an access list that
turns a route into 403s, a viewer who cannot change anything (in the page or through the API with
its cookie), logout and session expiry, and the attacks: a cross-origin form post, the login rate
limit, a wrong TOTP code, markup in stored values shown as text, and two sessions editing one route.
Screenshots of each screen are saved under the build directory (ui-screenshots/)."""
import hashlib
import hmac
import http.client
import http.server
import json
import os
import re
import struct
import sys
import threading
import time
import unittest
import urllib.request

try:
    import selenium  # noqa: F401
except ImportError:  # a python3 other than Debian's first on PATH: Debian's selenium is pure Python
    sys.path.append("/usr/lib/python3/dist-packages")
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from pxtest import BUILD, DEADLINE, Admind, Pxd, Upstream, free_port, wait_for

SHOTS = os.path.join(BUILD, "ui-screenshots")
PASSWORD = "correct horse battery"


def totp(secret_b32, at=None):
    key = __import__("base64").b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    step = int((at if at is not None else time.time()) // 30)
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    off = mac[-1] & 15
    return "%06d" % ((struct.unpack(">I", mac[off:off + 4])[0] & 0x7fffffff) % 1000000)


class Browser:
    """One headless Chromium (its own profile: its own cookies)."""

    def __init__(self, base, width=1280):
        o = webdriver.ChromeOptions()
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  "--window-size=%d,900" % width, "--no-first-run"):
            o.add_argument(a)
        o.binary_location = "/usr/bin/chromium"
        self.d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
        self.d.set_page_load_timeout(DEADLINE)
        self.base = base

    def quit(self):
        self.d.quit()

    def open(self, hash_=""):
        self.d.get(self.base + "/ui/" + hash_)

    def text(self):
        try:
            return self.d.find_element(By.ID, "main").text
        except WebDriverException:
            return ""

    def wait_text(self, s, what=None):
        return wait_for(lambda: s in self.text(), what=what or "the page to say %r" % s)

    def el(self, css):
        return wait_for(lambda: (self.d.find_elements(By.CSS_SELECTOR, css) or [None])[0], what="element " + css)

    def fill(self, name, value, form="form"):
        css = "%s [name='%s']" % (form, name)

        def attempt():
            try:
                found = self.d.find_elements(By.CSS_SELECTOR, css)
                if found:
                    found[0].clear()
                    found[0].send_keys(value)
                    return found[0].get_attribute("value") == value
            except WebDriverException:
                pass
            return False
        wait_for(attempt, what="%s filled" % css)

    def click(self, text, css="button"):
        # Found and clicked in one try, again if the page re-drew it in between (a stale element).
        def attempt():
            try:
                for e in self.d.find_elements(By.CSS_SELECTOR, css):
                    if e.text.strip() == text and e.is_displayed():
                        e.click()
                        return True
            except WebDriverException:
                pass
            return False
        wait_for(attempt, what="a %s saying %r, clicked" % (css, text))

    def click_el(self, css):
        def attempt():
            try:
                found = self.d.find_elements(By.CSS_SELECTOR, css)
                if found:
                    found[0].click()
                    return True
            except WebDriverException:
                pass
            return False
        wait_for(attempt, what="%s, clicked" % css)

    def shot(self, name):
        os.makedirs(SHOTS, exist_ok=True)
        self.d.save_screenshot(os.path.join(SHOTS, name + ".png"))

    def login(self, user, password=PASSWORD):
        self.open("#/login")
        self.wait_text("Log in to px")
        self.fill("user", user)
        self.fill("password", password)
        self.click("Log in")
        self.wait_text("Routes")

    def cookie(self):
        c = self.d.get_cookie("px_session")
        return c["value"] if c else None


class UiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = Upstream("ui-up")
        cls.pxd = Pxd(extra="metrics_listen 127.0.0.1:0\n")
        cls.adm = Admind(data=cls.pxd.data, pxd_status=cls.pxd.status_file, args=["--ui", "127.0.0.1:0"])
        m = wait_for(lambda: re.search(r"dashboard on http://127\.0\.0\.1:(\d+)/ui/", cls.adm.log()), what="--ui")
        cls.port = int(m.group(1))
        cls.base = "http://127.0.0.1:%d" % cls.port
        cls.token = re.search(r"setup token (pxs_[0-9a-f]+)", cls.adm.log()).group(1)
        cls.browsers = []

    @classmethod
    def tearDownClass(cls):
        for b in cls.browsers:
            b.quit()
        cls.adm.stop()
        cls.pxd.stop()
        cls.up.kill()

    def browser(self, width=1280):
        b = Browser(self.base, width)
        self.browsers.append(b)
        return b

    def http(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=DEADLINE)
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        h = {"Content-Type": "application/json"} if data is not None else {}
        h.update(headers or {})
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        raw = r.read()
        c.close()
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = raw
        return r.status, {k.lower(): v for k, v in r.getheaders()}, doc

    def login_api(self, user, password=PASSWORD, **extra):
        st, hd, doc = self.http("POST", "/v1/session", dict(user=user, password=password, **extra))
        cookie = re.search(r"px_session=([0-9a-f]+)", hd.get("set-cookie", ""))
        return st, (cookie.group(1) if cookie else None), doc

    def through_pxd(self, host, auth=None):
        c = http.client.HTTPConnection("127.0.0.1", self.pxd.port, timeout=DEADLINE)
        headers = {"Host": host}
        if auth:
            headers["Authorization"] = "Basic " + __import__("base64").b64encode(("%s:%s" % auth).encode()).decode()
        c.request("GET", "/", headers=headers)
        r = c.getresponse()
        r.read()
        c.close()
        return r.status

    def login(self, b, user, password=PASSWORD):
        b.login(user, password)

    # ---- the first run, and routes ----

    def test_1_first_run_path(self):
        b = self.browser()
        b.open()
        b.wait_text("setup token")
        b.shot("01-setup")
        # No default password: without the logged token nothing is made.
        b.fill("token", "pxs_not_the_token")
        b.fill("user", "ada")
        b.fill("password", PASSWORD)
        b.click("Create admin")
        b.wait_text("token: not the setup token pxadmind logged")
        b.fill("token", self.token)
        b.click("Create admin")
        b.wait_text("No routes yet.")
        cookie = b.d.get_cookie("px_session")
        self.assertTrue(cookie["httpOnly"])
        self.assertEqual(cookie["sameSite"], "Strict")
        b.shot("02-routes-empty")
        # The token is spent.
        self.assertEqual(self.http("POST", "/v1/session/setup", {"token": self.token, "user": "eve",
                                                                  "password": PASSWORD})[0], 409)
        # Add a route to the test upstream; pxd serves it.
        b.click("Add route")
        b.wait_text("Add a route")
        b.fill("name", "shop")
        b.fill("hosts", "shop.test")
        b.fill("upstreams", self.up.url)
        b.shot("03-route-form")
        b.click("Add route", css="form button")
        b.wait_text("shop.test")
        b.shot("04-routes")
        self.pxd.wait_applied(self.adm.generation())
        self.assertEqual(self.through_pxd("shop.test"), 200)
        # The status screen reads pxd's counters: the route's traffic shows.
        b.open("#/status")
        row = wait_for(lambda: b.d.find_elements(By.CSS_SELECTOR, "tr[data-traffic='shop']"), what="shop's traffic")
        self.assertGreaterEqual(int(row[0].find_elements(By.TAG_NAME, "td")[3].text), 1)
        b.shot("04b-status-traffic")
        b.open("#/routes")
        b.wait_text("shop.test")
        # Edit: a second host.
        b.click_el("tr[data-route='shop'] button")
        b.wait_text("Route shop")
        b.fill("hosts", "shop.test\nwww.shop.test")
        b.click("Save")
        b.wait_text("www.shop.test")
        self.pxd.wait_applied(self.adm.generation())
        self.assertEqual(self.through_pxd("www.shop.test"), 200)
        # A validation error comes back from the API and is shown at its field.
        b.click_el("tr[data-route='shop'] button")
        b.wait_text("Route shop")
        b.fill("upstreams", "ftp://127.0.0.1:1")
        b.click("Save")
        err = b.el("[data-field='upstreams'] .field-error")
        self.assertIn("upstreams[0].url:", err.text)
        self.assertEqual(b.el("#f-upstreams").get_attribute("aria-invalid"), "true")
        b.shot("05-route-validation-error")
        # Delete, confirming.
        b.click("Back")
        b.wait_text("www.shop.test")
        b.click("Delete")
        b.click("Yes, delete")
        b.wait_text("No routes yet.")
        self.pxd.wait_applied(self.adm.generation())
        self.assertEqual(self.through_pxd("shop.test"), 404)
        # Every change is in the audit log, under the dashboard user.
        b.open("#/audit")
        b.wait_text("route.delete")
        self.assertIn("user:ada", b.text())
        b.shot("06-audit")
        for screen, words in (("#/status", "Store generation"), ("#/certs", "Upload a certificate"),
                              ("#/filters", "acl"),
                              ("#/config", "Download export"), ("#/account", "Logged in as")):
            b.open(screen)
            b.wait_text(words)
            b.shot("07-" + screen[2:])
        b.quit()

    def test_2_acl_denies_through_pxd(self):
        b = self.browser()
        self.login(b, "ada")
        b.open("#/acls")
        b.click("Add access list")
        b.fill("name", "office")
        b.fill("rules", "deny=127.0.0.0/8")
        b.click("Add access list", css="form button")
        b.wait_text("deny 127.0.0.0/8")
        b.shot("08-acls")
        b.open("#/route")
        b.wait_text("Add a route")
        b.fill("name", "intranet")
        b.fill("hosts", "intranet.test")
        b.fill("upstreams", self.up.url)
        # A filter config pxadmind refuses: the error is shown at the filters field, and nothing is written.
        gen = self.adm.generation()
        b.fill("filters", 'acl={"list": "offce"}')
        b.click("Add route", css="form button")
        box = b.el("[data-field='filters'] .field-error")
        self.assertIn("filters[0].config: acl: no access list named 'offce'", box.text)
        self.assertEqual(self.adm.generation(), gen)
        b.fill("filters", 'acl={"list": "office"}')
        b.click("Add route", css="form button")
        b.wait_text("intranet.test")
        self.pxd.wait_applied(self.adm.generation())
        self.assertEqual(self.through_pxd("intranet.test"), 403)
        b.open("#/acls")
        b.wait_text("deny 127.0.0.0/8")
        # A basic-auth user: its password is hashed as it arrives, never stored or shown.
        b.click_el("tr[data-acl='office'] button")
        b.wait_text("Basic-auth users")
        b.fill("username", "bob", form="form[aria-label='Basic-auth users']")
        b.fill("password", "bobs password", form="form[aria-label='Basic-auth users']")
        b.click("Add user")
        wait_for(lambda: "bob" in b.text(), what="bob listed")
        users = self.adm.api("GET", "/v1/acls/office")[2]["users"]
        self.assertEqual([u["username"] for u in users], ["bob"])
        self.assertTrue(users[0]["hash"].startswith("$y$"))
        self.assertNotIn("bobs password", json.dumps(self.adm.api("GET", "/v1/config")[2]))
        # With a user on the list (satisfy any), the address alone no longer decides: credentials do.
        self.pxd.wait_applied(self.adm.generation())
        self.assertEqual(self.through_pxd("intranet.test"), 401)
        self.assertEqual(self.through_pxd("intranet.test", auth=("bob", "bobs password")), 200)
        b.quit()

    # ---- accounts ----

    def test_3_viewer_reads_only(self):
        admin = self.browser()
        self.login(admin, "ada")
        admin.open("#/account")
        admin.wait_text("Accounts")
        admin.fill("name", "vic", form="form[aria-label='Add an account']")
        admin.fill("password", PASSWORD, form="form[aria-label='Add an account']")
        admin.click("Add account")
        wait_for(lambda: "vic" in admin.text(), what="the viewer listed")
        admin.shot("09-accounts")
        v = self.browser(width=390)  # a phone's width
        self.login(v, "vic")
        self.assertEqual(v.d.find_elements(By.ID, "add-route"), [])
        v.shot("10-viewer-phone")
        # The API refuses the viewer's changes even with a valid cookie and CSRF token.
        cookie = v.cookie()
        csrf = self.http("GET", "/v1/session", headers={"Cookie": "px_session=" + cookie})[2]["csrf"]
        st, _, doc = self.http("POST", "/v1/routes", {"name": "v", "hosts": ["v.test"], "upstreams": [self.up.url]},
                               headers={"Cookie": "px_session=" + cookie, "X-CSRF-Token": csrf})
        self.assertEqual(st, 403, doc)
        self.assertEqual(self.http("GET", "/v1/routes", headers={"Cookie": "px_session=" + cookie})[0], 200)
        # Reading everything does not include private keys.
        self.assertEqual(self.http("GET", "/v1/config?include_keys=1", headers={"Cookie": "px_session=" + cookie})[0],
                         403)
        # Logout ends the session on the server too.
        v.open("#/account")
        v.click("Log out")
        v.wait_text("Log in to px")
        self.assertEqual(self.http("GET", "/v1/routes", headers={"Cookie": "px_session=" + cookie})[0], 401)

    def test_4_session_expiry(self):
        adm = Admind(data=self.pxd.data + "-idle", args=["--ui", "127.0.0.1:0", "--ui-idle", "1"])
        self.addCleanup(adm.stop)
        port = int(wait_for(lambda: re.search(r"dashboard on http://127\.0\.0\.1:(\d+)/ui/", adm.log()),
                            what="--ui").group(1))
        token = re.search(r"setup token (pxs_[0-9a-f]+)", adm.log()).group(1)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
        c.request("POST", "/v1/session/setup", json.dumps({"token": token, "user": "ida", "password": PASSWORD}),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        cookie = re.search(r"px_session=([0-9a-f]+)", r.getheader("Set-Cookie")).group(1)

        def status():
            c.request("GET", "/v1/routes", headers={"Cookie": "px_session=" + cookie})
            r = c.getresponse()
            r.read()
            return r.status
        self.assertEqual(status(), 200)
        # Unused for more than the idle time (1 s), the session is gone.
        time.sleep(2.2)
        self.assertEqual(status(), 401)
        c.close()

    # ---- attacks ----

    def test_5_cross_origin_form_post_is_refused(self):
        b = self.browser()
        self.login(b, "ada")
        page = ('<form id="f" method="POST" action="%s/v1/routes" enctype="text/plain">'
                '<input name=\'{"name":"evil","hosts":["evil.test"],"upstreams":["http://127.0.0.1:1"],"x":"\' '
                'value=\'"}\'></form><script>document.getElementById("f").submit()</script>' % self.base)

        class Evil(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(page.encode())

            def log_message(self, *a):
                pass
        srv = http.server.HTTPServer(("127.0.0.1", 0), Evil)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.addCleanup(srv.shutdown)
        b.d.get("http://127.0.0.1:%d/" % srv.server_port)  # another origin (another port)
        wait_for(lambda: "/v1/routes" in b.d.current_url, what="the forged post sent")
        b.shot("11-csrf-refused")
        self.assertNotIn("201", b.d.page_source[:200])
        self.assertEqual(self.adm.api("GET", "/v1/routes/evil")[0], 404)
        # The same with a script's request: a cookie alone (no CSRF token), or a foreign Origin, is refused.
        cookie = b.cookie()
        body = {"name": "evil", "hosts": ["evil.test"], "upstreams": [self.up.url]}
        st, _, doc = self.http("POST", "/v1/routes", body, headers={"Cookie": "px_session=" + cookie})
        self.assertEqual((st, doc["error"]["field"]), (403, "X-CSRF-Token"))
        csrf = self.http("GET", "/v1/session", headers={"Cookie": "px_session=" + cookie})[2]["csrf"]
        st, _, doc = self.http("POST", "/v1/routes", body, headers={
            "Cookie": "px_session=" + cookie, "X-CSRF-Token": csrf, "Origin": "http://evil.example"})
        self.assertEqual((st, doc["error"]["field"]), (403, "Origin"))
        self.assertEqual(self.adm.api("GET", "/v1/routes/evil")[0], 404)

    def test_6_login_rate_limit(self):
        r = self.adm.ctl("user", "add", "lim", "--role", "viewer", "--password-stdin", input=PASSWORD + "\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("lim", self.adm.ctl("user", "list").stdout)
        st, _, _ = self.http("POST", "/v1/users", {"name": "lim2", "password": PASSWORD})
        self.assertEqual(st, 401)  # no session, no token: nobody
        for _ in range(5):
            self.assertEqual(self.login_api("lim", "wrong password!")[0], 401)
        st, hd, doc = self.http("POST", "/v1/session", {"user": "lim", "password": PASSWORD})
        self.assertEqual(st, 429, doc)  # even the right password, until the window passes
        self.assertGreater(int(hd["retry-after"]), 0)
        b = self.browser()
        b.open("#/login")
        b.fill("user", "lim")
        b.fill("password", PASSWORD)
        b.click("Log in")
        b.wait_text("too many failed logins")
        b.shot("12-rate-limited")

    def test_7_totp_and_a_wrong_code(self):
        self.assertEqual(self.adm.api("POST", "/v1/users", {"name": "tess", "password": PASSWORD, "role": "admin"})[0],
                         201)
        b = self.browser()
        self.login(b, "tess")
        b.open("#/account")
        b.click("Turn on TOTP")
        secret = b.el("#totp-secret").text
        b.fill("code", totp(secret), form="form[aria-label='Confirm TOTP']")
        b.click("Confirm")
        codes = b.el("#recovery-codes").text.split()
        self.assertEqual(len(codes), 8)
        b.shot("13-totp-on")
        # Password alone, a wrong code: refused. The right code, or a recovery code (once): in.
        self.assertEqual(self.login_api("tess")[2]["error"]["field"], "totp")
        wrong = "%06d" % ((int(totp(secret)) + 500000) % 1000000)
        st, cookie, doc = self.login_api("tess", totp=wrong)
        self.assertEqual((st, cookie, doc["error"]["message"]), (401, None, "wrong TOTP code"))
        st, cookie, _ = self.login_api("tess", totp=totp(secret))
        self.assertEqual(st, 200)
        self.assertTrue(cookie)
        self.assertEqual(self.login_api("tess", recovery=codes[0])[0], 200)
        self.assertEqual(self.login_api("tess", recovery=codes[0])[0], 401)  # spent
        # In the page: the code field appears, and a wrong code is said to be wrong.
        b2 = self.browser()
        b2.open("#/login")
        b2.fill("user", "tess")
        b2.fill("password", PASSWORD)
        b2.click("Log in")
        b2.wait_text("TOTP code")
        b2.fill("totp", wrong)
        b2.click("Log in")
        b2.wait_text("wrong TOTP code")
        b2.shot("14-totp-wrong")

    def test_8_markup_is_shown_as_text(self):
        evil = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
        st, _, doc = self.adm.api("POST", "/v1/routes", {
            "name": "xss", "hosts": ["xss.test"], "upstreams": [self.up.url],
            "filters": [{"name": "headers", "config": {"response": {"set": {"X-Note": evil}}}}]})
        self.assertEqual(st, 201, doc)
        b = self.browser()
        self.login(b, "ada")
        b.open("#/route/xss")
        b.wait_text("Route xss")
        self.assertIn(json.dumps(evil)[1:-1], b.el("#f-filters").get_attribute("value"))  # as JSON text
        b.open("#/audit")
        b.wait_text("route.create")
        b.click_el("details summary")
        wait_for(lambda: evil.replace('"', '\\"') in b.text(), what="the markup shown as text")
        self.assertIsNone(b.d.execute_script("return window.pwned"))
        self.assertEqual(b.d.find_elements(By.CSS_SELECTOR, "main img, main script"), [])
        b.shot("15-markup-as-text")

    def test_9_concurrent_edits(self):
        self.assertEqual(self.adm.api("POST", "/v1/routes", {"name": "both", "hosts": ["both.test"],
                                                             "upstreams": [self.up.url]})[0], 201)
        one, two = self.browser(), self.browser()
        for b in (one, two):
            self.login(b, "ada")
            b.open("#/route/both")
            b.wait_text("Route both")
        one.fill("path", "/one")
        one.click("Save")
        one.wait_text("/one")
        two.fill("path", "/two")
        two.click("Save")
        two.wait_text("Changed by user:ada since you opened it")
        self.assertEqual(two.el("#f-path").get_attribute("value"), "/two")  # the edit is kept
        two.shot("16-concurrent-edit")
        # The dark theme, by the toggle (the system's preference is followed until then).
        two.click_el("#theme")
        self.assertEqual(two.d.execute_script("return document.documentElement.dataset.theme"), "dark")
        two.open("#/routes")
        two.wait_text("both.test")
        two.shot("17-routes-dark")
        self.assertEqual(self.adm.api("GET", "/v1/routes/both")[2]["path"], "/one")

    def test_9c_streams(self):
        import socket
        from l4peers import TcpPeer, hold_port, recv_all
        peer = TcpPeer()
        self.addCleanup(peer.close)
        port = free_port()
        b = self.browser()
        self.login(b, "ada")
        b.open("#/streams")
        b.wait_text("No streams yet.")
        b.click("Add stream")
        b.wait_text("Add a stream")
        b.fill("name", "echo")
        b.fill("listen", "127.0.0.1:%d" % port)
        b.fill("upstreams", peer.url)
        b.fill("max_connections", "5")
        b.shot("18-stream-form")
        b.click("Add stream", css="form button")
        row = "tr[data-stream='echo']"
        b.el(row)
        b.wait_text("127.0.0.1:%d/tcp" % port)
        stored = self.adm.api("GET", "/v1/streams/echo")[2]
        self.assertEqual((stored["upstreams"][0]["url"], stored["max_connections"]), (peer.url, 5))
        # pxd relays through it.
        self.pxd.wait_applied(self.adm.generation())

        def echo():
            with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as c:
                c.sendall(b"ECHO\nhello")
                c.shutdown(socket.SHUT_WR)
                return recv_all(c)
        self.assertEqual(echo(), b"hellobye:5")
        # A validation error is shown at the field the API names; nothing is stored.
        b.click_el(row + " button")
        b.wait_text("Stream echo")
        b.fill("listen", "127.0.0.1:99999")
        b.click("Save")
        err = b.el("[data-field='listen'] .field-error")
        self.assertTrue(err.text.startswith("listen:"), err.text)
        self.assertEqual(b.el("#f-listen").get_attribute("aria-invalid"), "true")
        b.fill("listen", "127.0.0.1:%d/udp" % port)
        b.click("Save")
        err = b.el("[data-field='upstreams'] .field-error")
        self.assertTrue(err.text.startswith("upstreams[0].url:"), err.text)
        self.assertIn("udp://", err.text)
        self.assertEqual(b.d.find_elements(By.CSS_SELECTOR, "[data-field='listen'] .field-error"), [])
        b.fill("upstreams", "udp://127.0.0.1:%d" % peer.port)
        b.fill("health_check", "1000")
        b.click("Save")
        err = b.el("[data-field='health_check'] .field-error")
        self.assertIn("UDP", err.text)
        b.shot("19-stream-validation-error")
        self.assertEqual(self.adm.api("GET", "/v1/streams/echo")[2]["version"], stored["version"])
        # A stream whose port another process holds: stored and enabled, and listed with pxd's error.
        holder, held = hold_port()
        self.addCleanup(holder.close)
        self.assertEqual(self.adm.api("POST", "/v1/streams", {"name": "held", "listen": "127.0.0.1:%d" % held,
                                                              "upstreams": [peer.url]})[0], 201)
        self.pxd.wait_applied(self.adm.generation())
        b.open("#/streams")
        err = b.el("tr[data-stream='held'] .field-error")
        self.assertIn("in use", err.text)
        b.shot("20-streams-error")
        # Disable, then delete, confirming.
        b.click("Disable", css=row + " button")
        wait_for(lambda: self.adm.api("GET", "/v1/streams/echo")[2]["enabled"] is False, what="echo disabled")
        b.wait_text("disabled")
        for name in ("echo", "held"):
            b.click("Delete", css="tr[data-stream='%s'] button" % name)
            b.click("Yes, delete")
            wait_for(lambda: self.adm.api("GET", "/v1/streams/" + name)[0] == 404, what=name + " deleted")
        b.wait_text("No streams yet.")
        self.assertEqual(self.adm.api("GET", "/v1/fleet")[0], 404)
        b.open("#/fleet")
        b.wait_text("not in a fleet")

    def test_9b_keyboard_only(self):
        from selenium.webdriver.common.keys import Keys
        b = self.browser()
        b.open("#/login")
        b.wait_text("Log in to px")
        # Type, Tab to the next field, Enter submits: no mouse.
        b.el("#f-user").send_keys("ada" + Keys.TAB + PASSWORD + Keys.ENTER)
        b.wait_text("Routes")
        # Tab reaches the add button; Enter opens the form, whose fields are all labelled.
        body = b.d.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.TAB)
        for _ in range(40):
            if b.d.switch_to.active_element.get_attribute("id") == "add-route":
                break
            b.d.switch_to.active_element.send_keys(Keys.TAB)
        self.assertEqual(b.d.switch_to.active_element.get_attribute("id"), "add-route")
        b.d.switch_to.active_element.send_keys(Keys.ENTER)
        b.wait_text("Add a route")
        for e in b.d.find_elements(By.CSS_SELECTOR, "main input, main select, main textarea"):
            self.assertTrue(b.d.find_elements(By.CSS_SELECTOR, "label[for='%s']" % e.get_attribute("id")),
                            "no label for %s" % e.get_attribute("name"))


if __name__ == "__main__":
    unittest.main()
