"""Writes through a --writable mount: what training jobs do to save their outputs.

Every test checks the bytes in the store itself (read from the local folder or from
Azurite directly), not only through the mount that wrote them, and where it matters
through a second mount with its own cache. Faults go through the fault proxy in front
of Azurite, and each test checks that the faults it armed fired.
"""
import errno
import hashlib
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ET

import pytest
import torch  # Debian's python3-torch: the tests run with /usr/bin/python3

from conftest import LocalStore, is_mounted, run_cli, wait_for

MiB = 1 << 20
RUN = "runs/pytorch-birds/run-43"


def sha(data):
    return hashlib.sha256(data).hexdigest()


def store_keys(store, prefix):
    """Every blob key under prefix, from the store itself."""
    if isinstance(store, LocalStore):
        root = store.root / prefix
        if not root.exists():
            return []
        return sorted(str(p.relative_to(store.root)) for p in root.rglob("*") if p.is_file())
    if store.kind == "s3":
        return store.keys(prefix)
    st, _, body = store.client._request(
        "GET", f"/{store.container}",
        {"restype": "container", "comp": "list", "prefix": prefix})
    assert st == 200, (st, body[:200])
    return sorted(n.text for n in ET.fromstring(body).iter("Name"))


def store_get(store, key):
    try:
        return store.get(key)
    except (FileNotFoundError, AssertionError):
        return None


def staged_files(cache_dir):
    d = cache_dir / "staging"
    return sorted(p for p in d.iterdir() if not p.name.endswith(".key")) if d.exists() else []


