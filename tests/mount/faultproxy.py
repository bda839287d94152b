"""An HTTP/1.1 proxy on loopback that injects faults in front of a store (Azurite).

Requests are forwarded unchanged to the upstream server (one upstream connection per
request); answers come back with their status and headers, the body re-sent with a
Content-Length (chunked answers are de-chunked). The client side keeps connections
alive, as a real server does, until a fault closes them.

Faults are rules, armed while the proxy runs:

    proxy.fail_next(2, "reset", method="GET", path="/runs/e/r/big.bin")
    rule = proxy.fail_always("status", status=503)      # until proxy.clear(rule)

A request takes the first armed rule that matches it (method, substring of the
request target) and still has a use left. Kinds:

    status        answer `status` (default 503) with an Azure-style XML error body,
                  optionally with `retry_after` (Retry-After, seconds) and/or
                  `retry_after_ms` (x-ms-retry-after-ms); not forwarded upstream.
    reset         forward, send the headers and `fraction` (default 0.5) of the body,
                  then reset the connection (RST). A body-less answer is cut inside
                  its headers. `forward=False`: reset before anything is forwarded.
    stall         send nothing for `seconds` (default 20); `where="headers"` (default:
                  before the request is forwarded) or `where="body"` (after the
                  headers and `fraction` of the body). If the client is still there
                  afterwards, the answer goes on normally.
    truncate      forward, send the correct Content-Length but only `fraction` of
                  the body, then close (FIN).
    wrong_length  forward, announce `extra` (default 1000) more bytes in
                  Content-Length than the body has, send the body, then close.
    trickle       forward, then send the answer one byte every `interval` seconds
                  (default 1.0), status line first, for as long as the client waits.
    misplaced     forward; a 206 answer comes back as the range from `shift` (default
                  4096) bytes further on: Content-Range, Content-Length and body all
                  say so (the answer of a store that got the offset wrong).

`proxy.refuse()` closes the listening socket, so connections are refused as by a
store that is down; `proxy.accept_again()` listens on the same port again.

Every request and every injected fault is recorded (`requests()`, `seen()`,
`injected()`). Only loopback upstreams are accepted. Every loop is bounded by the
stop flag and a deadline; `stop()` closes every socket and joins every thread.
"""
import http.client
import ipaddress
import re
import select
import socket
import struct
import threading
import time

KINDS = ("status", "reset", "stall", "truncate", "wrong_length", "trickle", "misplaced")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
              "trailer", "upgrade", "expect"}
# S3 names its errors otherwise, and sends no x-ms-error-code header
S3_ERROR_CODES = {500: "InternalError", 503: "SlowDown", 403: "AccessDenied",
                  404: "NoSuchKey", 412: "PreconditionFailed"}
ERROR_CODES = {500: "InternalError", 502: "BadGateway", 503: "ServerBusy",
               504: "GatewayTimeout", 408: "OperationTimedOut", 429: "TooManyRequests"}
MAX_HEADER_BYTES = 64 << 10
MAX_BODY_BYTES = 256 << 20
MAX_REQUESTS_PER_CONN = 100000
IDLE_TIMEOUT = 60.0
UPSTREAM_TIMEOUT = 60.0
TICK = 0.2


class Rule:
    """One armed fault. `count` None: every matching request, until cleared."""

    def __init__(self, kind, count, method, path, params):
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r} (one of {KINDS})")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1")
        self.kind, self.count, self.method, self.path = kind, count, method, path
        self.params = dict(params)
        self.injected = 0
        self.stalled = 0  # stalls that have sent what comes before the stall
        self.active = True

    def matches(self, method, target):
        return (self.active and (self.count is None or self.injected < self.count) and
                (self.method is None or self.method.upper() == method.upper()) and
                (self.path is None or self.path in target))

    def __repr__(self):
        return (f"Rule({self.kind}, count={self.count}, method={self.method}, "
                f"path={self.path}, params={self.params}, injected={self.injected})")


