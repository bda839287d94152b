"""Damage to the cache folder: chunk files with flipped bytes, truncated or deleted
under a running mount, a daemon killed with SIGKILL in the middle of a download, and
listing and record copies made garbage. Whatever the damage, the mount serves the
exact bytes and the right tree; a damaged chunk is named in a warning and fetched
again, never served."""
import os
import re
import signal
import struct
import subprocess
import threading
import time

import pytest

from conftest import is_mounted, wait_for

KiB, MiB = 1 << 10, 1 << 20
TRAILER = struct.Struct("<8sIIQ64s")  # magic, CRC-32C, length, index, blob id
assert TRAILER.size == 88


def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC_TABLE = _crc_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    t = CRC_TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def chunk_files(cache_dir):
    """{index: path} of the chunk files in the cache (tests here cache one blob)."""
    out = {}
    for d, _, names in os.walk(cache_dir / "chunks"):
        for n in names:
            m = re.fullmatch(r"([0-9a-f]{64})\.(\d+)", n)
            assert m, f"not a chunk file name: {n}"
            assert os.path.basename(d) == n[:2], (d, n)
            idx = int(m.group(2))
            assert idx not in out, f"two blobs in the cache: {out[idx]} and {n}"
            out[idx] = os.path.join(d, n)
    return out


def check_chunk_file(path, data, chunk):
    """The file is chunk `index` of data, whole, with a trailer whose CRC-32C,
    length, index and id are right."""
    raw = open(path, "rb").read()
    name = os.path.basename(path)
    index = int(name.split(".")[1])
    want = data[index * chunk:(index + 1) * chunk]
    assert len(raw) == len(want) + TRAILER.size, (name, len(raw), len(want))
    assert raw[:len(want)] == want, f"{name}: wrong bytes"
    magic, crc, length, idx, blob_id = TRAILER.unpack(raw[len(want):])
    assert magic == b"AFSCHNK1", (name, magic)
    assert (length, idx, blob_id.decode()) == (len(want), index, name.split(".")[0]), name
    assert crc == crc32c(want), f"{name}: trailer CRC {crc:#x} is not the data's"


def read(path):
    with open(path, "rb") as f:
        return f.read()


