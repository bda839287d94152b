"""A store that goes away: the mount (through a fault proxy in front of Azurite, or of
s3rver with S3-shaped answers) first
reads and lists some of the store, then the store becomes unreachable, either killed
(every request reset before it is forwarded) or frozen like a SIGSTOPped server
(every request stalled, no byte ever answered). Everything cached keeps being served,
quickly, also by a new mount over the same cache folder; what is not cached fails
with EIO within a bounded time; and once the store is back the mount notices by
itself."""
import errno
import os
import re
import subprocess
import time

import pytest

import conftest
from conftest import is_mounted, wait_for

KiB = 1 << 10
ACCESS_MAX = 10.0      # one access to something cached
LS_R_MAX = 15.0        # ls -R of every cached folder
UNCACHED_MAX = 20.0    # EIO for what is not cached


FILES = {
    "runs/e/r1/a.bin": os.urandom(300 * KiB),
    "runs/e/r1/sub/b.txt": b"b of run 1\n",
    "runs/e/r1/sub/deeper/c.json": b'{"k": 1}\n',
    "runs/e/r2/d.bin": os.urandom(70 * KiB),
    "runs/e/r2/unread.bin": os.urandom(90 * KiB),
    "runs/other/x/never.bin": b"never listed, never read\n",
}
READ = ["runs/e/r1/a.bin", "runs/e/r1/sub/b.txt", "runs/e/r1/sub/deeper/c.json",
        "runs/e/r2/d.bin"]
MODEL_READ = {"models/m/1/a.bin": "runs/e/r1/a.bin",
              "models/m/1/sub/b.txt": "runs/e/r1/sub/b.txt",
              "models/m/latest/d.bin": "runs/e/r2/d.bin",
              "models/m/production/sub/deeper/c.json": "runs/e/r1/sub/deeper/c.json",
              "models/m/staging/d.bin": "runs/e/r2/d.bin"}
LINKS = {"models/m/latest": "2", "models/m/production": "1", "models/m/staging": "2"}
CACHED_DIRS = ["runs/e", "models/m"]


def timed(fn, *args):
    t0 = time.monotonic()
    out = fn(*args)
    return out, time.monotonic() - t0


def read(path):
    with open(path, "rb") as f:
        return f.read()