@pytest.fixture
def wstore(store):
    store.put("runs/seed/r/seed.txt", b"seed")  # the store has a runs/ folder
    return store


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(256, 512)
        self.fc2 = torch.nn.Linear(512, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def equal(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    return a == b


def test_torch_saves_load_back_through_this_mount_and_another(wstore, make_mount, tmp_path):
    m = make_mount(wstore, "--writable")
    out = m / RUN / "outputs"
    os.makedirs(out)
    torch.manual_seed(3)
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(4, 256)).sum().backward()
    opt.step()
    ckpt = {"epoch": 3, "model": net.state_dict(), "optimizer": opt.state_dict(),
            "big": torch.randn(6_000_000)}  # 24 MB: uploaded in parts
    torch.save(net.state_dict(), out / "model.pth")
    torch.save(ckpt, out / "checkpoint.pt")
    torch.save(net, out / "full.pt")
    torch.jit.script(net).save(str(out / "scripted.pt"))
    local = tmp_path / "local"
    local.mkdir()
    torch.save(ckpt, local / "checkpoint.pt")

    assert sorted(os.listdir(out)) == ["checkpoint.pt", "full.pt", "model.pth", "scripted.pt"]
    wstore.settle()
    other = make_mount(wstore, cache_dir=tmp_path / "cache2", name="mnt2")
    for mnt in (m, other):
        o = mnt / RUN / "outputs"
        assert equal(torch.load(o / "model.pth"), net.state_dict())
        got = torch.load(o / "checkpoint.pt")
        assert equal(got["model"], ckpt["model"]) and equal(got["big"], ckpt["big"])
        assert got["optimizer"]["state"].keys() == ckpt["optimizer"]["state"].keys()
        full = torch.load(o / "full.pt", weights_only=False)
        assert equal(full.state_dict(), net.state_dict())
        x = torch.randn(2, 256)
        assert torch.equal(torch.jit.load(str(o / "scripted.pt"))(x), net(x))
    # the store holds exactly what the file APIs wrote
    for name in ("model.pth", "checkpoint.pt", "full.pt", "scripted.pt"):
        assert store_get(wstore, f"{RUN}/outputs/{name}") == (out / name).read_bytes()
    assert os.path.getsize(out / "checkpoint.pt") == os.path.getsize(local / "checkpoint.pt")
    assert staged_files(m.cache_dir) == []  # uploaded and closed: nothing kept


def test_save_register_and_load_on_a_read_only_mount(wstore, make_mount, tmp_path):
    m = make_mount(wstore, "--writable")
    out = m / RUN / "outputs"
    os.makedirs(out)
    torch.manual_seed(5)
    net = Net()
    torch.save(net.state_dict(), out / "model.pth")
    np = pytest.importorskip("numpy")
    np.save(out / "stats.npy", np.arange(1000, dtype=np.float64))
    assert wstore.register("birds", f"{RUN}/outputs/") == 1
    wstore.settle()
    ro = make_mount(wstore, cache_dir=tmp_path / "cache2", name="mnt2")
    got = ro / "models/birds/latest"
    assert (got / "model.pth").read_bytes() == (out / "model.pth").read_bytes()
    assert equal(torch.load(got / "model.pth"), net.state_dict())
    assert np.load(got / "stats.npy").tolist() == list(range(1000))
    with pytest.raises(OSError) as e:
        open(ro / RUN / "outputs/new.txt", "wb")
    assert e.value.errno == errno.EROFS


def test_read_only_by_default_and_outside_runs(wstore, make_mount):
    wstore.put("runs/e/r/a.txt", b"a")
    ro = make_mount(wstore)
    for op in (lambda: open(ro / "runs/e/r/a.txt", "r+b"),
               lambda: open(ro / "runs/e/r/b.txt", "wb"),
               lambda: os.mkdir(ro / "runs/e/r2"),
               lambda: os.unlink(ro / "runs/e/r/a.txt"),
               lambda: os.truncate(ro / "runs/e/r/a.txt", 0)):
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == errno.EROFS
    ro.stop()
    assert wstore.register("m", "runs/e/r/") == 1
    rw = make_mount(wstore, "--writable", name="rw")
    # the modes say so, in a listing of the top (ls -l) as in a lookup
    top = subprocess.run(["ls", "-l", str(rw.path)], capture_output=True, text=True,
                         check=True).stdout
    assert re.search(r"^drwxr-xr-x .* runs$", top, re.M) and \
        re.search(r"^dr-xr-xr-x .* models$", top, re.M), top
    assert stat.S_IMODE(os.stat(rw / "runs").st_mode) == 0o755
    for op in (lambda: open(rw / "models/m/1/a.txt", "r+b"),
               lambda: open(rw / "models/m/1/new.txt", "wb"),
               lambda: os.mkdir(rw / "models/x"),
               lambda: os.mkdir(rw / "top"),
               lambda: open(rw / "top.txt", "wb"),
               lambda: os.rename(rw / "runs/e/r/a.txt", rw / "models/m/a.txt"),
               lambda: os.unlink(rw / "models/m/1/a.txt")):
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == errno.EROFS, op
    assert store_get(wstore, "runs/e/r/a.txt") == b"a"


@pytest.mark.parametrize("store", ["local"], indirect=True)
def test_with_allow_other_others_read_and_only_the_owner_writes(wstore, make_mount, tmp_path):
    wstore.put(f"{RUN}/a.txt", b"shared")
    # a mount point other users can reach (tmp_path's parents are root's only)
    point = tempfile.mkdtemp(prefix="artifactfs-others.")
    os.chmod(point, 0o755)
    m = make_mount(wstore, "--writable", "-o", "allow_other", name=point)

    def as_nobody(*argv):
        return subprocess.run(argv, capture_output=True, text=True,
                              preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)))
    assert as_nobody("cat", str(m / RUN / "a.txt")).stdout == "shared"
    p = as_nobody("sh", "-c", f"echo x > {m / RUN / 'theirs.txt'}")
    assert p.returncode != 0 and "Permission denied" in p.stderr, p
    p = as_nobody("rm", "-f", str(m / RUN / "a.txt"))
    assert p.returncode != 0 and "Permission denied" in p.stderr, p
    (m / RUN / "mine.txt").write_bytes(b"mine")
    assert store_get(wstore, f"{RUN}/mine.txt") == b"mine"
    assert store_keys(wstore, f"{RUN}/") == [f"{RUN}/a.txt", f"{RUN}/mine.txt"]
    m.stop()
    os.rmdir(point)


