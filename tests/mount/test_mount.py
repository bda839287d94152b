"""Mount-level behaviour on a real mount of each kind of store (a local folder, Azure
Blob in Azurite), with real clients: coreutils, Python's file API, mmap."""
import errno
import hashlib
import json
import mmap
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import BIN, run_cli, wait_for

MiB = 1 << 20


def cmp_with(path, data, tmp_path):
    """cmp(1) of a file in the mount against the expected bytes."""
    want = tmp_path / f"want-{os.urandom(4).hex()}"
    want.write_bytes(data)
    subprocess.run(["cmp", str(path), str(want)], check=True)
    want.unlink()


@pytest.fixture
def populated(store):
    """A store with two runs and a model with two versions and an alias."""
    files = {
        "runs/birds/run-1/outputs/model.pth": os.urandom(300_000),
        "runs/birds/run-1/outputs/config.json": b'{"lr": 0.1}\n',
        "runs/birds/run-1/metrics.txt": b"acc 0.9\n",
        "runs/birds/run-2/outputs/model.pth": os.urandom(123_457),
        "runs/fish/run-a/log.txt": b"",
    }
    for k, v in files.items():
        store.put(k, v)
    assert store.register("pt-dnn", "runs/birds/run-1/outputs/") == 1
    assert store.register("pt-dnn", "runs/birds/run-2/outputs", "--alias", "production",
                          "--tag", "team=vision", "--description", "second") == 2
    store.alias("pt-dnn", "staging", "1")
    store.files = files
    return store


def test_tree_lists_runs_and_models(populated, make_mount):
    m = make_mount(populated)
    assert sorted(os.listdir(m.path)) == ["models", "runs"]
    assert sorted(os.listdir(m / "runs")) == ["birds", "fish"]
    assert sorted(os.listdir(m / "runs/birds/run-1")) == ["metrics.txt", "outputs"]
    assert sorted(os.listdir(m / "models")) == ["pt-dnn"]
    assert sorted(os.listdir(m / "models/pt-dnn")) == ["1", "2", "latest", "production",
                                                       "staging"]
    assert sorted(os.listdir(m / "models/pt-dnn/1")) == ["config.json", "model.pth"]
    assert os.listdir(m / "models/pt-dnn/2") == ["model.pth"]
    found = subprocess.run(["find", str(m.path), "-type", "f"], capture_output=True,
                           text=True, check=True).stdout.split()
    assert len(found) == 5 + 3


def test_attributes_are_the_stores(populated, make_mount):
    m = make_mount(populated)
    for key, data in populated.files.items():
        st = os.stat(m / key)
        assert st.st_size == len(data)
        assert int(st.st_mtime) == populated.mtime(key)
        assert st.st_mode & 0o777 == 0o444
    st = os.stat(m / "models/pt-dnn/1/model.pth")
    assert st.st_size == 300_000
    assert os.stat(m / "runs/birds").st_mode & 0o170000 == 0o040000
    out = subprocess.run(["ls", "-l", str(m / "runs/birds/run-1/outputs")],
                         capture_output=True, text=True, check=True).stdout
    assert "300000" in out and "model.pth" in out
    du = subprocess.run(["du", "-sb", str(m / "models/pt-dnn/1")], capture_output=True,
                        text=True, check=True).stdout.split()[0]
    assert int(du) >= 300_000 + len(b'{"lr": 0.1}\n')


def test_small_files_are_byte_exact(populated, make_mount, tmp_path):
    m = make_mount(populated)
    for key, data in populated.files.items():
        cmp_with(m / key, data, tmp_path)
    cmp_with(m / "models/pt-dnn/1/model.pth",
             populated.files["runs/birds/run-1/outputs/model.pth"], tmp_path)
    cmp_with(m / "models/pt-dnn/production/model.pth",
             populated.files["runs/birds/run-2/outputs/model.pth"], tmp_path)
    assert (m / "runs/fish/run-a/log.txt").read_bytes() == b""


def test_large_file_is_byte_exact(store, make_mount, tmp_path):
    data = os.urandom(72 * MiB + 12345)
    store.put("runs/big/r/weights.bin", data)
    m = make_mount(store)
    cmp_with(m / "runs/big/r/weights.bin", data, tmp_path)
    cmp_with(m / "runs/big/r/weights.bin", data, tmp_path)  # again, from the cache


