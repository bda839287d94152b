"""Fixtures for mount-level tests: a real local store, a real FUSE mount of it.

Every mount runs `artifactfs mount ... -f` as a child whose log goes to a file. The
fixture waits for the mount with a deadline, and always unmounts and stops the child,
also when the test fails. A test fails if the log has a WARN or ERROR line it did not
announce with `mount.expect_log(pattern)`.
"""
import contextlib
import copy
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("ARTIFACTFS_BIN", ROOT / "build" / "artifactfs"))
# A sanitized build stops at the first finding, with a stack trace in the log; a
# daemon's leaks are reported when it exits, and fail the test that mounted it.
os.environ.setdefault("ASAN_OPTIONS", "abort_on_error=1:detect_leaks=1")
os.environ.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
                   "runtime error:")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "build_only: checks the build and packaging (make install, make deb, "
        "units, manifests, man page), not the binary under test; the sanitized suite "
        "deselects them")


def wait_for(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


def run_cli(*args, check=True, store=None, env=None):
    """Runs the artifactfs command line (with the store's credentials in the
    environment); returns the CompletedProcess."""
    full_env = dict(os.environ)
    if store is not None:
        full_env.update(store.env)
    full_env.update(env or {})
    p = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True,
                       timeout=120, env=full_env)
    if check and p.returncode != 0:
        raise AssertionError(f"artifactfs {' '.join(map(str, args))} failed "
                             f"({p.returncode}): {p.stderr}")
    assert not any(mark in p.stderr for mark in SANITIZER_MARKS), p.stderr
    return p


class Store:
    """What every kind of store offers the tests: lay out blobs, read them back."""
    env = {}
    kind = None

    def settle(self):
        """Makes what mounts wrote listable by other mounts (only s3rver needs it)."""

    def register(self, name, source, *extra):
        return int(run_cli("register", self.url, name, source, *extra,
                           store=self).stdout.strip())

    def alias(self, *args):
        return run_cli("alias", self.url, *args, store=self)


class LocalStore(Store):
    kind = "local"

    def __init__(self, root: Path):
        self.root = root
        self.url = f"file://{root}"
        root.mkdir(parents=True, exist_ok=True)

    def put(self, key, data):
        """Writes a blob whole and atomically (a new file renamed into place)."""
        p = self.root / key
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode()
        tmp = p.parent / f".put-{os.getpid()}-{p.name}"
        tmp.write_bytes(data)
        os.replace(tmp, p)

    def get(self, key):
        return (self.root / key).read_bytes()

    def etag(self, key):
        st = os.stat(self.root / key)
        return '"%x-%x-%x.%09d"' % (st.st_ino, st.st_size, st.st_mtime_ns // 10**9,
                                    st.st_mtime_ns % 10**9)

    def mtime(self, key):
        return os.stat(self.root / key).st_mtime_ns // 10**9


class AzureStore(Store):
    kind = "azure"

    def __init__(self, port, container):
        from azure_client import AzureClient
        self.client = AzureClient("127.0.0.1", port)
        self.container = container
        self.client.create_container(container)
        self.url = f"http://127.0.0.1:{port}/devstoreaccount1/{container}"
        self.env = {"AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"}

    def put(self, key, data):
        if isinstance(data, str):
            data = data.encode()
        self.client.put(self.container, key, data)

    def get(self, key):
        return self.client.get(self.container, key)

    def etag(self, key):
        return self.client.etag(self.container, key)

    def mtime(self, key):
        from email.utils import parsedate_to_datetime
        st, h, _ = self.client._request("HEAD", f"/{self.container}/{key}")
        return int(parsedate_to_datetime(h["last-modified"]).timestamp())