def test_cp_r_of_many_small_files_and_cp_p(wstore, make_mount, tmp_path):
    src = tmp_path / "src"
    files = {}
    for i in range(500):
        rel = f"d{i % 7}/f{i:03d}.bin"
        files[rel] = os.urandom(random.Random(i).randrange(0, 3000))
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(files[rel])
    m = make_mount(wstore, "--writable")
    os.makedirs(m / RUN)
    subprocess.run(["cp", "-r", str(src), str(m / RUN / "copy")], check=True)
    subprocess.run(["cp", "-p", str(src / "d0/f000.bin"), str(m / RUN / "kept.bin")],
                   check=True)
    keys = store_keys(wstore, f"{RUN}/copy/")
    assert keys == sorted(f"{RUN}/copy/{rel}" for rel in files)
    for rel, data in list(files.items())[::25]:
        assert store_get(wstore, f"{RUN}/copy/{rel}") == data
        assert (m / RUN / "copy" / rel).read_bytes() == data
    assert store_get(wstore, f"{RUN}/kept.bin") == files["d0/f000.bin"]
    os.chmod(m / RUN / "kept.bin", 0o600)  # succeeds, changes nothing
    os.utime(m / RUN / "kept.bin", (0, 0))
    du = subprocess.run(["du", "-sb", str(m / RUN / "copy")], capture_output=True,
                        check=True).stdout.split()[0]
    assert int(du) == sum(len(d) for d in files.values())  # folders count 0 bytes
    assert sum(os.path.getsize(m / RUN / "copy" / rel) for rel in files) == \
        sum(len(d) for d in files.values())


def test_rsync_a_and_again_with_changes(wstore, make_mount, tmp_path):
    src = tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(os.urandom(3 * MiB))
    (src / "sub/b.txt").write_bytes(b"b" * 100)
    m = make_mount(wstore, "--writable")
    os.makedirs(m / RUN)
    for _ in range(2):
        subprocess.run(["rsync", "-a", f"{src}/", str(m / RUN / "synced")], check=True,
                       capture_output=True)
        for rel in ("a.bin", "sub/b.txt"):
            assert store_get(wstore, f"{RUN}/synced/{rel}") == (src / rel).read_bytes()
        assert store_keys(wstore, f"{RUN}/synced/") == [f"{RUN}/synced/a.bin",
                                                        f"{RUN}/synced/sub/b.txt"]
        (src / "a.bin").write_bytes(os.urandom(3 * MiB + 1))  # changed: sent again


def test_atomic_replace_pattern_and_overwrite(wstore, make_mount):
    wstore.put(f"{RUN}/model.safetensors", b"old" * 1000)
    m = make_mount(wstore, "--writable")
    target = m / RUN / "model.safetensors"
    assert target.read_bytes() == b"old" * 1000
    new = os.urandom(3 * MiB + 17)
    with open(m / RUN / "model.safetensors.tmp", "wb") as f:
        f.write(new)
        f.flush()
        os.fsync(f.fileno())
    os.replace(m / RUN / "model.safetensors.tmp", target)
    assert sorted(os.listdir(m / RUN)) == ["model.safetensors"]
    assert target.read_bytes() == new
    assert store_keys(wstore, f"{RUN}/") == [f"{RUN}/model.safetensors"]
    assert store_get(wstore, f"{RUN}/model.safetensors") == new
    # O_TRUNC overwrite of an existing blob, and a shorter one
    with open(target, "wb") as f:
        f.write(b"short")
    assert store_get(wstore, f"{RUN}/model.safetensors") == b"short"
    assert os.path.getsize(target) == 5
    # ftruncate through an open file, and truncate(2) of a closed one
    with open(target, "r+b") as f:
        f.truncate(2)
    assert store_get(wstore, f"{RUN}/model.safetensors") == b"sh"
    os.truncate(target, 4)
    assert store_get(wstore, f"{RUN}/model.safetensors") == b"sh\0\0"