def test_reads_at_odd_offsets_across_chunk_boundaries(store, make_mount):
    data = os.urandom(5 * MiB + 3)
    store.put("runs/e/r/f.bin", data)
    m = make_mount(store, "--chunk-size", "64K")
    cs = 64 * 1024
    with open(m / "runs/e/r/f.bin", "rb", buffering=0) as f:
        for off, n in [(cs - 1, 2), (cs - 7, cs + 14), (3 * cs + 5, 7 * cs), (0, 1),
                       (len(data) - 5, 100), (len(data), 10), (17 * cs - 1, 1),
                       (2 * MiB + 333, 999_999)]:
            f.seek(off)
            assert f.read(n) == data[off:off + n], (off, n)


def test_mmap_reads(store, make_mount):
    data = os.urandom(9 * MiB + 17)
    store.put("runs/e/r/model.safetensors", data)
    m = make_mount(store, "--chunk-size", "1M")
    with open(m / "runs/e/r/model.safetensors", "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        try:
            assert len(mm) == len(data)
            for off in [8 * MiB + 3, 5, MiB - 2, len(data) - 9]:
                assert mm[off:off + 4096] == data[off:off + 4096]
            assert hashlib.sha256(mm).digest() == hashlib.sha256(data).digest()
        finally:
            mm.close()


def test_latest_and_alias_symlinks(populated, make_mount):
    m = make_mount(populated, "--ttl", "1")
    assert os.readlink(m / "models/pt-dnn/latest") == "2"
    assert os.readlink(m / "models/pt-dnn/production") == "2"
    assert os.readlink(m / "models/pt-dnn/staging") == "1"
    assert (m / "models/pt-dnn/staging/config.json").read_bytes() == b'{"lr": 0.1}\n'
    # a new version and a moved alias show up after the TTL
    populated.put("runs/birds/run-3/outputs/model.pth", b"v3")
    assert populated.register("pt-dnn", "runs/birds/run-3/outputs/") == 3
    populated.alias("pt-dnn", "production", "3")
    populated.alias("pt-dnn", "staging", "--delete")
    wait_for(lambda: os.path.lexists(m / "models/pt-dnn/latest") and
             os.readlink(m / "models/pt-dnn/latest") == "3", 10, "latest -> 3")
    wait_for(lambda: os.readlink(m / "models/pt-dnn/production") == "3", 10,
             "production -> 3")
    wait_for(lambda: not os.path.lexists(m / "models/pt-dnn/staging"), 10, "staging gone")
    assert (m / "models/pt-dnn/production/model.pth").read_bytes() == b"v3"


WRITES = {
    "create": lambda m: open(m / "runs/birds/new.txt", "w"),
    "write": lambda m: open(m / "runs/birds/run-1/metrics.txt", "r+b"),
    "append": lambda m: open(m / "runs/birds/run-1/metrics.txt", "ab"),
    "truncate": lambda m: os.truncate(m / "runs/birds/run-1/metrics.txt", 0),
    "mkdir": lambda m: os.mkdir(m / "runs/newdir"),
    "unlink": lambda m: os.unlink(m / "runs/birds/run-1/metrics.txt"),
    "rmdir": lambda m: os.rmdir(m / "runs/fish/run-a"),
    "rename": lambda m: os.rename(m / "runs/birds/run-1/metrics.txt", m / "runs/x.txt"),
    "chmod": lambda m: os.chmod(m / "runs/birds/run-1/metrics.txt", 0o666),
    "symlink": lambda m: os.symlink("x", m / "runs/link"),
    "link": lambda m: os.link(m / "runs/birds/run-1/metrics.txt", m / "runs/birds/l"),
    "utime": lambda m: os.utime(m / "runs/birds/run-1/metrics.txt", (1, 1)),
    "setxattr": lambda m: os.setxattr(m / "runs/birds/run-1/metrics.txt", "user.x", b"1"),
    "model-write": lambda m: open(m / "models/pt-dnn/1/model.pth", "wb"),
    "model-mkdir": lambda m: os.mkdir(m / "models/new"),
}


def test_every_write_fails_with_erofs(populated, make_mount):
    m = make_mount(populated)
    for name, op in WRITES.items():
        with pytest.raises(OSError) as e:
            op(m)
        assert e.value.errno == errno.EROFS, name
    for key, data in populated.files.items():
        assert populated.get(key) == data


def test_missing_paths_are_enoent(populated, make_mount):
    m = make_mount(populated)
    for rel in ["nope", "runs/nope", "runs/birds/run-9", "runs/birds/run-1/outputs/x.pth",
                "models/nope", "models/pt-dnn/9", "models/pt-dnn/01", "models/pt-dnn/nope",
                "models/pt-dnn/1/nope.pth", "models/pt-dnn/1/model.pth.bak",
                "models/bad name"]:
        with pytest.raises(OSError) as e:
            os.stat(m / rel)
        assert e.value.errno == errno.ENOENT, rel
    with pytest.raises(OSError) as e:
        os.stat(m / "runs/birds/run-1/metrics.txt/x")
    assert e.value.errno == errno.ENOTDIR


def test_concurrent_registrations_get_distinct_versions(populated, make_mount):
    # twice 8 at once (on s3rver, which ignores conditional writes, the second round
    # starts where the first left its claims' folders)
    versions = []
    for _ in range(2):
        procs = [subprocess.Popen([str(BIN), "register", populated.url, "conc",
                                   "runs/birds/run-1/outputs/"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, **populated.env}) for _ in range(8)]
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            versions.append(int(out))
    assert sorted(versions) == list(range(1, 17))
    m = make_mount(populated)
    assert sorted(os.listdir(m / "models/conc"), key=str) == sorted(
        [str(v) for v in range(1, 17)] + ["latest"])
    assert os.readlink(m / "models/conc/latest") == "16"


def test_concurrent_alias_updates_lose_nothing(populated):
    def set_alias(i):
        populated.alias("pt-dnn", f"a{i}", str(1 + i % 2))
    if populated.kind == "s3":
        # s3rver ignores If-Match: the command says so, and takes a claim on the
        # table instead, so concurrent updates still lose nothing
        p = populated.alias("pt-dnn", "a0", "1")
        assert "ignores conditional writes" in p.stderr
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(set_alias, range(8)))
    table = json.loads(populated.get("registry/pt-dnn/aliases.json"))
    for i in range(8):
        assert table[f"a{i}"] == 1 + i % 2
    assert table["production"] == 2 and table["staging"] == 1