class Record:
    """One request the proxy saw, and what it did with it."""

    def __init__(self, t, method, target, fault, range_=None):
        self.t, self.method, self.target, self.fault = t, method, target, fault
        self.range = range_  # (first, last) byte of a ranged request, else None

    def __repr__(self):
        return f"Record({self.t:.3f}, {self.method} {self.target}, fault={self.fault})"


class _ClientGone(Exception):
    pass


class FaultProxy:
    def __init__(self, upstream_port, upstream_host="127.0.0.1", style="azure"):
        """style: the shape of injected error answers, "azure" or "s3"."""
        self.style = style
        addr = ipaddress.ip_address(socket.gethostbyname(upstream_host))
        if not addr.is_loopback:
            raise ValueError(f"the proxy only talks to loopback, not {upstream_host}")
        self.upstream = (str(addr), int(upstream_port))
        self.port = None
        self._lock = threading.Lock()
        self._rules = []
        self._records = []
        self._stop = threading.Event()
        self._listener = None
        self._threads = []
        self._socks = set()

    # ---- life cycle ----

    def _listen(self, port):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", port))
        ls.listen(64)
        ls.settimeout(TICK)
        with self._lock:
            self._listener = ls
        self.port = ls.getsockname()[1]

    def refuse(self):
        """Stops listening: new connections are refused; open ones are closed."""
        with self._lock:
            ls, self._listener = self._listener, None
            socks = list(self._socks)
        ls.close()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def accept_again(self):
        """Listens again on the same port after refuse()."""
        self._listen(self.port)

    def start(self):
        self._listen(0)
        t = threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True)
        self._threads.append(t)
        t.start()
        return self

    def stop(self, timeout=10.0):
        self._stop.set()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))
        if self._listener is not None:
            self._listener.close()
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"fault proxy threads did not stop: {alive}")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- faults ----

    def fail_next(self, n, kind, method=None, path=None, **params):
        """The next n requests that match fail with kind."""
        return self._arm(Rule(kind, n, method, path, params))

    def fail_always(self, kind, method=None, path=None, **params):
        """Every matching request fails with kind until the rule is cleared."""
        return self._arm(Rule(kind, None, method, path, params))

    def _arm(self, rule):
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self, rule=None):
        """Disarms one rule, or all of them."""
        with self._lock:
            for r in self._rules:
                if rule is None or r is rule:
                    r.active = False
            self._rules = [r for r in self._rules if r.active]

    def pending(self):
        """Uses left in the armed counted rules."""
        with self._lock:
            return sum(r.count - r.injected for r in self._rules
                       if r.active and r.count is not None)

    def _pick(self, method, target, headers=()):
        rng = None
        for k, v in headers:
            m = re.fullmatch(r"bytes=(\d+)-(\d+)", v.strip()) if k.lower() in (
                "range", "x-ms-range") else None
            if m:
                rng = (int(m.group(1)), int(m.group(2)))
        with self._lock:
            rule = next((r for r in self._rules if r.matches(method, target)), None)
            if rule is not None:
                rule.injected += 1
            rec = Record(time.monotonic(), method, target, rule.kind if rule else None, rng)
            self._records.append(rec)
            return rule, rec

    # ---- what happened ----

    def requests(self, method=None, path=None, fault=Ellipsis):
        """Records of the requests seen, filtered like rules; fault=None: not faulted,
        fault=KIND: faulted with KIND, fault=True: faulted with any kind."""
        with self._lock:
            recs = list(self._records)
        out = []
        for r in recs:
            if method is not None and r.method.upper() != method.upper():
                continue
            if path is not None and path not in r.target:
                continue
            if fault is True and r.fault is None:
                continue
            if fault is not Ellipsis and fault is not True and r.fault != fault:
                continue
            out.append(r)
        return out

    def seen(self, method=None, path=None):
        return len(self.requests(method, path))

    def injected(self, kind=None, method=None, path=None):
        return len(self.requests(method, path, fault=kind if kind else True))

    # ---- serving ----

    def _accept_loop(self):
        while not self._stop.is_set():
            with self._lock:
                ls = self._listener
            if ls is None:
                time.sleep(TICK)
                continue
            try:
                s, _ = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(TICK)
                continue
            s.settimeout(TICK)
            with self._lock:
                self._socks.add(s)
                self._threads = [t for t in self._threads if t.is_alive()]
                t = threading.Thread(target=self._serve, args=(s,), daemon=True,
                                     name=f"faultproxy-conn-{s.fileno()}")
                self._threads.append(t)
            t.start()

    def _serve(self, s):
        buf = bytearray()
        try:
            for _ in range(MAX_REQUESTS_PER_CONN):
                req = self._read_request(s, buf)
                if req is None:
                    return
                method, target, version, headers, body = req
                rule, rec = self._pick(method, target, headers)
                keep = self._handle(s, rule, method, target, headers, body)
                wants_close = any(k.lower() == "connection" and "close" in v.lower()
                                  for k, v in headers) or version == "HTTP/1.0"
                if not keep or wants_close or self._stop.is_set():
                    return
        except (_ClientGone, OSError, http.client.HTTPException, ValueError):
            return
        finally:
            with self._lock:
                self._socks.discard(s)
            try:
                s.close()
            except OSError:
                pass

    def _recv_more(self, s, buf, deadline):
        while True:
            if self._stop.is_set() or time.monotonic() > deadline:
                raise _ClientGone()
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise _ClientGone()
            buf += data
            return

    def _read_request(self, s, buf):
        deadline = time.monotonic() + IDLE_TIMEOUT
        try:
            while b"\r\n\r\n" not in buf:
                if len(buf) > MAX_HEADER_BYTES:
                    return None
                self._recv_more(s, buf, deadline)
        except _ClientGone:
            return None
        end = buf.index(b"\r\n\r\n")
        head = bytes(buf[:end]).decode("latin-1")
        del buf[:end + 4]
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return None
        method, target, version = parts
        headers = []
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if sep:
                headers.append((k.strip(), v.strip()))
        hget = {k.lower(): v for k, v in headers}
        if "100-continue" in hget.get("expect", "").lower():
            self._send(s, b"HTTP/1.1 100 Continue\r\n\r\n")
        deadline = time.monotonic() + UPSTREAM_TIMEOUT
        if "chunked" in hget.get("transfer-encoding", "").lower():
            body = self._read_chunked(s, buf, deadline)
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
            headers.append(("Content-Length", str(len(body))))
        else:
            n = int(hget.get("content-length", "0") or "0")
            if n > MAX_BODY_BYTES:
                return None
            while len(buf) < n:
                self._recv_more(s, buf, deadline)
            body = bytes(buf[:n])
            del buf[:n]
        return method, target, version, headers, body

    def _read_chunked(self, s, buf, deadline):
        body = bytearray()
        while len(body) <= MAX_BODY_BYTES:
            while b"\r\n" not in buf:
                self._recv_more(s, buf, deadline)
            i = buf.index(b"\r\n")
            size = int(bytes(buf[:i]).split(b";")[0].strip() or b"0", 16)
            del buf[:i + 2]
            while len(buf) < size + 2:
                self._recv_more(s, buf, deadline)
            body += buf[:size]
            del buf[:size + 2]
            if size == 0:
                return bytes(body)
        raise _ClientGone()

    def _forward(self, method, target, headers, body):
        """The upstream answer: (status, reason, headers, body)."""
        conn = http.client.HTTPConnection(*self.upstream, timeout=UPSTREAM_TIMEOUT)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                if k.lower() not in HOP_BY_HOP:
                    conn.putheader(k, v)
            conn.putheader("Connection", "close")
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = resp.read()
            rh = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
            bodyless = method.upper() == "HEAD" or resp.status in (204, 304) or \
                resp.status < 200
            if not bodyless:
                rh = [(k, v) for k, v in rh if k.lower() != "content-length"]
                rh.append(("Content-Length", str(len(data))))
            return resp.status, resp.reason, rh, data
        finally:
            conn.close()

    def _send(self, s, data):
        """Sends all of data, bounded by the stop flag and a deadline."""
        view = memoryview(data)
        deadline = time.monotonic() + UPSTREAM_TIMEOUT
        while view:
            if self._stop.is_set() or time.monotonic() > deadline:
                raise _ClientGone()
            _, w, _ = select.select([], [s], [], TICK)
            if not w:
                continue
            try:
                n = s.send(view)
            except (socket.timeout, BlockingIOError):
                continue
            view = view[n:]

    @staticmethod
    def _head_bytes(status, reason, headers):
        lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    @staticmethod
    def _reset(s):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()

    def _client_gone_within(self, s, seconds):
        """Waits up to seconds; True as soon as the client closed its side."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([s], [], [], min(TICK, left))
            if r:
                try:
                    if s.recv(1, socket.MSG_PEEK) == b"":
                        return True
                except socket.timeout:
                    pass
                except OSError:
                    return True
                time.sleep(min(TICK, max(0.0, deadline - time.monotonic())))
        return True

    def _handle(self, s, rule, method, target, headers, body):
        """Answers one request; returns whether the connection stays open."""
        p = rule.params if rule else {}
        kind = rule.kind if rule else None
        if kind == "status":
            status = int(p.get("status", 503))
            codes = S3_ERROR_CODES if self.style == "s3" else ERROR_CODES
            code = codes.get(status, "InternalError")
            xml = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
                   f'<Message>injected fault {status}</Message></Error>').encode()
            hs = [("Content-Type", "application/xml"), ("Content-Length", str(len(xml)))]
            if self.style != "s3":
                hs.append(("x-ms-error-code", code))
            if "retry_after" in p:
                hs.append(("Retry-After", str(p["retry_after"])))
            if "retry_after_ms" in p:
                hs.append(("x-ms-retry-after-ms", str(p["retry_after_ms"])))
            reason = http.client.responses.get(status, "Error")
            self._send(s, self._head_bytes(status, reason, hs) +
                      (b"" if method.upper() == "HEAD" else xml))
            return True
        if kind == "reset" and not p.get("forward", True):
            self._reset(s)
            return False
        if kind == "stall" and p.get("where", "headers") == "headers":
            if self._client_gone_within(s, float(p.get("seconds", 20))):
                return False
            kind = None
        status, reason, rh, data = self._forward(method, target, headers, body)
        head = self._head_bytes(status, reason, rh)
        cut = int(len(data) * float(p.get("fraction", 0.5)))
        if kind == "reset":
            if data:
                self._send(s, head + data[:cut])
            else:
                self._send(s, head[:len(head) // 2])
            self._reset(s)
            return False
        if kind == "truncate":
            self._send(s, head + data[:cut] if data else head[:len(head) // 2])
            s.shutdown(socket.SHUT_WR)
            return False
        if kind == "wrong_length":
            extra = int(p.get("extra", 1000))
            rh = [(k, v) for k, v in rh if k.lower() != "content-length"]
            rh.append(("Content-Length", str(len(data) + extra)))
            self._send(s, self._head_bytes(status, reason, rh) + data)
            s.shutdown(socket.SHUT_WR)
            return False
        if kind == "misplaced" and status == 206:
            shift = min(int(p.get("shift", 4096)), len(data) - 1)
            out = []
            for k, v in rh:
                m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", v.strip())
                if k.lower() == "content-range" and m:
                    v = f"bytes {int(m.group(1)) + shift}-{m.group(2)}/{m.group(3)}"
                elif k.lower() == "content-length":
                    v = str(len(data) - shift)
                out.append((k, v))
            self._send(s, self._head_bytes(status, reason, out) + data[shift:])
            return True
        if kind == "trickle":
            interval = float(p.get("interval", 1.0))
            for b in head + data:
                self._send(s, bytes([b]))
                if self._client_gone_within(s, interval):
                    return False
            return True
        if kind == "stall":
            self._send(s, head + data[:cut])
            rule.stalled += 1
            if self._client_gone_within(s, float(p.get("seconds", 20))):
                return False
            self._send(s, data[cut:])
            return True
        self._send(s, head + data)
        return True