@pytest.mark.parametrize("store", ["local"], indirect=True)
def test_change_right_after_a_close_reaches_the_store(wstore, make_mount):
    # the kernel sends a close's release after close(2) returns: an open, truncate(2)
    # or create that comes in before it must still upload what it changes
    m = make_mount(wstore, "--writable")
    os.makedirs(m / RUN)
    target = m / RUN / "state.bin"
    for i in range(60):
        body = bytes([i]) * (100 + i)
        with open(target, "wb") as f:
            f.write(body)
        assert store_get(wstore, f"{RUN}/state.bin") == body, i
        os.truncate(target, 50 + i)
        assert store_get(wstore, f"{RUN}/state.bin") == body[:50 + i], i
        with open(target, "r+b") as f:
            f.seek(0)
            f.write(b"x")
        assert store_get(wstore, f"{RUN}/state.bin") == b"x" + body[1:50 + i], i


def test_checkpoint_loop_keeps_the_last_three(wstore, make_mount):
    m = make_mount(wstore, "--writable")
    ck = m / RUN / "checkpoints"
    os.makedirs(ck)
    for step in range(6):
        tmp = ck / f"tmp-checkpoint-{step}"
        os.makedirs(tmp / "optim")
        (tmp / "model.bin").write_bytes(bytes([step]) * 50000)
        (tmp / "optim/state.bin").write_bytes(bytes([step + 100]) * 1000)
        os.rename(tmp, ck / f"checkpoint-{step}")  # a folder rename: blob by blob
        kept = sorted(os.listdir(ck), key=lambda n: int(n.rsplit("-", 1)[1]))
        for old in kept[:-3]:
            shutil.rmtree(ck / old)
    assert sorted(os.listdir(ck)) == ["checkpoint-3", "checkpoint-4", "checkpoint-5"]
    assert store_keys(wstore, f"{RUN}/checkpoints/") == sorted(
        f"{RUN}/checkpoints/checkpoint-{s}/{f}" for s in (3, 4, 5)
        for f in ("model.bin", "optim/state.bin"))
    assert store_get(wstore, f"{RUN}/checkpoints/checkpoint-4/model.bin") == b"\4" * 50000
    with pytest.raises(OSError) as e:
        os.rmdir(ck / "checkpoint-5")
    assert e.value.errno == errno.ENOTEMPTY
    os.mkdir(ck / "empty")
    assert "empty" in os.listdir(ck)
    os.rmdir(ck / "empty")
    assert "empty" not in os.listdir(ck)


def test_random_offset_writes_and_reads_while_writing(wstore, make_mount, tmp_path):
    m = make_mount(wstore, "--writable")
    os.makedirs(m / RUN)
    size = 21 * MiB + 123
    local = bytearray(size)
    rnd = random.Random(11)
    path = m / RUN / "random.bin"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.ftruncate(fd, size)
        for i in range(300):
            off = rnd.randrange(0, size)
            data = os.urandom(rnd.randrange(1, 300000))[: size - off]
            assert os.pwrite(fd, data, off) == len(data)
            local[off:off + len(data)] = data
            if i % 50 == 0:  # the file reads back while it is written
                probe = rnd.randrange(0, size - 4096)
                assert os.pread(fd, 4096, probe) == bytes(local[probe:probe + 4096])
                with open(path, "rb") as other:
                    other.seek(probe)
                    assert other.read(4096) == bytes(local[probe:probe + 4096])
    finally:
        os.close(fd)
    (tmp_path / "local.bin").write_bytes(local)
    subprocess.run(["cmp", str(tmp_path / "local.bin"), str(path)], check=True)
    assert sha(store_get(wstore, f"{RUN}/random.bin")) == sha(bytes(local))


def test_four_writers_at_once(wstore, make_mount):
    m = make_mount(wstore, "--writable")
    os.makedirs(m / RUN / "shards")
    datas = [os.urandom(19 * MiB + i) for i in range(4)]
    errors = []

    def write(i):
        try:
            with open(m / RUN / f"shards/s{i}.bin", "wb") as f:
                for off in range(0, len(datas[i]), 1 * MiB):
                    f.write(datas[i][off:off + 1 * MiB])
        except Exception as e:  # reported below
            errors.append(e)
    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for i in range(4):
        assert sha(store_get(wstore, f"{RUN}/shards/s{i}.bin")) == sha(datas[i])


