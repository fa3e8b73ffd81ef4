"""An independent reference for HTTP/1.1 request framing, written from the ABNF
of RFC 9110/9112 (and RFC 3986 for Host) as regular expressions over whole
messages, with px's documented policies on top (man pxd(8), HTTP BEHAVIOUR).
px's codec is a byte-at-a-time state machine and a line splitter; this is neither, so
where the two agree on thousands of malformed inputs, the grammar is what the
RFC says and not what one implementation happens to do.

parse_requests(data) -> (end, [(offset_after_message, body), ...])
  end: "end" (all bytes were whole messages), "incomplete" (the rest is a valid
  beginning of a message), "reject", or "upgrade" (the rest is not HTTP).
"""
try:
    import regex  # partial matching: "could these bytes still become a valid message?"
except ImportError:  # Debian's python3-regex, when python3 is not Debian's own
    import sys
    sys.path.append("/usr/lib/python3/dist-packages")
    import regex

TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
TOKEN = TCHAR + rb"+"
OWS = rb"[ \t]*"
FIELD_LINE = TOKEN + rb":[\t\x20-\x7e\x80-\xff]*\r\n"
REQUEST_HEAD = regex.compile(
    rb"(?:\r\n)*(" + TOKEN + rb") ([\x21\x22\x24-\x7e]+) HTTP/([0-9])\.([0-9])\r\n((?:" + FIELD_LINE + rb")*)\r\n")
QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
CHUNK_EXT = rb"(?:" + OWS + rb";" + OWS + TOKEN + rb"(?:" + OWS + rb"=" + OWS + rb"(?:" + TOKEN + rb"|" + QUOTED + rb"))?)*"
CHUNK_LINE = regex.compile(rb"([0-9A-Fa-f]+)" + CHUNK_EXT + rb"\r\n")
TRAILERS = regex.compile(rb"(?:" + FIELD_LINE + rb")*\r\n")
CRLF = regex.compile(rb"\r\n")
MAX_CHUNK_LINE = 4096

# RFC 3986: uri-host [ ":" port ], reg-name without "," (a Host is one value), no userinfo.
REG_NAME = rb"(?:[A-Za-z0-9\-._~!$&'()*+;=]|%[0-9A-Fa-f]{2})*"
IP_LITERAL = rb"\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\]"
HOST = regex.compile(rb"(?:" + IP_LITERAL + rb"|" + REG_NAME + rb")(?::([0-9]{0,5}))?")

# The methods llhttp knows (px refuses others with 400; CONNECT gets 405).
METHODS = set(b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND PROPPATCH SEARCH "
              b"UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH NOTIFY SUBSCRIBE "
              b"UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE".split())


def valid_host(v):
    m = HOST.fullmatch(v)
    if not m:
        return False
    if v.startswith(b"[") and len(v.split(b"]")[0]) < 3:
        return False
    port = m.group(1)
    return port is None or port == b"" or int(port) <= 65535


def valid_target(method, t):
    if t.startswith(b"/"):
        return True
    if t == b"*":
        return method == b"OPTIONS"
    lower = t.lower()
    for scheme in (b"http://", b"https://"):
        if lower.startswith(scheme) and len(t) > len(scheme):
            rest = t[len(scheme):]
            cut = min([i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0] or [len(rest)])
            authority = rest[:cut]
            return authority != b"" and valid_host(authority)
    return False


def has_token(value, token):
    return any(part.strip(b" \t").lower() == token for part in value.split(b","))


def head_semantics(m):
    """(ok, framing, upgrade): framing is ("length", n), ("chunked",) or ("none",)."""
    method, target, major, minor, fields = m.group(1), m.group(2), int(m.group(3)), int(m.group(4)), m.group(5)
    if method not in METHODS or (major, minor) not in ((1, 0), (1, 1)) or method == b"CONNECT":
        return False, None, False
    headers = []
    for line in fields.split(b"\r\n")[:-1]:
        name, _, value = line.partition(b":")
        if b"_" in name:
            continue  # dropped (underscores_in_headers off)
        headers.append((name.lower(), value.strip(b" \t")))
    hosts = [v for n, v in headers if n == b"host"]
    if len(hosts) > 1 or (minor == 1 and not hosts) or (hosts and not valid_host(hosts[0])):
        return False, None, False
    if not valid_target(method, target):
        return False, None, False
    cls = [v for n, v in headers if n == b"content-length"]
    tes = [v for n, v in headers if n == b"transfer-encoding"]
    if len(cls) > 1 or len(tes) > 1 or (cls and tes):
        return False, None, False
    upgrade = any(n == b"upgrade" for n, _ in headers) and any(
        n == b"connection" and has_token(v, b"upgrade") for n, v in headers)
    if tes:
        if tes[0].lower() != b"chunked" or minor == 0:
            return False, None, False
        return True, ("chunked",), upgrade
    if cls:
        if not regex.fullmatch(rb"[0-9]+", cls[0]) or len(cls[0].lstrip(b"0")) > 19:
            return False, None, False
        return True, ("length", int(cls[0])), upgrade
    return True, ("none",), upgrade


def _stuck(rx, data, pos):
    """The rest does not match: a valid beginning ('incomplete') or not ('reject')?"""
    return "incomplete" if rx.fullmatch(data, pos, partial=True) else "reject"


def parse_requests(data):
    msgs = []
    pos = 0
    while True:
        if pos == len(data):
            return "end", msgs
        m = REQUEST_HEAD.match(data, pos)
        if not m:
            return _stuck(REQUEST_HEAD, data, pos), msgs
        ok, framing, upgrade = head_semantics(m)
        if not ok:
            return "reject", msgs
        pos = m.end()
        body = b""
        if framing[0] == "length":
            n = framing[1]
            if len(data) - pos < n:
                return "incomplete", msgs
            body = data[pos:pos + n]
            pos += n
        elif framing[0] == "chunked":
            while True:
                c = CHUNK_LINE.match(data, pos)
                if not c:
                    line_end = data.find(b"\n", pos)
                    if line_end < 0 and len(data) - pos >= MAX_CHUNK_LINE:
                        return "reject", msgs
                    return _stuck(CHUNK_LINE, data, pos), msgs
                if c.end() - pos > MAX_CHUNK_LINE or len(c.group(1).lstrip(b"0")) > 15:
                    return "reject", msgs
                size = int(c.group(1), 16)
                pos = c.end()
                if size == 0:
                    t = TRAILERS.match(data, pos)
                    if not t:
                        return _stuck(TRAILERS, data, pos), msgs
                    pos = t.end()
                    break
                if len(data) - pos < size:
                    return "incomplete", msgs
                body += data[pos:pos + size]
                pos += size
                if not CRLF.match(data, pos):
                    return _stuck(CRLF, data, pos), msgs
                pos += 2
        msgs.append((pos, body))
        if upgrade:
            return "upgrade", msgs
