"""A reader never waits on the store for what the cache holds.

The mount (--ttl 1, the default --timeout of 60 s) reads, lists and follows a run and a
registered model; then the store fails in one of the ways stores fail: it never
answers (a stalled proxy, or Azurite itself stopped with SIGSTOP), it refuses
connections, it answers 503 or 500 to everything, or its answers trickle in a byte a
second. Past the TTL, with the kernel's caches dropped, every cached path (lookup,
getattr, readdir, readlink, open and read; runs/ and models/, by version, alias and
latest) is served byte-exact, each access long before the timeout. Meanwhile an alias
moves in the store; once the store is back, the mount shows the move within a few
TTLs, by itself.
"""
import errno
import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import AzureStore, LocalStore, running_azurite, run_cli, wait_for

KiB = 1 << 10
TIMEOUT = 60           # the default --timeout
ACCESS_MAX = TIMEOUT / 4

FILES = {
    "runs/e/r1/model.pth": os.urandom(300 * KiB),
    "runs/e/r1/conf/cfg.json": b'{"lr": 0.1}\n',
    "runs/e/r2/model.pth": os.urandom(200 * KiB),
    "runs/e/r2/unread.bin": os.urandom(50 * KiB),
}
READ = {  # path in the mount: the file whose bytes it has
    "runs/e/r1/model.pth": "runs/e/r1/model.pth",
    "runs/e/r1/conf/cfg.json": "runs/e/r1/conf/cfg.json",
    "runs/e/r2/model.pth": "runs/e/r2/model.pth",
    "models/m/1/model.pth": "runs/e/r1/model.pth",
    "models/m/production/model.pth": "runs/e/r1/model.pth",
    "models/m/production/conf/cfg.json": "runs/e/r1/conf/cfg.json",
    "models/m/latest/model.pth": "runs/e/r2/model.pth",
    "models/m/staging/model.pth": "runs/e/r2/model.pth",
}
LINKS = {"models/m/latest": "2", "models/m/production": "1", "models/m/staging": "2"}
FOLDERS = ["", "runs", "runs/e", "runs/e/r1", "runs/e/r1/conf", "runs/e/r2", "models",
           "models/m", "models/m/1", "models/m/2", "models/m/production"]

# what a failing store makes the mount say
FAILING_LOG = [r": WARN: [a-z_0-9]+: (GET|HEAD) \S+: giving up after \d+ attempts in ",
               r": WARN: [a-z_0-9]+: the store is not answering \(",
               r": ERROR: [a-z_0-9]+: /runs/e/r2/unread\.bin: the store failed: "]


def drop_kernel_caches():
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def lay_out(store):
    for k, v in FILES.items():
        store.put(k, v)
    assert store.register("m", "runs/e/r1/", "--alias", "production") == 1
    assert store.register("m", "runs/e/r2/", "--alias", "staging") == 2


def learn(m):
    """Reads, lists and follows everything once, online; returns what it saw."""
    for k, src in READ.items():
        assert read(m / k) == FILES[src], k
    for k, target in LINKS.items():
        assert os.readlink(m / k) == target
    return {d: sorted(os.listdir(m / d)) for d in FOLDERS}


def served_from_cache(m, lists, what):
    """Every cached path answers exactly, each access within ACCESS_MAX seconds."""
    slow = []

    def timed(name, fn, *args):
        t0 = time.monotonic()
        out = fn(*args)
        took = time.monotonic() - t0
        if took >= ACCESS_MAX:
            slow.append((name, round(took, 1)))
        return out
    for k, src in READ.items():
        assert timed(k, read, m / k) == FILES[src], (what, k)
        assert timed(k, os.stat, m / k).st_size == len(FILES[src]), (what, k)
    for k, target in LINKS.items():
        assert timed(k, os.readlink, m / k) == target, (what, k)
    for d, names in lists.items():
        assert sorted(timed(d, os.listdir, m / d)) == names, (what, d)
    assert not slow, (what, slow)


def moved_alias_seen(m, store_url, store, what):
    """An alias moved while the store failed shows once the store is back."""
    def follows():
        try:
            return os.readlink(m / "models/m/production") == "2"
        except OSError as e:
            assert e.errno == errno.EIO, (what, e)
            return False
    wait_for(follows, 45, f"{what}: the moved alias to show")
    assert read(m / "models/m/production/model.pth") == FILES["runs/e/r2/model.pth"]
    assert read(m / "runs/e/r2/unread.bin") == FILES["runs/e/r2/unread.bin"]


FAULTS = {
    "never answers": dict(kind="stall", seconds=600, where="headers"),
    "refuses connections": None,
    "503 to everything": dict(kind="status", status=503),
    "500 to everything": dict(kind="status", status=500),
    "trickles a byte a second": dict(kind="trickle", interval=1.0),
}


@pytest.mark.parametrize("how", list(FAULTS))
def test_cached_paths_never_wait_on_a_failing_store(proxy, via, make_mount, how):
    lay_out(via)
    m = make_mount(via, "--ttl", "1")
    for p in FAILING_LOG:
        m.expect_log(p)
    lists = learn(m)
    assert lists["models/m"] == ["1", "2", "latest", "production", "staging"]

    fault = FAULTS[how]
    if fault is None:
        proxy.refuse()
    else:
        params = dict(fault)
        rule = proxy.fail_always(params.pop("kind"), **params)
    time.sleep(1.5)  # past the TTL: listings, records, aliases and pins are stale
    drop_kernel_caches()
    direct = f"http://127.0.0.1:{via.client.port}/devstoreaccount1/{via.container}"
    run_cli("alias", direct, "m", "production", "2", store=via)

    served_from_cache(m, lists, how)
    served_from_cache(m, lists, f"{how}, again")
    if fault is not None:
        assert rule.injected >= 1, how
    if how == "never answers":
        # not cached: EIO, within the bounds of the store's deadline
        t0 = time.monotonic()
        with pytest.raises(OSError) as e:
            read(m / "runs/e/r2/unread.bin")
        assert e.value.errno == errno.EIO
        assert time.monotonic() - t0 < TIMEOUT + 15

    if fault is None:
        proxy.accept_again()
    else:
        proxy.clear(rule)
    moved_alias_seen(m, direct, via, how)
    assert m.proc.poll() is None