def test_o_excl_is_checked_against_the_store(wstore, make_mount):
    m = make_mount(wstore, "--writable", "--ttl", "300")
    os.makedirs(m / RUN)
    assert os.listdir(m / RUN) == []  # the listing is cached: the blob below is not in it
    wstore.put(f"{RUN}/lock", b"theirs")
    with pytest.raises(FileExistsError):
        os.open(m / RUN / "lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    assert store_get(wstore, f"{RUN}/lock") == b"theirs"
    fd = os.open(m / RUN / "mine", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.write(fd, b"mine")
    os.close(fd)
    assert store_get(wstore, f"{RUN}/mine") == b"mine"


def test_what_another_node_wrote_is_kept_by_creates_appends_and_renames(wstore, make_mount):
    # the listing here is cached and older than the store: opens and renames ask it
    m = make_mount(wstore, "--writable", "--ttl", "300")
    os.makedirs(m / RUN)
    (m / RUN / "log.txt").write_bytes(b"AAAA\n")
    assert os.listdir(m / RUN) == ["log.txt"]
    assert os.path.getsize(m / RUN / "log.txt") == 5
    wstore.put(f"{RUN}/shared.log", b"line-from-another-node\n")
    wstore.put(f"{RUN}/rp.bin", b"ABCDEFGHIJ")
    wstore.put(f"{RUN}/log.txt", b"AAAA\nBBBBBBBBBBBBBBBBBBBB\n")  # changed meanwhile
    wstore.put(f"{RUN}/ck/step-2/theirs.bin", b"theirs")
    wstore.settle()
    # O_CREAT without O_TRUNC keeps the blob's bytes; O_APPEND goes at its real end
    with open(m / RUN / "shared.log", "ab") as f:
        f.write(b"appended-here\n")
    assert store_get(wstore, f"{RUN}/shared.log") == \
        b"line-from-another-node\nappended-here\n"
    fd = os.open(m / RUN / "rp.bin", os.O_RDWR | os.O_CREAT)
    os.pwrite(fd, b"z", 2)
    os.close(fd)
    assert store_get(wstore, f"{RUN}/rp.bin") == b"ABzDEFGHIJ"
    fd = os.open(m / RUN / "rp.bin", os.O_RDONLY | os.O_CREAT)  # reads what is there
    assert os.read(fd, 100) == b"ABzDEFGHIJ"
    os.close(fd)
    fd = os.open(m / RUN / "log.txt", os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"CC\n")
    os.close(fd)
    assert store_get(wstore, f"{RUN}/log.txt") == b"AAAA\nBBBBBBBBBBBBBBBBBBBB\nCC\n"
    # a folder renamed onto one that holds blobs is refused, as rmdir is
    os.makedirs(m / RUN / "ck/tmp-step-2")
    (m / RUN / "ck/tmp-step-2/mine.bin").write_bytes(b"mine")
    with pytest.raises(OSError) as e:
        os.rename(m / RUN / "ck/tmp-step-2", m / RUN / "ck/step-2")
    assert e.value.errno == errno.ENOTEMPTY
    assert store_keys(wstore, f"{RUN}/ck/") == [f"{RUN}/ck/step-2/theirs.bin",
                                                f"{RUN}/ck/tmp-step-2/mine.bin"]


def test_open_for_writing_that_writes_nothing_changes_nothing(wstore, make_mount, tmp_path):
    # touch(1) opens for writing and writes nothing: a registered version stays valid
    body = os.urandom(3 * MiB + 5)
    wstore.put(f"{RUN}/outputs/model.bin", body)
    assert wstore.register("kept", f"{RUN}/outputs/") == 1
    m = make_mount(wstore, "--writable")
    target = m / RUN / "outputs/model.bin"
    before = os.stat(target).st_mtime
    subprocess.run(["touch", str(target)], check=True)
    open(target, "r+b").close()
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT))
    assert os.stat(target).st_mtime == before
    wstore.settle()
    ro = make_mount(wstore, cache_dir=tmp_path / "cache2", name="mnt2")
    assert (ro / "models/kept/1/model.bin").read_bytes() == body


