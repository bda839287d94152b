"""artifactfs stats MOUNTPOINT (a table, and --json) and --metrics ADDR:PORT (Prometheus's
text format on /metrics, checked with promtool): the figures move as a cold read and
then a warm one (a new mount over the same cache) say they must."""
import json
import os
import subprocess
import urllib.request

import conftest
from conftest import free_port, run_cli

MiB = 1 << 20


def stats(m):
    return json.loads(run_cli("stats", m.path, "--json").stdout)


def test_stats_and_metrics_follow_a_cold_and_a_warm_read(tmp_path, make_mount):
    store = conftest.LocalStore(tmp_path / "store")
    data = os.urandom(20 * MiB + 7)
    store.put("runs/e/r/ck.bin", data)
    port = free_port()
    m = make_mount(store, "--metrics", f":{port}")  # every interface
    assert ".artifactfs-stats" not in os.listdir(m.path)
    before = stats(m)
    assert before["cache"]["misses"] == 0 and before["cache"]["fetched_bytes"] == 0
    assert (m / "runs/e/r/ck.bin").read_bytes() == data
    cold = stats(m)
    assert cold["cache"]["misses"] >= 1
    assert cold["cache"]["fetched_bytes"] >= len(data)
    assert cold["cache"]["served_bytes"] >= len(data)
    assert cold["store"].startswith("file://") and cold["store_requests"]["up"] is True
    assert cold["cache"]["bound_bytes"] > 0
    # Prometheus's text format, as promtool reads it
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert b"\nartifactfs_cache_fetched_bytes_total " in text
    # the same figures in both, uploads too (zeros: this mount is read-only)
    assert cold["uploads"] == {"writable": False, "done": 0, "failed": 0, "bytes": 0}
    names = {ln.split()[0].split("{")[0] for ln in text.decode().splitlines()
             if ln and not ln.startswith("#")}
    for name in ("artifactfs_cache_memory_bytes", "artifactfs_cache_fetches_total",
                 "artifactfs_uploads_total", "artifactfs_writable"):
        assert name in names, name
    line = [ln for ln in text.decode().splitlines()
            if ln.startswith("artifactfs_served_bytes_total ")][0]
    assert float(line.split()[1]) >= len(data)
    # a table for people
    table = run_cli("stats", m.path).stdout
    assert "hits" in table and "misses" in table and "store" in table.splitlines()[0]
    # warm: a new mount over the same cache fetches nothing and hits
    m.restart()
    assert (m / "runs/e/r/ck.bin").read_bytes() == data
    warm = stats(m)
    assert warm["cache"]["fetched_bytes"] == 0 and warm["cache"]["misses"] == 0
    assert warm["cache"]["hits"] >= 1 and warm["cache"]["served_bytes"] >= len(data)
    assert warm["cache"]["chunks"] >= 3


def test_stats_of_a_store_that_fails(via, proxy, make_mount):
    via.put("runs/e/r/a.bin", b"a" * 1000)
    m = make_mount(via, "--timeout", "3")
    m.expect_log(r"not answering|giving up|the store failed")
    proxy.fail_always("status", status=503)
    try:
        (m / "runs/e/r/a.bin").read_bytes()
    except OSError:
        pass
    s = stats(m)
    r = s["store_requests"]
    assert r["errors"]["http_5xx"] >= 1 and r["retries"] >= 1 and r["gave_up"] >= 1
    assert r["up"] is False and r["latency_seconds"]["p99"] > 0


def test_stats_and_metrics_refuse_bad_input(tmp_path):
    p = run_cli("stats", tmp_path, check=False)
    assert p.returncode == 2 and "not an artifactfs mount" in p.stderr
    store = conftest.LocalStore(tmp_path / "store")
    (tmp_path / "mnt").mkdir()
    p = run_cli("mount", store.url, tmp_path / "mnt", "--metrics", "nowhere", check=False)
    assert p.returncode == 2 and "--metrics" in p.stderr and p.stderr.count("\n") == 1