class S3Store(Store):
    kind = "s3"

    def __init__(self, port, bucket):
        from s3_client import S3Client
        self.client = S3Client("127.0.0.1", port)
        self.bucket = bucket
        self.client.create_bucket(bucket)
        self.url = f"s3://{bucket}/"
        self.env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                    "AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER",
                    "AWS_EC2_METADATA_DISABLED": "true", "AWS_REGION": "us-east-1"}
        self.markers = set()

    def put(self, key, data):
        if isinstance(data, str):
            data = data.encode()
        # s3rver misses a folder more than one level above its first key unless a
        # marker names it (real S3 does not): fixtures make one per folder
        parts = key.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i]) + "/"
            if prefix not in self.markers:
                self.client.marker(self.bucket, prefix)
                self.markers.add(prefix)
        self.client.put(self.bucket, key, data)

    def get(self, key):
        return self.client.get(self.bucket, key)

    def keys(self, prefix):
        """Every key under prefix (folder markers left out), listed without a
        delimiter, page by page."""
        import xml.etree.ElementTree as ET
        out, token = [], None
        while True:
            q = {"list-type": "2", "prefix": prefix}
            if token:
                q["continuation-token"] = token
            st, _, body = self.client._request("GET", f"/{self.bucket}", q)
            assert st == 200, (st, body[:200])
            root = ET.fromstring(body)
            ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            out += [k.text for k in root.iter(f"{ns}Key") if not k.text.endswith("/")]
            nxt = root.find(f"{ns}NextContinuationToken")
            if nxt is None or not nxt.text:
                return sorted(out)
            token = nxt.text

    def settle(self):
        """Folder markers for what was written through a mount: s3rver lists a
        folder more than one level above its first key only with one."""
        for key in self.keys(""):
            parts = key.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                prefix = "/".join(parts[:i]) + "/"
                if prefix not in self.markers:
                    self.client.marker(self.bucket, prefix)
                    self.markers.add(prefix)

    def etag(self, key):
        st, h, _ = self.client.head(self.bucket, key)
        assert st == 200, st
        return h["etag"]

    def mtime(self, key):
        from email.utils import parsedate_to_datetime
        st, h, _ = self.client.head(self.bucket, key)
        return int(parsedate_to_datetime(h["last-modified"]).timestamp())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(name, where, argv, procs=None, env=None):
    """A server from argv (given its port) on a free loopback port, its log in
    where/NAME.log, yielding the port; stopped by its PID, also when the test fails.
    procs, a list, gets the server's Popen."""
    port = free_port()
    log = open(where / f"{name}.log", "wb")
    proc = subprocess.Popen(argv(port), stdout=log, stderr=subprocess.STDOUT, env=env)
    if procs is not None:
        procs.append(proc)

    def answers():
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited: {(where / f'{name}.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False
    try:
        wait_for(answers, 60, name)
        yield port
    finally:
        try:
            proc.send_signal(signal.SIGCONT)  # a test may have stopped it
        except ProcessLookupError:
            pass
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def installed(script):
    return subprocess.run([str(ROOT / "scripts" / script)], check=True, capture_output=True,
                          text=True).stdout.strip()


def running_azurite(where, *storage, procs=None):
    """Azurite (its data in where, or as storage says): see running_server."""
    azurite_bin = installed("install-azurite")
    return running_server("azurite", where, lambda port: [
        azurite_bin, "--blobHost", "127.0.0.1", "--blobPort", str(port),
        *(storage or ("--location", str(where))), "--silent", "--loose",
        "--skipApiVersionCheck", "--disableTelemetry"], procs=procs)


def running_s3rver(where):
    """s3rver (its data in where): see running_server. Its continuation tokens use a
    cipher OpenSSL 3 keeps in the legacy provider."""
    s3rver_bin = installed("install-s3rver")
    return running_server("s3rver", where, lambda port: [
        s3rver_bin, "-d", str(where), "-a", "127.0.0.1", "-p", str(port), "--silent"],
        env={**os.environ, "NODE_OPTIONS": "--openssl-legacy-provider"})


@pytest.fixture(scope="session")
def s3rver(tmp_path_factory):
    """s3rver for the whole session."""
    with running_s3rver(tmp_path_factory.mktemp("s3rver")) as port:
        yield port


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """Azurite for the whole session."""
    with running_azurite(tmp_path_factory.mktemp("azurite")) as port:
        yield port


@pytest.fixture
def proxy(azurite):
    """The fault-injecting proxy in front of the session's Azurite."""
    from faultproxy import FaultProxy
    p = FaultProxy(azurite).start()
    yield p
    p.stop()


@pytest.fixture
def via(azurite, proxy):
    """An Azure store whose URL goes through the proxy; put/get go to Azurite itself."""
    direct = AzureStore(azurite, f"t{uuid.uuid4().hex[:16]}")
    store = copy.copy(direct)
    store.url = f"http://127.0.0.1:{proxy.port}/devstoreaccount1/{direct.container}"
    return store


@pytest.fixture(params=["local", "azure", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    if request.param == "s3":
        return S3Store(request.getfixturevalue("s3rver"), f"t{uuid.uuid4().hex[:16]}")
    port = request.getfixturevalue("azurite")
    return AzureStore(port, f"t{uuid.uuid4().hex[:16]}")


class Mount:
    def __init__(self, store, path: Path, cache_dir: Path, args):
        self.store = store
        self.path = path
        self.cache_dir = cache_dir
        self.args = list(args)
        self.logfile = path.parent / f"{path.name}.log"
        self.proc = None
        self.expected = []
        self.env = {}

    def start(self):
        self.path.mkdir(parents=True, exist_ok=True)
        self.log_fh = open(self.logfile, "ab")
        self.proc = subprocess.Popen(
            [str(BIN), "mount", self.store.url, str(self.path), "--cache-dir",
             str(self.cache_dir), "-f", *self.args],
            stdout=self.log_fh, stderr=subprocess.STDOUT,
            env={**os.environ, **self.store.env, **self.env})

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"mount exited ({self.proc.returncode}): {self.log()}")
            return is_mounted(self.path)
        wait_for(up, 10, "the mount")
        return self

    def stop(self):
        if self.proc is None:
            return
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
        self.log_fh.close()

    def restart(self):
        self.stop()
        return self.start()

    def log(self):
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def expect_log(self, pattern):
        """Announces a WARN/ERROR line the test provokes on purpose."""
        self.expected.append(re.compile(pattern))

    def unexpected_log_lines(self):
        bad = []
        for line in self.log().splitlines():
            if any(mark in line for mark in SANITIZER_MARKS):
                bad.append(line)
            elif re.search(r": (WARN|ERROR): ", line) and \
                    not any(p.search(line) for p in self.expected):
                bad.append(line)
        return bad

    def __truediv__(self, rel):
        return self.path / rel


@pytest.fixture
def make_mount(tmp_path):
    mounts = []

    def make(store, *args, cache_dir=None, name="mnt", env=None):
        m = Mount(store, tmp_path / name, cache_dir or (tmp_path / "cache"), args)
        m.env = env or {}
        if store.kind == "s3":
            # s3rver ignores conditional requests: the mount says so once, on purpose
            m.expect_log(r"ignores conditional writes")
        mounts.append(m)
        return m.start()
    yield make
    problems = []
    for m in mounts:
        m.stop()
        problems += m.unexpected_log_lines()
    assert not problems, "unexpected WARN/ERROR lines in the mount log:\n" + "\n".join(problems)
