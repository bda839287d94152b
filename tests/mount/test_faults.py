"""Fault injection between the mount (or the command line) and the store: a proxy in
front of Azurite resets, stalls, cuts and refuses answers on demand. The data is laid
out through Azurite's own port; the mount and `register` go through the proxy.

Every test checks the exact bytes or the exact errno, and how many faults the proxy
injected, so a fault that never fired fails the test rather than passing it."""
import errno
import hashlib
import json
import os
import re
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import is_mounted, run_cli, wait_for

MiB = 1 << 20
KiB = 1 << 10


def sha(data):
    return hashlib.sha256(data).hexdigest()


def read_through(path):
    with open(path, "rb") as f:
        return f.read()


def reads_exactly(path, data):
    """True once path reads back as data; EIO (the store still counts as down) is False."""
    try:
        return read_through(path) == data
    except OSError as e:
        assert e.errno == errno.EIO
        return False


def blob_names(store, prefix):
    """Names under prefix, listed from Azurite directly."""
    st, _, body = store.client._request(
        "GET", f"/{store.container}",
        {"restype": "container", "comp": "list", "prefix": prefix})
    assert st == 200, (st, body[:200])
    return sorted(n.text for n in ET.fromstring(body).iter("Name"))


def test_cold_read_survives_every_transient_fault(proxy, via, make_mount):
    data = os.urandom(8 * MiB)
    via.put("runs/e/r/big.bin", data)
    m = make_mount(via, "--chunk-size", "1M")
    assert os.path.getsize(m / "runs/e/r/big.bin") == len(data)
    blob = "/runs/e/r/big.bin"
    failing = [("reset", {}), ("reset", {"forward": False}), ("reset", {"fraction": 0.95}),
               ("status", {"status": 500}), ("status", {"status": 503}),
               ("status", {"status": 429}), ("truncate", {}), ("truncate", {"fraction": 0}),
               ("wrong_length", {}), ("misplaced", {})]
    slow = [("stall", {"seconds": 1.5, "where": "headers"}),
            ("stall", {"seconds": 1.5, "where": "body"})]
    for kind, params in failing + slow:
        proxy.fail_next(1, kind, method="GET", path=blob, **params)
    before = proxy.seen("GET", blob)

    got = read_through(m / "runs/e/r/big.bin")

    assert len(got) == len(data)
    assert sha(got) == sha(data)
    assert got == data
    assert proxy.pending() == 0
    assert proxy.injected(path=blob) == len(failing) + len(slow)
    for kind in ("reset", "status", "truncate", "wrong_length", "stall", "misplaced"):
        assert proxy.injected(kind, path=blob) >= 1, kind
    # every byte was answered once (the slow answers among them), in at most one
    # ranged read per 1 MiB chunk (fewer once the reader is sequential: a run of
    # chunks per read); each failed attempt was retried once
    answered = [r for r in proxy.requests("GET", blob)[before:]
                if r.fault is None or r.fault == "stall"]
    assert len(answered) <= 8
    spans = sorted(r.range for r in answered)
    assert spans[0][0] == 0 and spans[-1][1] == len(data) - 1, spans
    assert all(a[1] + 1 == b[0] for a, b in zip(spans, spans[1:])), spans
    assert all(s[0] % MiB == 0 for s in spans), spans
    assert proxy.seen("GET", blob) - before == len(answered) + len(failing)