def ls_r(m):
    p = subprocess.run(["ls", "-R", *CACHED_DIRS], cwd=m.path, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def listings(m):
    return {d: sorted(os.listdir(m / d)) for d in
            ["", "runs", "runs/e", "runs/e/r1", "runs/e/r1/sub", "runs/e/r2", "models",
             "models/m", "models/m/1", "models/m/2"]}


def check_cached(m, want_ls, want_lists, what):
    """Everything cached is served exactly, each access within ACCESS_MAX."""
    slow = []
    for k in READ:
        got, took = timed(read, m / k)
        assert got == FILES[k], (what, k)
        slow += [(k, took)] if took >= ACCESS_MAX else []
    for k, src in MODEL_READ.items():
        got, took = timed(read, m / k)
        assert got == FILES[src], (what, k)
        slow += [(k, took)] if took >= ACCESS_MAX else []
    for k, target in LINKS.items():
        got, took = timed(os.readlink, m / k)
        assert got == target, (what, k, got)
        slow += [(k, took)] if took >= ACCESS_MAX else []
    for k in ["runs/e/r1/a.bin", "models/m/1/a.bin"]:
        st, took = timed(os.stat, m / k)
        assert st.st_size == len(FILES["runs/e/r1/a.bin"]), (what, k)
        slow += [(k, took)] if took >= ACCESS_MAX else []
    got, took = timed(listings, m)
    assert got == want_lists, what
    slow += [("listings", took)] if took >= ACCESS_MAX else []
    got, took = timed(ls_r, m)
    assert got == want_ls, what
    assert took < LS_R_MAX, (what, "ls -R", took)
    assert not slow, (what, slow)


def check_uncached(m, what):
    """What was never cached fails with EIO, each within UNCACHED_MAX."""
    for fn, k in [(read, "runs/e/r2/unread.bin"), (read, "models/m/2/unread.bin"),
                  (os.listdir, "runs/other"), (os.listdir, "runs/other/x")]:
        t0 = time.monotonic()
        with pytest.raises(OSError) as e:
            fn(m / k)
        took = time.monotonic() - t0
        assert e.value.errno == errno.EIO, (what, k, e.value)
        assert took < UNCACHED_MAX, (what, k, took)


@pytest.fixture(params=["azure", "s3"])
def behind(request):
    """(proxy, store): a store whose URL goes through the fault proxy; put and get go
    to the server itself."""
    if request.param == "azure":
        return request.getfixturevalue("proxy"), request.getfixturevalue("via")
    import uuid
    from faultproxy import FaultProxy
    port = request.getfixturevalue("s3rver")
    proxy = FaultProxy(port, style="s3").start()
    request.addfinalizer(proxy.stop)
    store = conftest.S3Store(port, f"t{uuid.uuid4().hex[:16]}")
    store.env = {**store.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
    return proxy, store


@pytest.mark.parametrize("how", ["killed", "stalled"])
def test_store_goes_away_and_comes_back(behind, make_mount, monkeypatch, how):
    proxy, via = behind
    for k, v in FILES.items():
        via.put(k, v)
    assert via.register("m", "runs/e/r1/", "--alias", "production") == 1
    assert via.register("m", "runs/e/r2/", "--alias", "staging") == 2
    m = make_mount(via, "--timeout", "5", "--ttl", "1")
    m.expect_log(r": WARN: [a-z_0-9]+: (GET|HEAD) \S+: giving up after \d+ attempts in ")
    m.expect_log(r": WARN: [a-z_0-9]+: the store is not answering \(")
    m.expect_log(r": ERROR: [a-z_0-9]+: /(runs|models)/\S+: the store failed: ")
    m.expect_log(r": WARN: [a-z_0-9]+: cannot reach the store at http://127\.0\.0\.1:\d+: "
                 r".*; serving what the cache holds until the store answers$")

    # online: read, list and follow what the test later wants from the cache
    for k in READ:
        assert read(m / k) == FILES[k]
    for k, src in MODEL_READ.items():
        assert read(m / k) == FILES[src]
    want_ls = ls_r(m)
    want_lists = listings(m)
    assert want_lists["models/m"] == ["1", "2", "latest", "production", "staging"]
    assert want_lists["runs"] == ["e", "other"]
    assert want_lists["runs/e/r2"] == ["d.bin", "unread.bin"]
    assert "deeper" in want_ls and "c.json" in want_ls
    for k, target in LINKS.items():
        assert os.readlink(m / k) == target

    if how == "killed":
        down = proxy.fail_always("reset", forward=False)
    else:
        down = proxy.fail_always("stall", seconds=600, where="headers")
    time.sleep(1.5)   # past the TTL: every listing, alias table and pin asks the store

    check_cached(m, want_ls, want_lists, f"{how}, same mount")
    check_uncached(m, f"{how}, same mount")
    assert down.injected >= 1
    recs = proxy.requests()
    first = next(i for i, r in enumerate(recs) if r.fault)
    assert all(r.fault for r in recs[first:]), "a request reached the store"
    assert m.proc.poll() is None and is_mounted(m.path)

    # a new mount over the same cache while the store is still away, with the
    # default --timeout (60 s): the check of a store the cache knows gives up sooner
    m.args = [a for a in m.args if a not in ("--timeout", "5")]
    real_wait_for = conftest.wait_for
    monkeypatch.setattr(conftest, "wait_for", lambda cond, timeout=10.0, what="":
                        real_wait_for(cond, max(timeout, 30.0), what))
    _, took = timed(m.restart)
    monkeypatch.setattr(conftest, "wait_for", real_wait_for)
    print(f"\n{how}: the new mount took {took:.1f} s to come up")
    assert took < 15, took
    assert "serving what the cache holds until the store answers" in m.log()
    check_cached(m, want_ls, want_lists, f"{how}, new mount")
    check_uncached(m, f"{how}, new mount")
    assert m.proc.poll() is None and is_mounted(m.path)
    assert all(r.fault for r in proxy.requests()[first:]), "a request reached the store"

    # the store is back: the mount notices by itself
    before = len(proxy.requests(fault=None))
    proxy.clear(down)

    def reads_again():
        try:
            return read(m / "runs/e/r2/unread.bin") == FILES["runs/e/r2/unread.bin"]
        except OSError as e:
            assert e.errno == errno.EIO, e
            return False
    t0 = time.monotonic()
    wait_for(reads_again, 30, "the mount to recover by itself")
    print(f"\n{how}: recovered {time.monotonic() - t0:.1f} s after the store came back")
    assert len(proxy.requests(fault=None)) > before
    assert read(m / "models/m/2/unread.bin") == FILES["runs/e/r2/unread.bin"]
    assert sorted(os.listdir(m / "runs/other/x")) == ["never.bin"]
    assert read(m / "runs/other/x/never.bin") == FILES["runs/other/x/never.bin"]
    wait_for(lambda: re.search(r": INFO: [a-z_0-9]+: the store answers again$", m.log(),
                               re.M), 5,
             "the log to say the store answers again")
    check_cached(m, want_ls, want_lists, f"{how}, back online")
