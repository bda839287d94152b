"""One mount under valgrind's memcheck: no invalid access, no use of uninitialised
memory, no definite leak, across listing, reads, links, xattrs and the cache."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import ROOT, LocalStore, is_mounted, wait_for

MiB = 1 << 20
# memcheck runs the plain build (a binary built with ASan cannot run under valgrind)
PLAIN_BIN = ROOT / "build" / "artifactfs"


def test_mount_under_memcheck_has_no_errors(tmp_path):
    assert shutil.which("valgrind"), "valgrind is installed by scripts/install-deps --test"
    assert PLAIN_BIN.exists(), "make builds build/artifactfs"
    store = LocalStore(tmp_path / "store")
    data = os.urandom(3 * MiB + 11)
    store.put("runs/e/r/outputs/model.bin", data)
    store.put("runs/e/r/metrics.txt", "acc 0.9\n")
    store.put("registry/broken/1.json", "{not json")
    assert store.register("m", "runs/e/r/outputs/", "--alias", "production") == 1
    mnt, log = tmp_path / "mnt", tmp_path / "valgrind.log"
    mnt.mkdir()
    proc = subprocess.Popen(
        ["valgrind", "--tool=memcheck", "--error-exitcode=99", "--leak-check=full",
         "--errors-for-leak-kinds=definite", "--track-origins=yes", f"--log-file={log}",
         str(PLAIN_BIN), "mount", store.url, str(mnt), "--cache-dir", str(tmp_path / "cache"),
         "--chunk-size", "1M", "--xattrs", "-f"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: proc.poll() is None and is_mounted(mnt), 120, "the mount under valgrind")
        assert sorted(os.listdir(mnt / "models/m")) == ["1", "latest", "production"]
        assert os.readlink(mnt / "models/m/production") == "1"
        assert (mnt / "models/m/1/model.bin").read_bytes() == data
        assert (mnt / "runs/e/r/outputs/model.bin").read_bytes() == data
        assert (mnt / "runs/e/r/metrics.txt").read_bytes() == b"acc 0.9\n"
        assert os.getxattr(mnt / "models/m/1/model.bin", "user.artifactfs.key") == \
            b"runs/e/r/outputs/model.bin"
        assert os.listdir(mnt / "models/broken") == []
        with pytest.raises(FileNotFoundError):
            os.stat(mnt / "runs/nope")
        with pytest.raises(OSError):
            open(mnt / "runs/e/r/new.txt", "w")
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
        try:
            rc = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    report = log.read_text(errors="replace")
    assert rc == 0, report[-3000:]
    m = re.search(r"ERROR SUMMARY: (\d+) errors", report)
    assert m and m.group(1) == "0", report[-3000:]