def test_other_mounts_see_a_new_file_after_their_ttl(wstore, make_mount, tmp_path):
    wstore.put(f"{RUN}/a.txt", b"v1")
    other = make_mount(wstore, "--ttl", "1", cache_dir=tmp_path / "cache2", name="other")
    assert (other / RUN / "a.txt").read_bytes() == b"v1"
    m = make_mount(wstore, "--writable")
    (m / RUN / "a.txt").write_bytes(b"version 2")
    (m / RUN / "b.txt").write_bytes(b"new")
    assert (m / RUN / "a.txt").read_bytes() == b"version 2"  # this mount: at once
    wstore.settle()
    wait_for(lambda: sorted(os.listdir(other / RUN)) == ["a.txt", "b.txt"], 10,
             "the other mount's listing")
    wait_for(lambda: (other / RUN / "a.txt").read_bytes() == b"version 2", 10,
             "the other mount's new version")


def test_unlink_of_an_open_file_uploads_nothing(wstore, make_mount):
    m = make_mount(wstore, "--writable")
    os.makedirs(m / RUN)
    with open(m / RUN / "gone.bin", "wb") as f:
        f.write(b"x" * 1000)
        os.unlink(m / RUN / "gone.bin")
        f.write(b"y")
    assert store_keys(wstore, f"{RUN}/") == []
    assert os.listdir(m / RUN) == []
    assert staged_files(m.cache_dir) == []


def test_other_operations_answer_clear_errors(wstore, make_mount):
    m = make_mount(wstore, "--writable")
    os.makedirs(m / RUN)
    (m / RUN / "a").write_bytes(b"a")
    with pytest.raises(OSError) as e:
        os.symlink("a", m / RUN / "link")
    assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:
        os.link(m / RUN / "a", m / RUN / "hard")
    assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:
        os.mkfifo(m / RUN / "fifo")
    assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:
        os.setxattr(m / RUN / "a", "user.x", b"1")
    assert e.value.errno == errno.EOPNOTSUPP
    with pytest.raises(OSError) as e:
        os.rename(m / RUN / "a", m / "runs/pytorch-birds/run-43/missing/a")
    assert e.value.errno == errno.ENOENT
    with pytest.raises(OSError) as e:
        os.rmdir(m / RUN / "a")
    assert e.value.errno == errno.ENOTDIR
    with pytest.raises(OSError) as e:
        os.unlink(m / RUN)
    assert e.value.errno in (errno.EISDIR, errno.EPERM)


# ---- faults (Azurite behind the fault proxy) ----

def test_upload_survives_transient_faults(proxy, via, make_mount):
    via.put("runs/seed/r/seed.txt", b"seed")
    m = make_mount(via, "--writable")
    os.makedirs(m / RUN)
    data = os.urandom(40 * MiB + 5)
    small = os.urandom(100000)
    rules = [proxy.fail_next(1, "reset", method="PUT", path="&comp=block"),
             proxy.fail_next(1, "status", method="PUT", path="&comp=block", status=500),
             proxy.fail_next(1, "status", method="PUT", path="&comp=block", status=503),
             proxy.fail_next(1, "stall", method="PUT", path="&comp=block", seconds=15),
             proxy.fail_next(1, "status", method="PUT", path="comp=blocklist", status=503),
             proxy.fail_next(1, "reset", method="PUT", path="/small.bin", forward=False)]
    with open(m / RUN / "big.bin", "wb") as f:
        f.write(data)
    (m / RUN / "small.bin").write_bytes(small)
    assert [r.injected for r in rules] == [1] * len(rules)
    assert via.get(f"{RUN}/big.bin") == data
    assert via.get(f"{RUN}/small.bin") == small
    # the blob is the committed blocks, eight-MiB parts sent separately
    st, _, body = via.client._request("GET", f"/{via.container}/{RUN}/big.bin",
                                      {"comp": "blocklist"})
    assert st == 200
    assert len(list(ET.fromstring(body).iter("Block"))) == 6