def test_malformed_record_is_skipped_with_a_warning(populated, make_mount, tmp_path):
    populated.put("registry/broken/1.json", "{not json")
    populated.put("registry/pt-dnn/3.json", '{"name": "pt-dnn", "version": 3')
    populated.put("registry/pt-dnn/aliases.json", '{"production": 2, "canary": 3}')
    m = make_mount(populated)
    m.expect_log(r"model broken version 1 is unusable")
    m.expect_log(r"model pt-dnn version 3 is unusable")
    assert sorted(os.listdir(m / "models")) == ["broken", "pt-dnn"]
    assert os.listdir(m / "models/broken") == []
    assert sorted(os.listdir(m / "models/pt-dnn")) == ["1", "2", "latest", "production"]
    assert os.readlink(m / "models/pt-dnn/latest") == "2"
    cmp_with(m / "models/pt-dnn/latest/model.pth",
             populated.files["runs/birds/run-2/outputs/model.pth"], tmp_path)
    assert "model broken version 1 is unusable" in m.log()


def test_hostile_record_paths_stay_inside_the_tree(populated, make_mount):
    populated.put("registry/evil/1.json", json.dumps({
        "name": "evil", "version": 1, "source": "runs/birds/run-1/",
        "files": [{"path": "../../../etc/passwd", "size": 10, "etag": "x"},
                  {"path": "outputs/../metrics.txt", "size": 8, "etag": "x"},
                  {"path": "/etc/shadow", "size": 8, "etag": "x"},
                  {"path": "metrics.txt", "size": 8,
                   "etag": populated.etag("runs/birds/run-1/metrics.txt")}]}))
    m = make_mount(populated)
    m.expect_log(r"model evil version 1: file path")
    assert os.listdir(m / "models/evil/1") == ["metrics.txt"]
    assert (m / "models/evil/1/metrics.txt").read_bytes() == b"acc 0.9\n"


