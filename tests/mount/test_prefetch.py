"""artifactfs prefetch PATH...: every byte of the files and folders named goes into the
cache, so that they read with the store down (here Azurite behind the fault proxy,
which then refuses every connection). Progress on a terminal and on a pipe, and the
exit status when a path is missing or the store fails."""
import os
import pty
import re
import select
import subprocess

import conftest

MiB = 1 << 20

FILES = {
    "runs/e/r/model.bin": os.urandom(20 * MiB + 3),
    "runs/e/r/sub/a.txt": b"a\n",
    "runs/e/r/sub/deeper/b.bin": os.urandom(300 * 1024),
    "runs/e/other/c.bin": os.urandom(2 * MiB),
}


def drain(master):
    """Everything written to a pseudo-terminal until its last writer is gone."""
    out = b""
    while True:
        r, _, _ = select.select([master], [], [], 60)
        if not r:
            break
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        out += data
    os.close(master)
    return out


def prefetch(*paths, pty_out=False):
    argv = [str(conftest.BIN), "prefetch", *map(str, paths)]
    if not pty_out:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        return p.returncode, p.stderr
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdout=slave, stderr=slave)
    os.close(slave)
    out = drain(master)
    p.wait(timeout=60)
    return p.returncode, out.decode(errors="replace")


def test_prefetch_then_every_byte_reads_with_the_store_down(via, proxy, make_mount):
    for k, v in FILES.items():
        via.put(k, v)
    assert via.register("m", "runs/e/r/") == 1
    via.alias("m", "production", "1")
    m = make_mount(via, "--timeout", "3")
    m.expect_log(r"not answering|giving up|the store failed|unreachable")
    # a model by its alias (a link named on the command line is followed), a folder
    rc, err = prefetch(m / "models/m/production", m / "runs/e/r/sub")
    assert rc == 0, err
    lines = err.strip().splitlines()
    # the model's 3 files, and the folder's 2
    assert lines[0] == "prefetch: 5 files, 20.6 MiB", lines
    assert sum(" done" in ln for ln in lines) == len(lines) - 2
    assert re.match(r"prefetch: .* in \d+ files read in [\d.]+ s \(.*/s\)$", lines[-1]), lines
    proxy.refuse()
    for rel, key in (("models/m/1/model.bin", "runs/e/r/model.bin"),
                     ("models/m/production/sub/deeper/b.bin", "runs/e/r/sub/deeper/b.bin"),
                     ("runs/e/r/sub/a.txt", "runs/e/r/sub/a.txt"),
                     ("runs/e/r/sub/deeper/b.bin", "runs/e/r/sub/deeper/b.bin")):
        subprocess.run(["cmp", str(m / rel), "-"], input=FILES[key], check=True)
    # what was not prefetched fails, and says so, with a non-zero status
    rc, err = prefetch(m / "runs/e/other/c.bin", m / "runs/e/nope")
    assert rc == 1
    lines = err.strip().splitlines()
    assert f"prefetch: {m.path}/runs/e/nope: No such file or directory" in lines, lines
    assert f"prefetch: {m.path}/runs/e/other/c.bin: Input/output error" in lines, lines
    proxy.accept_again()


def test_progress_on_a_terminal(via, make_mount):
    via.put("runs/e/r/big.bin", os.urandom(24 * MiB))
    m = make_mount(via)
    rc, out = prefetch(m / "runs/e/r", pty_out=True)
    assert rc == 0, out
    assert "\r" in out and "ETA" in out and "/s" in out, out
    assert "24.0 MiB / 24.0 MiB (100%), 1/1 files" in out, out


def test_bad_usage(make_mount, tmp_path):
    rc, err = prefetch()
    assert rc == 2 and err.count("\n") == 1
    p = subprocess.run([str(conftest.BIN), "prefetch", "--jobs", "0", str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "--jobs" in p.stderr


def test_what_is_not_on_a_mount_or_cannot_stay_in_its_cache_fails(make_mount, tmp_path):
    store = conftest.LocalStore(tmp_path / "store")
    store.put("runs/e/r/big.bin", os.urandom(12 * MiB))
    store.put("runs/e/r/small.bin", b"small")
    rc, err = prefetch(store.root / "runs/e/r/small.bin")  # the store's own folder
    assert rc == 1 and f"{store.root}/runs/e/r/small.bin: not on an artifactfs mount" in err
    m = make_mount(store, "--cache-size", "8M")
    rc, err = prefetch(m / "runs/e/r")
    assert rc == 1, err
    assert f"prefetch: {m.path}: 12.0 MiB do not fit in its cache (bound 8.0 MiB); its " \
        "files are not read" in err, err
    assert "prefetch: 0 files, 0 B" in err, err
    # overlapping paths count each file once
    rc, err = prefetch(m / "runs/e/r/small.bin", m / "runs/e/r/small.bin", m / "runs/e/r/..")
    assert rc == 1 and "12.0 MiB do not fit" in err, err
    rc, err = prefetch(m / "runs/e/r/small.bin", m / "runs/e/r/small.bin")
    assert rc == 0 and "prefetch: 1 files, 5 B" in err, err


def test_register_shows_progress_while_it_hashes(tmp_path):
    store = conftest.LocalStore(tmp_path / "store")
    store.put("runs/e/r/big.bin", os.urandom(70 * MiB))
    store.put("runs/e/r/small.txt", b"s")
    # on a pipe: a line per large file, the version alone on stdout
    p = subprocess.run([str(conftest.BIN), "register", store.url, "m", "runs/e/r/"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout == "1\n", p.stderr
    assert p.stderr == "register: hashed runs/e/r/big.bin (70 MiB)\n", p.stderr
    # on a terminal: one line redrawn
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(conftest.BIN), "register", store.url, "m", "runs/e/r/"],
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    err = drain(master)
    out = proc.stdout.read()
    proc.wait(timeout=60)
    assert out == b"2\n"
    assert b"\r\x1b[Kregister: hashing" in err and b"70 / 70 MiB (100%)" in err, err
