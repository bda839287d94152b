"""Fleet fan-out through a standard caching proxy: nginx from Debian's packages with
deploy/nginx-proxy.conf (filled with envsubst, as an operator fills it) in front of
Azurite, a relay between them counting what the store sends. Several mounts, each
with a cache folder of its own, read one cold registered file at once through the
proxy; the store sends its bytes about once. The proxy dies in the middle of the
reads: every read completes, through the next group (DIRECT). A proxy that fails is
set aside for a while, then tried again."""
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

import conftest
from conftest import AzureStore, wait_for
from relay import CountingRelay

MiB = 1 << 20
# the loopback proof runs with 1 GiB (docs/fleet.md); CI with less
SIZE = int(os.environ.get("ARTIFACTFS_FLEET_MIB", "128")) * MiB
MOUNTS = 8


class Nginx:
    """nginx -c deploy/nginx-proxy.conf, its values filled with envsubst."""

    def __init__(self, store_port, sas):
        assert shutil.which("nginx"), "nginx: scripts/install-deps --test installs it"
        self.dir = tempfile.mkdtemp(prefix="artifactfs-nginx-", dir="/var/tmp")
        os.chmod(self.dir, 0o755)
        shutil.chown(self.dir, "www-data")
        self.port = conftest.free_port()
        env = {**os.environ, "STORE_URL": f"http://127.0.0.1:{store_port}",
               "LISTEN": f"127.0.0.1:{self.port}", "CACHE_DIR": self.dir, "SAS": sas}
        conf = subprocess.run(
            ["envsubst", "${STORE_URL} ${LISTEN} ${CACHE_DIR} ${SAS}"],
            stdin=open(conftest.ROOT / "deploy" / "nginx-proxy.conf"), capture_output=True,
            text=True, env=env, check=True).stdout
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        subprocess.run(["nginx", "-t", "-q", "-c", self.conf], check=True)
        # its own process group: the master and its workers die together
        self.proc = subprocess.Popen(["nginx", "-c", self.conf, "-g", "daemon off;"],
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        import socket

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                return False
        wait_for(up, 20, "nginx")
        self.url = f"http://127.0.0.1:{self.port}"

    def kill(self):
        """Dies at once, workers too: connections reset, the port refuses."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def stop(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def fleet(azurite):
    """Azurite behind a counting relay; a container with a SAS for the proxy; nginx."""
    relay = CountingRelay(azurite)
    direct = AzureStore(azurite, f"t{uuid.uuid4().hex[:16]}")
    store = AzureStore.__new__(AzureStore)
    store.__dict__.update(direct.__dict__)
    store.url = f"http://127.0.0.1:{relay.port}/devstoreaccount1/{direct.container}"
    nginx = Nginx(relay.port, direct.client.container_sas(direct.container))
    try:
        yield store, relay, nginx
    finally:
        nginx.stop()
        relay.stop()


def big_file(store, key):
    data = os.urandom(SIZE)
    store.put(key, data)
    return hashlib.sha256(data).hexdigest()


def read_all(paths):
    """Reads every path at once (one thread each); their sha256."""
    out = [None] * len(paths)

    def one(i):
        h = hashlib.sha256()
        with open(paths[i], "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        out[i] = h.hexdigest()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    return out


def test_fleet_reads_a_version_once_through_the_proxy(fleet, make_mount, tmp_path):
    store, relay, nginx = fleet
    digest = big_file(store, "runs/e/r/model.bin")
    assert store.register("m", "runs/e/r/") == 1
    store.alias("m", "production", "1")
    mounts = [make_mount(store, "--proxy", f"{nginx.url};DIRECT", "--ttl", "1",
                         name=f"n{i}", cache_dir=tmp_path / f"cache{i}") for i in range(MOUNTS)]
    for m in mounts:
        assert os.listdir(m / "models/m/production") == ["model.bin"]
    before = relay.sent
    t0 = time.monotonic()
    assert read_all([m / "models/m/1/model.bin" for m in mounts]) == [digest] * MOUNTS
    took = time.monotonic() - t0
    sent = relay.sent - before
    print(f"\n{MOUNTS} mounts, {SIZE // MiB} MiB through nginx: store sent {sent} bytes "
          f"({sent / SIZE:.3f}x) in {took:.1f} s")
    assert sent <= 1.02 * SIZE, sent
    # aliases and listings are not the proxy's: a change is seen within the TTL
    store.register("m", "runs/e/r/")
    store.alias("m", "production", "2")
    for m in mounts[:2]:
        wait_for(lambda: os.readlink(m / "models/m/production") == "2", 5, "the new alias")


def test_reads_go_on_when_the_proxy_dies(fleet, make_mount, tmp_path):
    store, relay, nginx = fleet
    digest = big_file(store, "runs/e/r/model.bin")
    assert store.register("m", "runs/e/r/") == 1
    mounts = [make_mount(store, "--proxy", f"{nginx.url};DIRECT", name=f"n{i}",
                         cache_dir=tmp_path / f"cache{i}") for i in range(4)]
    for m in mounts:
        m.expect_log(r"proxy http://127\.0\.0\.1:\d+ failed")
        assert os.listdir(m / "models/m/1") == ["model.bin"]
    out = []
    t = threading.Thread(target=lambda: out.append(
        read_all([m / "models/m/1/model.bin" for m in mounts])))
    t.start()
    wait_for(lambda: relay.sent > SIZE // 4, 60, "a quarter of the file through the proxy")
    nginx.kill()
    t.join(timeout=600)
    assert out == [[digest] * 4]
    assert all("set aside" in m.log() for m in mounts)


def test_a_failed_proxy_is_set_aside_then_tried_again(azurite, make_mount):
    from faultproxy import FaultProxy
    store = AzureStore(azurite, f"t{uuid.uuid4().hex[:16]}")
    for i in range(3):
        store.put(f"runs/e/r/f{i}.bin", os.urandom(MiB))
    p1 = FaultProxy(azurite).start()
    try:
        p1.fail_always("status", status=503)
        m = make_mount(store, "--proxy", f"http://127.0.0.1:{p1.port};DIRECT",
                       env={"ARTIFACTFS_PROXY_SET_ASIDE_S": "4"})
        m.expect_log(r"proxy http://127\.0\.0\.1:\d+ failed \(HTTP 503\); set aside for 4 s")
        t0 = time.monotonic()
        assert len(open(m / "runs/e/r/f0.bin", "rb").read()) == MiB   # p1 fails: DIRECT
        assert p1.seen(method="GET") == 1
        assert len(open(m / "runs/e/r/f1.bin", "rb").read()) == MiB   # p1 set aside
        assert p1.seen(method="GET") == 1
        assert time.monotonic() - t0 < 4
        time.sleep(4.5 - (time.monotonic() - t0))
        assert len(open(m / "runs/e/r/f2.bin", "rb").read()) == MiB   # tried again
        assert p1.seen(method="GET") == 2
        # what the proxy was asked: the store's path, the version, no credential
        req = [r for r in p1.requests(method="GET")][0]
        assert "?v=%22" in req.target and "sig=" not in req.target
    finally:
        p1.stop()