def test_registered_blob_changed_after_registration_fails_with_eio(populated, make_mount):
    m = make_mount(populated)
    m.expect_log(r"changed after registration: registered etag .* store etag ")
    populated.put("runs/birds/run-1/outputs/config.json", b'{"lr": 0.2}\n')
    with pytest.raises(OSError) as e:
        (m / "models/pt-dnn/1/config.json").read_bytes()
    assert e.value.errno == errno.EIO
    wait_for(lambda: "models/pt-dnn/1/config.json" in m.log(), 5, "the log line")
    line = [l for l in m.log().splitlines() if "changed after registration" in l][0]
    assert line.count('"') >= 4  # both etags are named


def test_sha256_mismatch_fails_the_read_that_ends_the_file(populated, make_mount):
    rec = json.loads(populated.get("registry/pt-dnn/1.json"))
    rec["version"] = 4
    for f in rec["files"]:
        f["sha256"] = "0" * 64
    populated.put("registry/pt-dnn/4.json", json.dumps(rec))
    m = make_mount(populated)
    m.expect_log(r"do not match the registered sha256")
    with pytest.raises(OSError) as e:
        (m / "models/pt-dnn/4/model.pth").read_bytes()
    assert e.value.errno == errno.EIO
    # the good record of the same bytes reads fine
    assert (m / "models/pt-dnn/1/model.pth").read_bytes() == \
        populated.files["runs/birds/run-1/outputs/model.pth"]


def test_run_file_replaced_while_open_never_mixes(store, make_mount):
    old = os.urandom(4 * MiB)
    store.put("runs/e/r/ckpt.bin", old)
    m = make_mount(store, "--chunk-size", "1M")
    m.expect_log(r"changed in the store while open")
    with open(m / "runs/e/r/ckpt.bin", "rb", buffering=0) as f:
        assert f.read(1000) == old[:1000]
        new = os.urandom(4 * MiB)
        store.put("runs/e/r/ckpt.bin", new)
        f.seek(0)
        assert f.read(1000) == old[:1000]  # cached chunk of the version opened
        f.seek(2 * MiB)
        with pytest.raises(OSError) as e:
            f.read(1000)
        assert e.value.errno == errno.EIO
    # a new open reads the new version whole
    with open(m / "runs/e/r/ckpt.bin", "rb") as f:
        assert f.read() == new


def test_cache_is_reused_after_remount(populated, make_mount):
    big = os.urandom(20 * MiB)
    populated.put("runs/birds/run-1/outputs/big.bin", big)
    m = make_mount(populated)
    assert (m / "runs/birds/run-1/outputs/big.bin").read_bytes() == big

    def chunk_files():
        out = {}
        for d, _, names in os.walk(m.cache_dir / "chunks"):
            for n in names:
                out[n] = os.stat(os.path.join(d, n)).st_ino
        return out
    # chunks are written to disk behind the reads
    wait_for(lambda: len(chunk_files()) >= 3, 15, "every chunk on disk")
    before = chunk_files()
    assert os.stat(m.cache_dir).st_mode & 0o777 == 0o700
    m.restart()
    assert (m / "runs/birds/run-1/outputs/big.bin").read_bytes() == big
    assert chunk_files() == before  # served from the same files, none fetched again


def test_cache_stays_within_its_size(store, make_mount):
    files = [os.urandom(4 * MiB) for _ in range(6)]
    for i, data in enumerate(files):
        store.put(f"runs/e/r/f{i}.bin", data)
    m = make_mount(store, "--cache-size", "10M", "--chunk-size", "1M")
    for i, data in enumerate(files):
        assert (m / f"runs/e/r/f{i}.bin").read_bytes() == data
    total = sum(os.path.getsize(os.path.join(d, n))
                for d, _, ns in os.walk(m.cache_dir / "chunks") for n in ns)
    assert total <= 10 * MiB