def drop_page_cache(path):
    """Drops the kernel's cached pages of one file of the mount, so the next read
    reaches the daemon and so its cache files."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def damaged_line(path):
    return rf": WARN: [a-z_0-9]+: cache chunk {re.escape(str(path))} is damaged; " \
        r"fetching it again$"


def damaged_paths(m):
    return re.findall(r": WARN: [a-z_0-9]+: cache chunk (\S+) is damaged; fetching it "
                      r"again$", m.log(), re.M)


# ---- chunk files ----

def test_flipped_bytes_while_unmounted_are_caught_at_remount(store, make_mount):
    chunk = 256 * KiB
    data = os.urandom(6 * chunk + 1234)
    store.put("runs/e/r/model.bin", data)
    assert store.register("m", "runs/e/r/") == 1
    m = make_mount(store, "--chunk-size", "256K")
    assert read(m / "runs/e/r/model.bin") == data
    m.stop()
    files = chunk_files(m.cache_dir)
    assert sorted(files) == list(range(7))
    for p in files.values():
        check_chunk_file(p, data, chunk)
    ident = {i: (os.stat(p).st_ino, os.stat(p).st_ctime_ns) for i, p in files.items()}

    def flip(path, offset):
        with open(path, "r+b") as f:
            f.seek(offset)
            b = f.read(1)
            f.seek(offset)
            f.write(bytes([b[0] ^ 0x5A]))
    size = {i: os.path.getsize(p) for i, p in files.items()}
    flip(files[0], 0)                                  # first data byte
    flip(files[1], chunk // 2)                         # a byte in the middle
    flip(files[2], chunk - 1)                          # last data byte
    flip(files[3], chunk + 8)                          # the trailer's CRC
    flip(files[4], chunk + 0)                          # the trailer's magic
    flip(files[5], chunk + 16)                         # the trailer's index
    # chunk 6 (the short last one) stays whole
    damaged = [files[i] for i in range(6)]
    assert all(os.path.getsize(p) == size[i] for i, p in files.items())

    m.start()
    for p in damaged:
        m.expect_log(damaged_line(p))
    assert read(m / "models/m/1/model.bin") == data      # checked against its sha256 too
    assert read(m / "runs/e/r/model.bin") == data

    assert sorted(damaged_paths(m)) == sorted(damaged)
    wait_for(lambda: sorted(chunk_files(m.cache_dir)) == list(range(7)), 15,
             "every chunk on disk again")
    after = chunk_files(m.cache_dir)
    for p in after.values():
        check_chunk_file(p, data, chunk)

    def now(p):
        return os.stat(p).st_ino, os.stat(p).st_ctime_ns
    assert now(after[6]) == ident[6]                     # the whole one was kept
    for i in range(6):
        assert now(after[i]) != ident[i], i              # the damaged ones fetched anew
    assert m.proc.poll() is None and is_mounted(m.path)


def test_chunks_truncated_deleted_or_flipped_while_mounted(store, make_mount):
    chunk = 256 * KiB
    data = os.urandom(8 * chunk)
    store.put("runs/e/r/ckpt.bin", data)
    m = make_mount(store, "--chunk-size", "256K")
    path = m / "runs/e/r/ckpt.bin"
    assert read(path) == data
    # chunks are written to disk behind the reads
    wait_for(lambda: sorted(chunk_files(m.cache_dir)) == list(range(8)), 15,
             "every chunk on disk")
    files = chunk_files(m.cache_dir)
    ident0 = (os.stat(files[0]).st_ino, os.stat(files[0]).st_mtime_ns)

    os.truncate(files[1], chunk // 2)           # half the data
    os.truncate(files[2], 0)                    # nothing
    os.truncate(files[3], chunk)                # the data without its trailer
    os.truncate(files[4], chunk + TRAILER.size - 1)
    with open(files[5], "r+b") as f:            # a flipped byte, same size
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 1]))
    os.unlink(files[6])                         # deleted
    os.unlink(files[7])
    damaged = [files[i] for i in range(1, 6)]
    for p in damaged:
        m.expect_log(damaged_line(p))
    drop_page_cache(path)

    assert read(path) == data
    with open(path, "rb", buffering=0) as f:    # and at odd offsets, backwards
        for off in (7 * chunk + 5, 5 * chunk - 3, 3 * chunk + 17, chunk - 1, 0):
            f.seek(off)
            assert f.read(4097) == data[off:off + 4097], off

    assert sorted(damaged_paths(m)) == sorted(damaged)
    wait_for(lambda: sorted(chunk_files(m.cache_dir)) == list(range(8)), 15,
             "every chunk on disk again")
    after = chunk_files(m.cache_dir)
    for p in after.values():
        check_chunk_file(p, data, chunk)
    assert (os.stat(after[0]).st_ino, os.stat(after[0]).st_mtime_ns) == ident0
    assert m.proc.poll() is None and is_mounted(m.path)


def test_chunks_damaged_under_busy_readers(store, make_mount):
    """Chunk files are truncated, overwritten and deleted again and again while two
    readers read the file over and over (its page cache dropped each time): every
    read is exact, and the file keeps its size."""
    chunk = 64 * KiB
    data = os.urandom(16 * chunk)
    store.put("runs/e/r/hot.bin", data)
    m = make_mount(store, "--chunk-size", "64K")
    m.expect_log(r": WARN: [a-z_0-9]+: cache chunk \S+ is damaged; fetching it again$")
    path = m / "runs/e/r/hot.bin"
    assert read(path) == data
    stop = threading.Event()
    bad, rounds, hits = [], [0], [0]

    def reader():
        while not stop.is_set():
            drop_page_cache(path)
            try:
                got = read(path)
            except OSError as e:
                bad.append(repr(e))
                stop.set()
                return
            if got != data:
                at = next((i for i, (a, b) in enumerate(zip(got, data)) if a != b),
                          min(len(got), len(data)))
                bad.append(f"read {len(got)} of {len(data)} bytes, first wrong byte at "
                           f"{at} (chunk {at // chunk}, +{at % chunk}): "
                           f"{got[at:at + 8].hex() or 'end of file'}; "
                           f"st_size now {os.stat(path).st_size}")
                stop.set()
                return
            rounds[0] += 1

    def damager():
        i = 0
        while not stop.is_set():
            for idx, p in chunk_files(m.cache_dir).items():
                try:
                    if (i + idx) % 4 == 0:
                        os.unlink(p)
                    elif (i + idx) % 4 == 1:
                        os.truncate(p, (idx * 997) % chunk)
                    elif (i + idx) % 4 == 2:
                        with open(p, "r+b") as f:
                            f.seek((idx * 4099) % chunk)
                            f.write(b"\xa5" * 16)
                    hits[0] += 1
                except FileNotFoundError:
                    pass
            i += 1
            time.sleep(0.002)
    threads = [threading.Thread(target=reader) for _ in range(2)] + \
        [threading.Thread(target=damager)]
    for t in threads:
        t.start()
    stop.wait(4)
    stop.set()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not bad, bad
    assert rounds[0] >= 5 and hits[0] >= 20, (rounds, hits)
    assert os.stat(path).st_size == len(data)
    drop_page_cache(path)
    assert read(path) == data
    assert m.proc.poll() is None and is_mounted(m.path)


# ---- a daemon killed in the middle of a download ----

def test_kill_9_in_the_middle_of_a_download(proxy, via, make_mount):
    chunk = 256 * KiB
    data = os.urandom(10 * chunk)
    via.put("runs/e/r/big.bin", data)
    m = make_mount(via, "--chunk-size", "256K")
    path = m / "runs/e/r/big.bin"
    # chunks 0 and 3 whole in the cache first, by reads too small to look sequential
    with open(path, "rb", buffering=0) as f:
        assert f.read(100) == data[:100]
        f.seek(3 * chunk + 10)
        assert f.read(100) == data[3 * chunk + 10:3 * chunk + 110]
    # (a whole chunk is written to its file behind the reader)
    wait_for(lambda: sorted(chunk_files(m.cache_dir)) == [0, 3], 15, "chunks 0 and 3 on disk")
    # every further answer stops half-way through its body
    stall = proxy.fail_always("stall", method="GET", path="/runs/e/r/big.bin", where="body",
                              fraction=0.5, seconds=120)
    reader = subprocess.Popen(["cat", str(path)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    wait_for(lambda: stall.stalled >= 1, 15, "a chunk download half-way through")
    assert reader.poll() is None

    os.kill(m.proc.pid, signal.SIGKILL)
    m.proc.wait(timeout=10)
    subprocess.run(["fusermount3", "-u", "-z", str(m.path)], check=True)
    assert not is_mounted(m.path)
    reader.wait(timeout=20)
    assert reader.returncode != 0
    proxy.clear(stall)
    m.stop()

    # what the dead daemon left: chunk files only of whole chunks (0 and 3, and any
    # that a half answer of a run of chunks brought whole), each exact; the chunk
    # cut off half-way was in memory only (a temp file, if any, was never renamed)
    left = chunk_files(m.cache_dir)
    assert {0, 3} <= set(left) and len(left) < 10, sorted(left)
    for p in left.values():
        check_chunk_file(p, data, chunk)

    m.start()
    assert read(path) == data
    final = chunk_files(m.cache_dir)
    assert sorted(final) == list(range(10))
    for p in final.values():
        check_chunk_file(p, data, chunk)
    assert m.proc.poll() is None and is_mounted(m.path)


# ---- listing and record copies ----

def corrupt(path, how):
    """Damages one listing or record copy; returns what the file now holds."""
    raw = open(path, "rb").read()
    if how == "garbage":
        new = os.urandom(max(len(raw), 64))
    elif how == "truncated":
        new = raw[:len(raw) // 2]
    elif how == "empty":
        new = b""
    elif how == "wrong-json":
        new = b'{"entries": "not a list", "missing": 7}'
    elif how == "flipped":
        # one byte of a record's sha256 (a listing's first name) changed: the file
        # keeps its shape, no longer the store's content
        hit = re.search(rb'"sha256":\s*"', raw)
        at = hit.end() if hit else raw.index(b"\n") + 1
        new = bytearray(raw)
        new[at] = ord("0") if new[at] != ord("0") else ord("1")
        new = bytes(new)
    else:
        raise ValueError(how)
    with open(path, "wb") as f:
        f.write(new)
    return new


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty", "wrong-json", "flipped"])
def test_damaged_listing_and_record_copies_are_refetched(store, make_mount, how):
    files = {"runs/birds/run-1/outputs/model.pth": os.urandom(120_000),
             "runs/birds/run-1/outputs/config.json": b'{"lr": 0.1}\n',
             "runs/birds/run-1/metrics.txt": b"acc 0.9\n",
             "runs/fish/run-a/log.txt": b"log\n"}
    for k, v in files.items():
        store.put(k, v)
    assert store.register("pt", "runs/birds/run-1/outputs/", "--alias", "production") == 1
    assert store.register("pt", "runs/birds/run-1/") == 2
    want = {
        "runs": "dir", "runs/birds": "dir", "runs/fish": "dir", "runs/fish/run-a": "dir",
        "runs/fish/run-a/log.txt": "file", "runs/birds/run-1": "dir",
        "runs/birds/run-1/metrics.txt": "file", "runs/birds/run-1/outputs": "dir",
        "runs/birds/run-1/outputs/model.pth": "file",
        "runs/birds/run-1/outputs/config.json": "file",
        "models": "dir", "models/pt": "dir", "models/pt/1": "dir",
        "models/pt/1/model.pth": "file", "models/pt/1/config.json": "file",
        "models/pt/2": "dir", "models/pt/2/metrics.txt": "file",
        "models/pt/2/outputs": "dir", "models/pt/2/outputs/model.pth": "file",
        "models/pt/2/outputs/config.json": "file",
        "models/pt/latest": "link:2", "models/pt/production": "link:1"}

    def walk(m):
        out = {}
        for d, dirs, fs in os.walk(m.path):
            for n in dirs + fs:
                p = os.path.join(d, n)
                rel = os.path.relpath(p, m.path)
                out[rel] = "link:" + os.readlink(p) if os.path.islink(p) else \
                    "dir" if os.path.isdir(p) else "file"
        return out
    m = make_mount(store)
    assert walk(m) == want
    for k, v in files.items():
        assert read(m / k) == v
    m.stop()
    metas = [os.path.join(d, n) for d, _, ns in os.walk(m.cache_dir / "meta") for n in ns]
    # listings of runs/ and its 5 folders, registry/ and registry/pt/; 2 records and
    # an alias table
    assert len(metas) == 11, metas
    damaged = {p: corrupt(p, how) for p in metas}

    m.start()
    assert walk(m) == want
    for k, v in files.items():
        assert read(m / k) == v
    registered = {"models/pt/1/": "runs/birds/run-1/outputs/",
                  "models/pt/2/": "runs/birds/run-1/"}
    for rel, kind in want.items():
        if kind == "file" and rel.startswith("models/"):
            src = next(s + rel[len(v):] for v, s in registered.items() if rel.startswith(v))
            assert read(m / rel) == files[src], rel     # whole: checked by sha256
    assert read(m / "models/pt/production/model.pth") == \
        files["runs/birds/run-1/outputs/model.pth"]
    assert read(m / "models/pt/latest/outputs/config.json") == \
        files["runs/birds/run-1/outputs/config.json"]
    m.stop()
    # every damaged copy the walk used was replaced by the store's
    for p, bad in damaged.items():
        assert open(p, "rb").read() != bad, p