def test_stalled_answers_are_abandoned_and_retried(proxy, via, make_mount):
    """No byte for 15 s is a stall: the attempt is dropped and a new one succeeds,
    whether the store stalls before its headers or in the middle of the body."""
    a, b = os.urandom(700 * KiB), os.urandom(900 * KiB)
    via.put("runs/e/r/a.bin", a)
    via.put("runs/e/r/b.bin", b)
    m = make_mount(via)
    assert os.path.getsize(m / "runs/e/r/a.bin") == len(a)
    assert os.path.getsize(m / "runs/e/r/b.bin") == len(b)
    ra = proxy.fail_next(1, "stall", method="GET", path="/runs/e/r/a.bin", seconds=45,
                         where="headers")
    rb = proxy.fail_next(1, "stall", method="GET", path="/runs/e/r/b.bin", seconds=45,
                         where="body", fraction=0.5)
    results = {}

    def read(name):
        t0 = time.monotonic()
        try:
            results[name] = (read_through(m / f"runs/e/r/{name}"), time.monotonic() - t0)
        except OSError as e:
            results[name] = (e, time.monotonic() - t0)
    threads = [threading.Thread(target=read, args=(n,)) for n in ("a.bin", "b.bin")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a read hung"

    for name, want in (("a.bin", a), ("b.bin", b)):
        got, took = results[name]
        assert isinstance(got, bytes), (name, got)
        assert got == want, name
        # not given up before the stall time; abandoned long before the stall ended
        assert took >= 13, (name, took)
        assert took < 45, (name, took)
    assert ra.injected == 1 and rb.injected == 1
    # the event itself: the stalled attempt was dropped and a second one answered
    for blob in ("/runs/e/r/a.bin", "/runs/e/r/b.bin"):
        recs = proxy.requests("GET", blob)
        assert [r.fault for r in recs] == ["stall", None], recs
        assert recs[1].t - recs[0].t >= 13, recs


def test_retry_after_is_honoured(proxy, via, make_mount):
    data = os.urandom(300 * KiB)
    via.put("runs/e/r/x.bin", data)
    m = make_mount(via)
    assert os.path.getsize(m / "runs/e/r/x.bin") == len(data)
    blob = "/runs/e/r/x.bin"
    proxy.fail_next(1, "status", method="GET", path=blob, status=503, retry_after=2)
    proxy.fail_next(1, "status", method="GET", path=blob, status=429, retry_after_ms=1500)

    assert read_through(m / "runs/e/r/x.bin") == data

    recs = proxy.requests("GET", blob)
    assert [r.fault for r in recs] == ["status", "status", None], recs
    first_wait, second_wait = recs[1].t - recs[0].t, recs[2].t - recs[1].t
    # each retry waited at least what the store asked for (a lower bound: a loaded
    # machine only makes it longer); the backoff alone would have retried sooner
    assert first_wait >= 1.9, first_wait
    assert second_wait >= 1.4, second_wait
    assert first_wait + second_wait < 30, (first_wait, second_wait)


def test_persistent_failure_gives_eio_in_time_and_the_mount_recovers(proxy, via, make_mount):
    data = os.urandom(600 * KiB)
    via.put("runs/e/r/model.bin", data)
    m = make_mount(via, "--timeout", "5")
    assert os.path.getsize(m / "runs/e/r/model.bin") == len(data)
    m.expect_log(r": WARN: http_do: (GET|HEAD) runs/e/r/model\.bin: giving up after "
                 r"\d+ attempts")
    m.expect_log(r": ERROR: fs_errno: /runs/e/r/model\.bin: the store failed: ")
    m.expect_log(r": WARN: store_state: the store is not answering ")
    blob = "/runs/e/r/model.bin"

    down = proxy.fail_always("status", status=500)
    t0 = time.monotonic()
    with open(m / "runs/e/r/model.bin", "rb") as f:
        with pytest.raises(OSError) as err:
            f.read()
    took = time.monotonic() - t0
    assert err.value.errno == errno.EIO, err.value
    assert took < 20, took
    # the first operation retried with backoff until its deadline; once the store
    # counts as down, later ones fail at once but for a probe every 2 s
    tried = proxy.requests(None, blob)
    assert len(tried) >= 3 and all(r.fault == "status" for r in tried), tried
    assert down.injected == len(proxy.requests(fault="status"))
    gave_up = re.findall(r"WARN: http_do: (?:GET|HEAD) runs/e/r/model\.bin: giving up "
                         r"after (\d+) attempts in ([0-9.]+) s", m.log())
    assert gave_up, m.log()
    for attempts, secs in gave_up:
        assert int(attempts) >= 2 and float(secs) <= 5.2, (attempts, secs)

    proxy.clear(down)
    assert m.proc.poll() is None and is_mounted(m.path)
    n = proxy.seen("GET", blob)

    wait_for(lambda: reads_exactly(m / "runs/e/r/model.bin", data), 15,
             "the mount to recover by itself")
    assert proxy.seen("GET", blob) > n
    assert proxy.injected() == down.injected


def test_a_store_that_never_answers_gives_eio_at_the_deadline(proxy, via, make_mount):
    data = os.urandom(200 * KiB)
    via.put("runs/e/r/slow.bin", data)
    m = make_mount(via, "--timeout", "5")
    assert os.path.getsize(m / "runs/e/r/slow.bin") == len(data)
    m.expect_log(r": WARN: http_do: GET runs/e/r/slow\.bin: giving up after ")
    m.expect_log(r": ERROR: fs_errno: /runs/e/r/slow\.bin: the store failed: ")
    m.expect_log(r": WARN: store_state: the store is not answering ")
    blob = "/runs/e/r/slow.bin"
    hang = proxy.fail_always("stall", method="GET", path=blob, seconds=120)

    t0 = time.monotonic()
    with open(m / "runs/e/r/slow.bin", "rb") as f:
        with pytest.raises(OSError) as err:
            f.read()
    took = time.monotonic() - t0
    assert err.value.errno == errno.EIO, err.value
    assert 4 <= took < 20, took
    assert hang.injected >= 1

    proxy.clear(hang)

    wait_for(lambda: reads_exactly(m / "runs/e/r/slow.bin", data), 15,
             "the mount to recover by itself")


def test_listing_faults_are_retried(proxy, via, make_mount):
    names = [f"f{i:02d}.txt" for i in range(12)]
    for n in names:
        via.put(f"runs/e/r/{n}", n)
    m = make_mount(via, env={"ARTIFACTFS_LIST_PAGE_SIZE": "5"})
    listing = "prefix=runs%2Fe%2Fr%2F&"
    faults = [("reset", {}), ("status", {"status": 503}), ("truncate", {}),
              ("wrong_length", {}), ("status", {"status": 500}),
              ("reset", {"forward": False})]
    for kind, params in faults:
        proxy.fail_next(1, kind, method="GET", path=listing, **params)

    assert sorted(os.listdir(m / "runs/e/r")) == names

    assert proxy.pending() == 0
    assert proxy.injected(path=listing) == len(faults)
    # three pages of five, each answered whole once
    assert len(proxy.requests("GET", listing, fault=None)) == 3
    assert (m / "runs/e/r/f07.txt").read_text() == "f07.txt"


def test_register_retries_faults_and_registers_once(proxy, via, make_mount):
    model, cfg = os.urandom(3 * MiB), b'{"lr": 0.01}'
    via.put("runs/e/r/out/model.bin", model)
    via.put("runs/e/r/out/cfg.json", cfg)
    rules = [
        proxy.fail_next(1, "status", method="HEAD", path="/runs/e/r/out", status=503),
        proxy.fail_next(1, "reset", method="GET", path="prefix=runs%2Fe%2Fr%2Fout%2F&"),
        proxy.fail_next(1, "truncate", method="GET", path="/runs/e/r/out/model.bin"),
        proxy.fail_next(1, "reset", method="GET", path="/runs/e/r/out/model.bin"),
        proxy.fail_next(1, "status", method="GET", path="prefix=registry%2Fm%2F&",
                        status=500),
        proxy.fail_next(1, "status", method="PUT", path="/registry/m/1.json", status=503),
        proxy.fail_next(1, "reset", method="PUT", path="/registry/m/1.json",
                        forward=False),
    ]

    p = run_cli("register", via.url, "m", "runs/e/r/out/", store=via)

    assert p.stdout.strip() == "1", p
    assert "WARN" not in p.stderr and "ERROR" not in p.stderr, p.stderr
    assert [r.injected for r in rules] == [1] * len(rules), rules
    assert proxy.injected() == len(rules)
    assert blob_names(via, "registry/m/") == ["registry/m/1.json"]
    record = json.loads(via.get("registry/m/1.json"))
    assert record["version"] == 1
    assert {f["path"]: (f["size"], f["sha256"]) for f in record["files"]} == {
        "model.bin": (len(model), sha(model)), "cfg.json": (len(cfg), sha(cfg))}
    m = make_mount(via)
    assert read_through(m / "models/m/1/model.bin") == model
    assert read_through(m / "models/m/latest/cfg.json") == cfg


def test_register_whose_create_answer_is_lost_registers_one_version(proxy, via):
    """The store creates the record but the answer never arrives: the retry finds
    the record already there. That record is this registration's, not a
    competitor's: one register call makes one version."""
    via.put("runs/e/r/out/model.bin", b"weights")
    lost = proxy.fail_next(1, "reset", method="PUT", path="/registry/m/")

    p = run_cli("register", via.url, "m", "runs/e/r/out/", store=via)

    assert lost.injected == 1
    assert proxy.requests("PUT", "/registry/m/")[0].target.endswith("/registry/m/1.json")
    assert blob_names(via, "registry/m/") == ["registry/m/1.json"]
    assert p.stdout.strip() == "1", p