def test_concurrent_readers_of_one_file(store, make_mount):
    data = os.urandom(24 * MiB)
    store.put("runs/e/r/shared.bin", data)
    m = make_mount(store, "--chunk-size", "1M")
    results = [None] * 8

    def read(i):
        results[i] = hashlib.sha256((m / "runs/e/r/shared.bin").read_bytes()).digest()
    threads = [threading.Thread(target=read, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [hashlib.sha256(data).digest()] * 8


def test_no_xattrs_without_the_option(populated, make_mount):
    """By default the mount answers no extended attribute query, so that the kernel
    stops asking (ls -l asks two per file)."""
    m = make_mount(populated)
    p = m / "models/pt-dnn/1/model.pth"
    for _ in range(2):
        with pytest.raises(OSError) as e:
            os.getxattr(p, "user.artifactfs.key")
        assert e.value.errno == errno.EOPNOTSUPP
    with pytest.raises(OSError) as e:
        os.listxattr(p)
    assert e.value.errno == errno.EOPNOTSUPP
    out = subprocess.run(["ls", "-l", str(p)], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("-r--r--r-- ")


def test_xattrs_name_the_source(populated, make_mount):
    m = make_mount(populated, "--xattrs")
    p = m / "models/pt-dnn/1/model.pth"
    assert os.getxattr(p, "user.artifactfs.key") == b"runs/birds/run-1/outputs/model.pth"
    rec = json.loads(populated.get("registry/pt-dnn/1.json"))
    f = [x for x in rec["files"] if x["path"] == "model.pth"][0]
    assert os.getxattr(p, "user.artifactfs.etag").decode() == f["etag"]
    assert os.getxattr(p, "user.artifactfs.sha256").decode() == f["sha256"]
    assert f["sha256"] == hashlib.sha256(
        populated.files["runs/birds/run-1/outputs/model.pth"]).hexdigest()
    assert "user.artifactfs.key" in os.listxattr(p)
    out = subprocess.run(["getfattr", "-d", str(p)], capture_output=True, text=True,
                         check=True).stdout
    assert 'user.artifactfs.key="runs/birds/run-1/outputs/model.pth"' in out


def test_record_format(populated):
    rec = json.loads(populated.get("registry/pt-dnn/2.json"))
    assert rec["name"] == "pt-dnn" and rec["version"] == 2
    assert rec["source"] == "runs/birds/run-2/outputs/"
    assert rec["description"] == "second" and rec["tags"] == {"team": "vision"}
    assert rec["created"].endswith("Z")
    [f] = rec["files"]
    data = populated.files["runs/birds/run-2/outputs/model.pth"]
    assert f["path"] == "model.pth" and f["size"] == len(data)
    assert f["sha256"] == hashlib.sha256(data).hexdigest()
    assert json.loads(populated.get("registry/pt-dnn/aliases.json")) == \
        {"production": 2, "staging": 1}


@pytest.mark.parametrize("args,needle", [
    (["mount", "s3:/x", "/tmp"], "store URL"),
    (["mount", "file:///no/such/store", "/tmp"], "/no/such/store"),
    (["mount", "file://relative", "/tmp"], "absolute"),
    (["mount", "{store}", "/no/such/mountpoint"], "mountpoint"),
    (["mount", "{store}", "/tmp", "--bogus"], "unknown option"),
    (["mount", "{store}", "/tmp", "--cache-size", "lots"], "cache-size"),
    (["mount", "{store}", "/tmp", "--ttl", "-1"], "ttl"),
    (["mount", "{store}"], "MOUNTPOINT"),
    (["register", "{store}", "bad name", "runs/birds/run-1/outputs/"], "model name"),
    (["register", "{store}", "-x", "runs/birds/run-1/outputs/"], "unknown option"),
    (["register", "{store}", "m", "runs/nothing/here/"], "no files"),
    (["register", "file:///no/such/store", "m", "runs/a/"], "/no/such/store"),
    (["register", "{store}", "m", "runs/birds/run-1/outputs/", "--tag", "novalue"], "tag"),
    (["alias", "{store}", "pt-dnn", "production", "9"], "no version 9"),
    (["alias", "{store}", "pt-dnn", "latest", "1"], "alias"),
    (["alias", "{store}", "bad/name", "prod", "1"], "model name"),
    (["frobnicate"], "unknown command"),
    ([], "usage"),
])
def test_bad_input_gets_one_line_and_status_2(populated, args, needle):
    args = [a.replace("{store}", populated.url) for a in args]
    p = run_cli(*args, check=False, store=populated)
    assert p.returncode == 2
    assert needle in p.stderr
    if args:
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_help_and_version():
    p = run_cli("--help")
    assert "artifactfs mount STORE MOUNTPOINT" in p.stdout and "--cache-size" in p.stdout
    p = run_cli("--version")
    assert p.stdout.startswith("artifactfs ")


def test_daemon_mode_mounts_and_unmounts(populated, tmp_path):
    mnt = tmp_path / "dmnt"
    mnt.mkdir()
    p = run_cli("mount", populated.url, mnt, "--cache-dir", tmp_path / "dcache",
                store=populated)
    assert p.returncode == 0
    try:
        from conftest import is_mounted
        wait_for(lambda: is_mounted(mnt), 10, "the daemon's mount")
        assert (mnt / "runs/birds/run-1/metrics.txt").read_bytes() == b"acc 0.9\n"
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)


def test_cache_on_a_full_filesystem_still_serves_exact_bytes(store, make_mount, tmp_path):
    small = tmp_path / "small-cache"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)], check=True)
    try:
        data = os.urandom(10 * MiB + 7)
        store.put("runs/e/r/big.bin", data)
        m = make_mount(store, "--chunk-size", "1M", "--cache-size", "1G",
                       cache_dir=small / "c")
        assert (m / "runs/e/r/big.bin").read_bytes() == data
        assert (m / "runs/e/r/big.bin").read_bytes() == data
        m.stop()
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_two_opens_at_two_versions_never_mix(store, make_mount):
    old, new = os.urandom(16 * MiB), os.urandom(16 * MiB)
    store.put("runs/e/r/ckpt.bin", old)
    m = make_mount(store, "--chunk-size", "1M")
    m.expect_log(r"changed in the store while open")
    with open(m / "runs/e/r/ckpt.bin", "rb", buffering=0) as a:
        assert a.read(1000) == old[:1000]
        store.put("runs/e/r/ckpt.bin", new)
        with open(m / "runs/e/r/ckpt.bin", "rb") as b:
            assert b.read() == new  # the new open reads the new version whole
        for off in (12 * MiB, 8 * MiB + 5, 1000):
            a.seek(off)
            try:
                got = a.read(4096)
            except OSError as e:
                assert e.errno == errno.EIO
                continue
            assert got == old[off:off + 4096], off  # never the other version's bytes