def test_store_down_at_close_keeps_the_bytes_and_says_where(proxy, via, make_mount):
    via.put("runs/seed/r/seed.txt", b"seed")
    m = make_mount(via, "--writable", "--timeout", "3")
    os.makedirs(m / RUN)
    data = os.urandom(12 * MiB)
    m.expect_log(r"upload of 'runs/pytorch-birds/run-43/out.bin' failed .* kept in ")
    m.expect_log(r"store failed|not in the store|giving up after|not answering")
    down = proxy.fail_always("status", method="PUT", status=503)
    f = open(m / RUN / "out.bin", "wb")
    f.write(data)
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        f.close()
    assert e.value.errno == errno.EIO
    assert time.monotonic() - t0 < 30
    assert down.injected > 0
    kept = staged_files(m.cache_dir)
    assert len(kept) == 1 and kept[0].read_bytes() == data
    assert str(kept[0]) in m.log()
    assert f"{RUN}/out.bin" not in store_keys(via, RUN)
    # the file is still there on this mount; once the store is back, a rename uploads it
    assert (m / RUN / "out.bin").read_bytes() == data
    proxy.clear(down)
    os.rename(m / RUN / "out.bin", m / RUN / "out2.bin")
    assert via.get(f"{RUN}/out2.bin") == data
    assert staged_files(m.cache_dir) == []


def test_kill_during_upload_leaves_no_blob_and_the_next_mount_names_it(proxy, via,
                                                                        make_mount):
    via.put("runs/seed/r/seed.txt", b"seed")
    m = make_mount(via, "--writable")
    os.makedirs(m / RUN)
    data = os.urandom(20 * MiB)
    hang = proxy.fail_always("stall", method="PUT", path="comp=blocklist", seconds=60)
    done = []

    def save():
        try:
            with open(m / RUN / "ckpt.bin", "wb") as f:
                f.write(data)
        except OSError as e:
            done.append(e)
    t = threading.Thread(target=save)
    t.start()
    wait_for(lambda: hang.injected > 0, 30, "the commit")
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait(10)
    t.join(30)
    subprocess.run(["fusermount3", "-u", "-z", str(m.path)], capture_output=True)
    proxy.clear(hang)
    assert f"{RUN}/ckpt.bin" not in store_keys(via, RUN)
    kept = staged_files(m.cache_dir)
    assert len(kept) == 1 and kept[0].read_bytes() == data
    m.proc = None
    m.log_fh.close()
    m.expect_log(r"never reached the store: 'runs/pytorch-birds/run-43/ckpt.bin'")
    m.start()
    wait_for(lambda: "never reached the store" in m.log(), 10, "the log line")
    assert str(kept[0]) in m.log()
    assert staged_files(m.cache_dir) == kept  # kept, not deleted


def test_full_cache_disk_fails_the_write_and_uploads_nothing(wstore, make_mount, tmp_path):
    small = tmp_path / "smallfs"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(small)], check=True)
    try:
        m = make_mount(wstore, "--writable", cache_dir=small / "cache")
        m.expect_log(r"failed \(No space left on device\)")
        if wstore.kind == "s3":
            m.expect_log(r"did not drop the parts of a failed upload \(HTTP 405\)")  # s3rver
        os.makedirs(m / RUN)
        with pytest.raises(OSError) as e:
            with open(m / RUN / "huge.bin", "wb") as f:
                for _ in range(40):
                    f.write(b"z" * MiB)
        assert e.value.errno == errno.ENOSPC
        assert store_keys(wstore, f"{RUN}/") == []
        # the disk is given back once the kernel releases the file (after close)
        wait_for(lambda: staged_files(m.cache_dir) == [] and
                 os.statvfs(small).f_bavail * os.statvfs(small).f_frsize > 16 * MiB, 10,
                 "the staged bytes to go")
        (m / RUN / "after.txt").write_bytes(b"fine")
        assert store_get(wstore, f"{RUN}/after.txt") == b"fine"
        m.stop()
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