def test_cached_paths_never_wait_on_a_stopped_azurite(tmp_path, make_mount):
    """Azurite itself frozen with SIGSTOP: it accepts connections, never answers."""
    procs = []
    with running_azurite(tmp_path, procs=procs) as port:
        store = AzureStore(port, "frozen")
        lay_out(store)
        m = make_mount(store, "--ttl", "1")
        for p in FAILING_LOG:
            m.expect_log(p)
        lists = learn(m)
        os.kill(procs[0].pid, signal.SIGSTOP)
        try:
            time.sleep(1.5)
            drop_kernel_caches()
            served_from_cache(m, lists, "SIGSTOP")
            served_from_cache(m, lists, "SIGSTOP, again")
        finally:
            os.kill(procs[0].pid, signal.SIGCONT)
        store.alias("m", "production", "2")
        moved_alias_seen(m, store.url, store, "SIGCONT")
        m.stop()


def test_a_healthy_store_still_gives_fresh_answers_after_the_ttl(store, make_mount):
    lay_out(store)
    m = make_mount(store, "--ttl", "1")
    assert os.readlink(m / "models/m/production") == "1"
    assert sorted(os.listdir(m / "runs/e")) == ["r1", "r2"]
    store.alias("m", "production", "2")
    store.put("runs/e/r3/new.txt", b"new\n")
    wait_for(lambda: os.readlink(m / "models/m/production") == "2", 10, "the alias move")
    wait_for(lambda: sorted(os.listdir(m / "runs/e")) == ["r1", "r2", "r3"], 10,
             "the new run")
    assert read(m / "runs/e/r3/new.txt") == b"new\n"


def test_a_second_mount_over_a_used_cache_folder_is_refused(make_mount, tmp_path):
    store = LocalStore(tmp_path / "store")
    store.put("runs/e/r/a.txt", b"a\n")
    first = make_mount(store)
    other = tmp_path / "other"
    other.mkdir()
    p = run_cli("mount", store.url, other, "--cache-dir", first.cache_dir, "-f",
                check=False, store=store)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "in use" in lines[0] and str(first.path) in lines[0], lines[0]
    assert str(first.proc.pid) in lines[0], lines[0]
    assert read(first / "runs/e/r/a.txt") == b"a\n"

    # the lock dies with its holder: after kill -9, a new mount over the folder works
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait(timeout=10)
    subprocess.run(["fusermount3", "-u", "-z", str(first.path)], check=True)
    first.proc = None
    first.log_fh.close()
    second = make_mount(store, cache_dir=first.cache_dir, name="second")
    assert read(second / "runs/e/r/a.txt") == b"a\n"


def test_a_mount_right_after_umount_waits_for_the_daemon_on_its_way_out(make_mount,
                                                                        tmp_path):
    """The lock of a daemon whose mount is gone (it is finishing) is waited for; the
    lock of one whose mount is there refuses at once."""
    import fcntl
    store = LocalStore(tmp_path / "store")
    store.put("runs/e/r/a.txt", b"a\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    for point, late in ((tmp_path / "gone", True), ("/", False)):
        fd = os.open(cache / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"the mount on {point} (pid 12345)\n".encode())
        t0 = time.monotonic()
        threading.Timer(1.0, os.close, (fd,)).start()
        if late:
            m = make_mount(store, cache_dir=cache)
            assert time.monotonic() - t0 >= 0.9
            assert read(m / "runs/e/r/a.txt") == b"a\n"
            m.stop()
        else:
            (tmp_path / "other").mkdir()
            p = run_cli("mount", store.url, tmp_path / "other", "--cache-dir", cache, "-f",
                        check=False, store=store)
            assert p.returncode == 2 and "in use by the mount on / (pid 12345)" in p.stderr
            assert time.monotonic() - t0 < 0.9
            time.sleep(1.2)


def test_unmount_does_not_wait_out_a_stalled_store(proxy, via, make_mount):
    """Requests waiting on a store that never answers are abandoned at unmount: the
    daemon exits (and frees its cache folder) long before the 60 s deadline."""
    lay_out(via)
    m = make_mount(via, "--ttl", "1")
    lists = learn(m)
    rule = proxy.fail_always("stall", seconds=600, where="headers")
    time.sleep(1.5)
    drop_kernel_caches()
    assert sorted(os.listdir(m / "runs/e")) == lists["runs/e"]  # starts a refresh
    wait_for(lambda: rule.injected >= 1, 10, "a request to stall")
    subprocess.run(["fusermount3", "-u", str(m.path)], check=True)
    t0 = time.monotonic()
    assert m.proc.wait(timeout=TIMEOUT / 4) == 0
    assert time.monotonic() - t0 < TIMEOUT / 4
    m.proc = None
    m.log_fh.close()
    proxy.clear(rule)
    # the folder is free again at once
    again = make_mount(via, cache_dir=m.cache_dir, name="again")
    assert read(again / "runs/e/r1/model.pth") == FILES["runs/e/r1/model.pth"]
