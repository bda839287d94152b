"""Fixtures for mount-level tests: a real local store, a real FUSE mount of it.

Every mount runs `artifactfs mount ... -f` as a child whose log goes to a file. The
fixture waits for the mount with a deadline, and always unmounts and stops the child,
also when the test fails. A test fails if the log has a WARN or ERROR line it did not
announce with `mount.expect_log(pattern)`.
"""
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "build" / "artifactfs"


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


def run_cli(*args, check=True, env=None):
    """Runs the artifactfs command line; returns the CompletedProcess."""
    p = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True,
                       timeout=120, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"artifactfs {' '.join(map(str, args))} failed "
                             f"({p.returncode}): {p.stderr}")
    return p


class Store:
    """A local store folder with helpers to lay out runs and registry records."""

    def __init__(self, root: Path):
        self.root = root
        self.url = f"file://{root}"
        root.mkdir(parents=True, exist_ok=True)

    def put(self, key, data):
        p = self.root / key
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode()
        p.write_bytes(data)
        return p

    def path(self, key):
        return self.root / key

    def register(self, name, source, *extra):
        return int(run_cli("register", self.url, name, source, *extra).stdout.strip())


class Mount:
    def __init__(self, store, path: Path, cache_dir: Path, args):
        self.store = store
        self.path = path
        self.cache_dir = cache_dir
        self.args = list(args)
        self.logfile = path.parent / f"{path.name}.log"
        self.proc = None
        self.expected = []

    def start(self):
        self.path.mkdir(parents=True, exist_ok=True)
        self.log_fh = open(self.logfile, "ab")
        self.proc = subprocess.Popen(
            [str(BIN), "mount", self.store.url, str(self.path), "--cache-dir",
             str(self.cache_dir), "-f", *self.args],
            stdout=self.log_fh, stderr=subprocess.STDOUT)

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
            if re.search(r": (WARN|ERROR): ", line) and \
                    not any(p.search(line) for p in self.expected):
                bad.append(line)
        return bad

    def __truediv__(self, rel):
        return self.path / rel


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store")


@pytest.fixture
def make_mount(tmp_path):
    mounts = []

    def make(store, *args, cache_dir=None, name="mnt"):
        m = Mount(store, tmp_path / name, cache_dir or (tmp_path / "cache"), args)
        mounts.append(m)
        return m.start()
    yield make
    problems = []
    for m in mounts:
        m.stop()
        problems += m.unexpected_log_lines()
    assert not problems, "unexpected WARN/ERROR lines in the mount log:\n" + "\n".join(problems)