def test_options_as_o_name_value_for_fstab(store, make_mount):
    files = [os.urandom(4 * MiB) for _ in range(4)]
    for i, data in enumerate(files):
        store.put(f"runs/e/r/f{i}.bin", data)
    m = make_mount(store, "-o", "cache_size=6M,chunk_size=1M,ttl=1")
    for i, data in enumerate(files):
        assert (m / f"runs/e/r/f{i}.bin").read_bytes() == data
    total = sum(os.path.getsize(os.path.join(d, n))
                for d, _, ns in os.walk(m.cache_dir / "chunks") for n in ns)
    assert 0 < total <= 6 * MiB  # cache_size honoured
    assert all(os.path.getsize(os.path.join(d, n)) <= MiB + 88
               for d, _, ns in os.walk(m.cache_dir / "chunks") for n in ns)  # chunk_size
    store.put("runs/e/r/new.txt", b"new")  # ttl=1: the listing refreshes
    wait_for(lambda: os.path.exists(m / "runs/e/r/new.txt"), 10, "ttl=1 refresh")


def test_ls_l_of_a_large_folder_lists_each_entry_once(store, make_mount):
    """A folder listed in several READDIRPLUS replies: every entry exactly once, with
    its size, and no lookup needed afterwards for ls -l."""
    names = {f"f{i:04d}.txt": b"x" * (i % 50) for i in range(1500)}
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda kv: store.put(f"runs/e/many/{kv[0]}", kv[1]), names.items()))
    m = make_mount(store)
    assert sorted(os.listdir(m / "runs/e/many")) == sorted(names)
    for _ in range(2):
        out = subprocess.run(["ls", "-l", str(m / "runs/e/many")], capture_output=True,
                             text=True, check=True).stdout.splitlines()
        rows = [line.split() for line in out[1:]]
        assert sorted(r[-1] for r in rows) == sorted(names)
        assert all(int(r[4]) == len(names[r[-1]]) for r in rows)
