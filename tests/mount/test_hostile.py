"""Hostile or broken content in the store: names no file system would accept (`..`,
`.`, empty segments, control characters, segments over NAME_MAX), a blob and a folder
of one name, a folder of 100,000 blobs, malformed registry JSON, records whose paths
try to leave their version folder, model folders with bad names.

For each case the mount stays up and mounted, shows nothing outside its own tree,
skips each bad entry with a warning (announced and then checked in the log) and
serves every good entry byte for byte. Azure (Azurite) holds keys a local file system
cannot; what a local store can express runs on both."""
import base64
import errno
import hashlib
import hmac
import json
import os
import re
import socket
import stat
import threading
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from email.utils import formatdate

import pytest

from azure_client import DEV_ACCOUNT, DEV_KEY
from conftest import AzureStore, LocalStore, is_mounted, running_azurite, wait_for
from faultproxy import FaultProxy

CTRL = re.compile(r"[\x00-\x1f\x7f]")


@pytest.fixture
def az(azurite):
    return AzureStore(azurite, f"t{uuid.uuid4().hex[:16]}")


def alive(m):
    assert m.proc.poll() is None, f"the mount exited ({m.proc.returncode}): {m.log()}"
    assert is_mounted(m.path), "the mount is gone"


def tree(m, top):
    """{path relative to the mount: "dir" | "file" | "link:TARGET"} of everything under
    top, checking on the way that every name is one a file system can hold and that
    every symlink names a version in its own folder."""
    out = {}
    for d, dirs, files in os.walk(m / top):
        for n in dirs + files:
            assert n and n not in (".", "..") and "/" not in n, repr(n)
            assert not CTRL.search(n) and len(n.encode()) <= 255, repr(n)
            p = os.path.join(d, n)
            rel = os.path.relpath(p, m.path)
            assert not rel.startswith(".."), rel
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(p)
                assert re.fullmatch(r"[1-9][0-9]*", target), (rel, target)
                out[rel] = "link:" + target
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            else:
                assert stat.S_ISREG(st.st_mode), (rel, st.st_mode)
                out[rel] = "file"
    return out


def errno_of(fn, *args):
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return 0


def read(path):
    with open(path, "rb") as f:
        return f.read()


def logged(m, pattern, timeout=5):
    """The log lines matching pattern; fails when there is none."""
    rx = re.compile(pattern)
    lines = []

    def found():
        lines[:] = [l for l in m.log().splitlines() if rx.search(l)]
        return bool(lines)
    wait_for(found, timeout, f"a log line matching {pattern!r}")
    return lines


def skipped(folder, shown):
    """The WARN line of a listing entry skipped for its name (shown as the log shows
    it: control characters as '?', at most 80 bytes)."""
    return (r": WARN: [a-z_0-9]+: skipping entry with an unusable name in '" +
            re.escape(folder) + r"': '" + re.escape(shown) + r"'$")


def stored(az):
    """Every key in the container, listed from Azurite directly (no delimiter): the
    hostile keys are really there as written."""
    keys, marker = [], ""
    while True:
        q = {"restype": "container", "comp": "list"}
        if marker:
            q["marker"] = marker
        st, _, body = az.client._request("GET", f"/{az.container}", q)
        assert st == 200, (st, body[:300])
        doc = ET.fromstring(body)
        keys += [n.text for n in doc.iter("Name")]
        marker = doc.findtext("NextMarker") or ""
        if not marker:
            return set(keys)


# ---- names ----

def test_dot_dotdot_and_empty_segments_never_escape(az, make_mount):
    good = {
        "runs/e/r/good.txt": b"good bytes\n",
        "runs/e/x.bin": b"the real runs/e/x.bin",
        "runs/e/r/sub/ok.bin": b"ok in sub",
    }
    hostile = {
        "runs/e/r/../x.bin": b"EVIL dotdot sibling",
        "runs/e/r/../../escape.bin": b"EVIL two up",
        "runs/e/r/./y.bin": b"EVIL dot",
        "runs/e/r//z.bin": b"EVIL empty segment",
        "runs/e/r/..": b"EVIL blob named dotdot",
        "runs/e/r/.": b"EVIL blob named dot",
        "runs/e/r/sub//w.bin": b"EVIL empty segment in sub",
        "runs/../top.bin": b"EVIL dotdot under runs",
        "runs//lead.bin": b"EVIL empty segment under runs",
        "runs/./here.bin": b"EVIL dot under runs",
    }
    for k, v in {**good, **hostile}.items():
        az.put(k, v)
    assert stored(az) == set(good) | set(hostile)
    m = make_mount(az)
    for folder, name in [("runs/e/r/", ".."), ("runs/e/r/", "."), ("runs/e/r/", ""),
                         ("runs/e/r/sub/", ""), ("runs/", ".."), ("runs/", ""),
                         ("runs/", ".")]:
        m.expect_log(skipped(folder, name))

    assert tree(m, "runs") == {
        "runs/e": "dir", "runs/e/x.bin": "file", "runs/e/r": "dir",
        "runs/e/r/good.txt": "file", "runs/e/r/sub": "dir", "runs/e/r/sub/ok.bin": "file"}
    for k, v in good.items():
        assert read(m / k) == v, k
    # the kernel resolves '.', '..' and '//' itself: a path through a hostile key
    # reaches the good blob of that path, or nothing, never the hostile blob's bytes
    assert read(str(m / "runs/e/r") + "/../x.bin") == good["runs/e/x.bin"]
    assert errno_of(read, str(m / "runs/e/r") + "/./y.bin") == errno.ENOENT
    assert errno_of(read, str(m / "runs/e/r") + "//z.bin") == errno.ENOENT
    assert errno_of(read, str(m / "runs/e/r") + "/../../escape.bin") == errno.ENOENT
    assert errno_of(read, str(m / "runs") + "/../top.bin") == errno.ENOENT
    assert errno_of(read, str(m / "runs") + "//lead.bin") == errno.ENOENT
    assert errno_of(os.stat, m / "runs/e/r/w.bin") == errno.ENOENT
    assert sorted(os.listdir(m.path)) == ["models", "runs"]
    assert os.listdir(m / "models") == []
    everything = b"".join(read(os.path.join(d, f)) for d, _, fs in os.walk(m.path)
                          for f in fs)
    assert b"EVIL" not in everything

    alive(m)
    for folder, name in [("runs/e/r/", ".."), ("runs/e/r/", "."), ("runs/e/r/", ""),
                         ("runs/e/r/sub/", ""), ("runs/", ".."), ("runs/", ""),
                         ("runs/", ".")]:
        assert logged(m, skipped(folder, name))


def put_names(store, folder, names):
    for n in names:
        store.put(folder + n, b"EVIL " + n.encode())


@pytest.mark.parametrize("kind", ["local", "azure"])
def test_control_characters_in_names_are_skipped(kind, tmp_path, request, make_mount):
    if kind == "local":
        store = LocalStore(tmp_path / "store")
        # Azurite itself cannot list names with most C0 controls (it answers 500);
        # a local folder holds any byte but '/' and NUL
        bad = ["a\x01b.txt", "tab\there.txt", "nl\nx.txt", "esc\x1b[31mred.txt",
               "del\x7f.txt", "cr\rx.txt"]
        bad_dir = "ctl\x02dir"
    else:
        store = AzureStore(request.getfixturevalue("azurite"), f"t{uuid.uuid4().hex[:16]}")
        bad = ["tab\there.txt", "nl\nx.txt", "del\x7f.txt", "cr\rx.txt"]
        bad_dir = "ctl\tdir"
    store.put("runs/e/r/ok.txt", b"fine\n")
    store.put("runs/e/r/deep/ok2.txt", b"fine too\n")
    put_names(store, "runs/e/r/", bad)
    put_names(store, "runs/e/r/deep/", bad)
    store.put(f"runs/e/r/{bad_dir}/inner.txt", b"EVIL inner")
    store.put(f"runs/e{bad[0]}/r/f.txt", b"EVIL experiment")
    if kind == "azure":
        assert {f"runs/e/r/{n}" for n in bad} <= stored(store)
    else:
        assert set(bad) <= set(os.listdir(store.root / "runs/e/r"))
    m = make_mount(store)
    shown = [CTRL.sub("?", n) for n in bad]
    for n in shown + [CTRL.sub("?", bad_dir)]:
        m.expect_log(skipped("runs/e/r/", n))
    for n in shown:
        m.expect_log(skipped("runs/e/r/deep/", n))
    m.expect_log(skipped("runs/", CTRL.sub("?", "e" + bad[0])))

    assert tree(m, "runs") == {"runs/e": "dir", "runs/e/r": "dir",
                               "runs/e/r/ok.txt": "file", "runs/e/r/deep": "dir",
                               "runs/e/r/deep/ok2.txt": "file"}
    assert read(m / "runs/e/r/ok.txt") == b"fine\n"
    assert read(m / "runs/e/r/deep/ok2.txt") == b"fine too\n"
    for n in bad:
        assert errno_of(os.stat, m / "runs/e/r" / n) == errno.ENOENT, repr(n)
        assert errno_of(read, m / "runs/e/r/deep" / n) == errno.ENOENT, repr(n)
    assert errno_of(os.listdir, m / "runs/e/r" / bad_dir) == errno.ENOENT
    assert errno_of(read, m / "runs/e/r" / bad_dir / "inner.txt") == errno.ENOENT
    assert errno_of(os.listdir, m / f"runs/e{bad[0]}/r") == errno.ENOENT

    alive(m)
    for n in shown + [CTRL.sub("?", bad_dir)]:
        assert logged(m, skipped("runs/e/r/", n))
    for n in shown:
        assert logged(m, skipped("runs/e/r/deep/", n))
    # the log itself never carries a raw control character from the store
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", m.log())
    for line in m.log().splitlines():
        assert line.startswith("artifactfs: "), repr(line)


def test_segments_over_name_max_are_skipped(az, make_mount):
    at_max = "m" * 251 + ".bin"             # 255 bytes: a valid name
    over = "L" * 256                        # one byte too many
    wide_ok = "\u00e9" * 127 + "x"          # 255 bytes in UTF-8
    wide_over = "\u00e9" * 128              # 256 bytes in UTF-8, 128 characters
    long_dir = "D" * 300
    files = {f"runs/e/r/{at_max}": b"at max", f"runs/e/r/{wide_ok}": b"wide ok",
             "runs/e/r/short.txt": b"short"}
    for k, v in files.items():
        az.put(k, v)
    az.put(f"runs/e/r/{over}", b"EVIL over")
    az.put(f"runs/e/r/{wide_over}", b"EVIL wide")
    az.put(f"runs/e/r/{long_dir}/inner.bin", b"EVIL inner")
    az.put(f"runs/{'E' * 400}/r/x.bin", b"EVIL experiment")
    assert {f"runs/e/r/{over}", f"runs/e/r/{wide_over}"} <= stored(az)
    m = make_mount(az)
    # the log names at most 80 bytes of a name
    for folder, n in [("runs/e/r/", over), ("runs/e/r/", long_dir), ("runs/", "E" * 400)]:
        m.expect_log(skipped(folder, n[:80]))
    m.expect_log(r": WARN: [a-z_0-9]+: skipping entry with an unusable name in "
                 r"'runs/e/r/': '(\u00e9){40}'$")

    assert tree(m, "runs") == {"runs/e": "dir", "runs/e/r": "dir",
                               f"runs/e/r/{at_max}": "file", f"runs/e/r/{wide_ok}": "file",
                               "runs/e/r/short.txt": "file"}
    for k, v in files.items():
        assert read(m / k) == v
    for n in (over, wide_over):
        assert errno_of(read, m / "runs/e/r" / n) == errno.ENOENT
    assert errno_of(read, m / "runs/e/r" / long_dir / "inner.bin") == errno.ENOENT
    assert errno_of(os.listdir, m / "runs" / ("E" * 400)) == errno.ENOENT

    alive(m)
    for folder, n in [("runs/e/r/", over), ("runs/e/r/", long_dir), ("runs/", "E" * 400)]:
        assert logged(m, skipped(folder, n[:80]))
    assert logged(m, r"in 'runs/e/r/': '(\u00e9){40}'$")


def test_blob_and_folder_of_one_name_across_pages(az, make_mount):
    """The blob `ckpt` and the folder `ckpt/` arrive on different listing pages (one
    entry per page); the folder wins, the blob's bytes are never served."""
    files = {"runs/e/r/ckpt/part-0": b"part zero", "runs/e/r/ckpt/part-1": b"part one",
             "runs/e/r/a.txt": b"a", "runs/e/r/z.txt": b"z",
             "runs/e/x/f.bin": b"f in x"}
    for k, v in files.items():
        az.put(k, v)
    az.put("runs/e/r/ckpt", b"EVIL blob shadowed by its folder")
    az.put("runs/e/x", b"EVIL blob named like an experiment folder")
    m = make_mount(az, env={"ARTIFACTFS_LIST_PAGE_SIZE": "1"})
    m.expect_log(r": WARN: [a-z_0-9]+: blob 'runs/e/r/ckpt' has the name of a "
                 r"folder; serving the folder$")
    m.expect_log(r": WARN: [a-z_0-9]+: blob 'runs/e/x' has the name of a folder; "
                 r"serving the folder$")

    assert tree(m, "runs") == {
        "runs/e": "dir", "runs/e/r": "dir", "runs/e/x": "dir", "runs/e/x/f.bin": "file",
        "runs/e/r/a.txt": "file", "runs/e/r/z.txt": "file", "runs/e/r/ckpt": "dir",
        "runs/e/r/ckpt/part-0": "file", "runs/e/r/ckpt/part-1": "file"}
    for k, v in files.items():
        assert read(m / k) == v
    assert errno_of(read, m / "runs/e/r/ckpt") == errno.EISDIR
    assert errno_of(read, m / "runs/e/x") == errno.EISDIR

    alive(m)
    assert logged(m, r"blob 'runs/e/r/ckpt' has the name of a folder; serving the folder")
    assert logged(m, r"blob 'runs/e/x' has the name of a folder; serving the folder")


# ---- the registry ----

def record(name, version, source, files):
    return json.dumps({"name": name, "version": version, "source": source,
                       "created": "2026-11-23T07:00:00Z", "description": "", "tags": {},
                       "files": files})


def entry(store, key, path, data):
    return {"path": path, "size": len(data), "etag": store.etag(key),
            "sha256": hashlib.sha256(data).hexdigest()}


def unusable(name, version, why):
    return (rf": WARN: [a-z_0-9]+: registry record of model {re.escape(name)} version "
            rf"{version} is unusable \({re.escape(why)}\); skipped$")


def test_malformed_registry_json_is_skipped(store, make_mount):
    model = os.urandom(200_000)
    store.put("runs/e/r/out/model.bin", model)
    store.put("runs/e/r/out/cfg.json", b'{"lr": 0.1}')
    assert store.register("m", "runs/e/r/out/", "--alias", "production") == 1
    good = json.loads(store.get("registry/m/1.json"))

    def like_good(**change):
        return json.dumps({**good, **change})
    broken = {
        2: ("{not json", "not a JSON object"),
        3: ('{"name": "m", "version": 3', "not a JSON object"),
        4: ("[1, 2, 3]", "not a JSON object"),
        5: ("", "not a JSON object"),
        6: ('"just a string"', "not a JSON object"),
        7: ("[" * 200_000 + "]" * 200_000, "not a JSON object"),
        8: ("\x00\xff\xfe garbage \x01", "not a JSON object"),
        9: (like_good(version=9, name="other"), '"name" does not match its folder'),
        10: (like_good(version=100), '"version" does not match its file name'),
        11: (like_good(version="11"), '"version" does not match its file name'),
        12: (like_good(version=12, files="model.bin"), 'no "files" list'),
        13: (like_good(version=13, source=None), 'no "source"'),
        14: (like_good(version=14, source=""), 'bad "source"'),
    }
    for v, (text, _) in broken.items():
        store.put(f"registry/m/{v}.json", text)
    # a record of good shape whose file entries are broken one by one
    store.put("registry/m/16.json", like_good(version=16, files=[
        {"path": "model.bin", "size": -1, "etag": good["files"][0]["etag"]},
        {"path": "cfg.json", "size": "11", "etag": "x"},
        {"path": "a.bin", "size": 1},
        {"path": "b.bin", "size": 1, "etag": ""},
        {"path": "c.bin", "size": 1, "etag": "x", "sha256": "abc"},
        {"path": "d.bin", "size": 1.5, "etag": "x"},
        {"path": 7, "size": 1, "etag": "x"},
        "not an object",
        [f for f in good["files"] if f["path"] == "cfg.json"][0]]))
    store.put("registry/m/aliases.json", json.dumps(
        {"production": 1, "staging": "1", "latest": 1, "7": 1, "../up": 1, "a/b": 1,
         "neg": -1, "big": 10**12, "frac": 1.5, "dangling": 14, "ok-alias": 16}))
    store.put("registry/n/1.json", json.dumps({**good, "name": "n"}))
    store.put("registry/n/aliases.json", "[1, 2]")
    store.put("registry/o/1.json", json.dumps({**good, "name": "o"}))
    store.put("registry/o/aliases.json", '{"production": 1')
    m = make_mount(store)
    for v, (_, why) in broken.items():
        m.expect_log(unusable("m", v, why))
    for f in ["model.bin", "cfg.json", "a.bin", "b.bin", "c.bin", "d.bin", "?"]:
        m.expect_log(rf": WARN: [a-z_0-9]+: model m version 16: file '{re.escape(f)}' "
                     r"has a bad size, etag or sha256; skipped$|"
                     rf": WARN: [a-z_0-9]+: model m version 16: file path "
                     rf"'{re.escape(f)}' is not a plain relative path; skipped$")
    bad_aliases = ["staging", "latest", "7", "../up", "a/b", "neg", "big", "frac"]
    for a in bad_aliases:
        m.expect_log(rf": WARN: [a-z_0-9]+: model m: alias '{re.escape(a)}' is not "
                     r"a name with a version; skipped$")
    m.expect_log(r": WARN: [a-z_0-9]+: aliases of model n are not a JSON object; "
                 r"ignored$")
    m.expect_log(r": WARN: [a-z_0-9]+: aliases of model o are not a JSON object; "
                 r"ignored$")

    assert tree(m, "models") == {
        "models/m": "dir", "models/n": "dir", "models/o": "dir",
        "models/m/1": "dir", "models/m/1/model.bin": "file", "models/m/1/cfg.json": "file",
        "models/m/16": "dir", "models/m/16/cfg.json": "file",
        "models/m/latest": "link:16", "models/m/production": "link:1",
        "models/m/ok-alias": "link:16",
        "models/n/1": "dir", "models/n/1/model.bin": "file", "models/n/1/cfg.json": "file",
        "models/n/latest": "link:1",
        "models/o/1": "dir", "models/o/1/model.bin": "file", "models/o/1/cfg.json": "file",
        "models/o/latest": "link:1"}
    assert read(m / "models/m/production/model.bin") == model
    assert read(m / "models/m/1/cfg.json") == b'{"lr": 0.1}'
    assert read(m / "models/m/latest/cfg.json") == b'{"lr": 0.1}'
    assert read(m / "models/m/ok-alias/cfg.json") == b'{"lr": 0.1}'
    assert read(m / "models/n/latest/model.bin") == model
    assert read(m / "models/o/1/model.bin") == model
    for v in broken:
        assert errno_of(os.listdir, m / f"models/m/{v}") == errno.ENOENT, v
    assert errno_of(os.readlink, m / "models/m/dangling") == errno.ENOENT
    assert errno_of(os.readlink, m / "models/m/staging") == errno.ENOENT

    alive(m)
    for v, (_, why) in broken.items():
        assert logged(m, unusable("m", v, why)), v
    for a in bad_aliases:
        assert logged(m, rf"model m: alias '{re.escape(a)}' is not a name with a version")
    for f in ["model.bin", "cfg.json", "a.bin", "b.bin", "c.bin", "d.bin"]:
        assert logged(m, rf"model m version 16: file '{re.escape(f)}' has a bad size, "
                         r"etag or sha256; skipped$")
    assert len(logged(m, r"model m version 16: file path '\?' is not a plain relative "
                         r"path; skipped$")) >= 2
    assert logged(m, r"aliases of model n are not a JSON object")
    assert logged(m, r"aliases of model o are not a JSON object")


def test_record_with_trailing_garbage_is_skipped(store, make_mount):
    """A record is one JSON document: text after it (two records run together, a
    writer that appended) makes the file malformed, not the first document valid."""
    model = os.urandom(40_000)
    store.put("runs/e/r/out/model.bin", model)
    assert store.register("m", "runs/e/r/out/") == 1
    good = json.loads(store.get("registry/m/1.json"))
    two = json.dumps({**good, "version": 2}) + json.dumps({**good, "version": 2,
                                                             "files": []})
    store.put("registry/m/2.json", two)
    store.put("registry/m/3.json", json.dumps({**good, "version": 3}) + " trailing garbage")
    store.put("registry/m/aliases.json", '{"production": 1} {"production": 3}')
    m = make_mount(store)
    for v in (2, 3):
        m.expect_log(unusable("m", v, "not a JSON object"))
    m.expect_log(r": WARN: [a-z_0-9]+: aliases of model m are not a JSON object; "
                 r"ignored$")

    assert tree(m, "models") == {"models/m": "dir", "models/m/1": "dir",
                                 "models/m/1/model.bin": "file", "models/m/latest": "link:1"}
    assert read(m / "models/m/latest/model.bin") == model

    alive(m)
    for v in (2, 3):
        assert logged(m, unusable("m", v, "not a JSON object"))
    assert logged(m, r"aliases of model m are not a JSON object")


def test_oversized_record_is_skipped_and_the_model_still_served(store, make_mount):
    model = os.urandom(50_000)
    store.put("runs/e/r/out/model.bin", model)
    assert store.register("m", "runs/e/r/out/") == 1
    good = json.loads(store.get("registry/m/1.json"))
    padding = "x" * (17 << 20)
    store.put("registry/m/2.json", json.dumps({**good, "version": 2,
                                                "description": padding}))
    m = make_mount(store)
    m.expect_log(r": WARN: .*model m version 2\b")

    assert tree(m, "models") == {"models/m": "dir", "models/m/1": "dir",
                                 "models/m/1/model.bin": "file", "models/m/latest": "link:1"}
    assert read(m / "models/m/latest/model.bin") == model
    assert errno_of(os.listdir, m / "models/m/2") == errno.ENOENT

    alive(m)
    assert logged(m, r": WARN: .*model m version 2\b")


def test_record_paths_never_leave_the_version_folder(store, make_mount):
    files = {"runs/e/r/out/model.bin": os.urandom(70_000),
             "runs/e/r/out/nested/ok.bin": b"nested ok"}
    evil = {"runs/e/r/secret.bin": b"EVIL one up", "runs/e/r2/other.bin": b"EVIL two up",
            "runs/e/r/out/dup.bin": b"dup"}
    for k, v in {**files, **evil}.items():
        store.put(k, v)
    src = "runs/e/r/out/"
    good = [entry(store, k, k[len(src):], v) for k, v in files.items()]
    secret = entry(store, "runs/e/r/secret.bin", "../secret.bin", evil["runs/e/r/secret.bin"])
    other = entry(store, "runs/e/r2/other.bin", "../../r2/other.bin",
                  evil["runs/e/r2/other.bin"])
    dup = entry(store, "runs/e/r/out/dup.bin", "dup.bin", b"dup")
    hostile_paths = ["sub/../../secret.bin", "/etc/passwd", "", ".", "..", "a//b",
                     "sub/./x", "trailing/", "ctl\x01.bin", "x" * 256, "./model.bin",
                     "nested/../model.bin", "nested/ok.bin/"]
    hostile = [secret, other] + [{**secret, "path": p} for p in hostile_paths]
    clashes = [{**dup}, {**dup}, {**good[0], "path": "model.bin/inner"}]
    store.put("registry/evil/1.json", record("evil", 1, src, good + hostile + clashes))
    for v, source in [(2, "runs/e/r/out/../.."), (3, "/runs/e/r/out"), (4, "../outside"),
                      (5, "runs//e/r/out"), (6, "runs/e/r/out/./"), (7, ".."), (8, "/")]:
        store.put(f"registry/evil/{v}.json", record("evil", v, source, good))
    m = make_mount(store)
    shown_paths = ["../secret.bin", "../../r2/other.bin"] + [
        CTRL.sub("?", p)[:100] for p in hostile_paths]
    for p in shown_paths:
        m.expect_log(r": WARN: [a-z_0-9]+: model evil version 1: file path '" +
                     re.escape(p) + r"' is not a plain relative path; skipped$")
    m.expect_log(r": WARN: [a-z_0-9]+: model evil version 1: file '(dup\.bin|model\.bin/"
                 r"inner)' clashes with another entry; skipped$")
    for v in range(2, 9):
        m.expect_log(unusable("evil", v, '"source" is not a plain store folder') + "|" +
                     unusable("evil", v, 'bad "source"'))

    got = tree(m, "models")
    assert got == {"models/evil": "dir", "models/evil/1": "dir",
                   "models/evil/1/model.bin": "file", "models/evil/1/nested": "dir",
                   "models/evil/1/nested/ok.bin": "file", "models/evil/1/dup.bin": "file",
                   "models/evil/latest": "link:1"}, got
    assert read(m / "models/evil/1/model.bin") == files["runs/e/r/out/model.bin"]
    assert read(m / "models/evil/latest/nested/ok.bin") == b"nested ok"
    assert read(m / "models/evil/1/dup.bin") == b"dup"
    # paths through the version folder reach only what the tree itself holds
    assert errno_of(read, str(m / "models/evil/1") + "/../secret.bin") == errno.ENOENT
    assert errno_of(read, str(m / "models/evil/1") + "/../../r2/other.bin") == errno.ENOENT
    assert errno_of(read, m / "models/evil/1/secret.bin") == errno.ENOENT
    assert errno_of(read, m / "models/evil/1/model.bin/inner") == errno.ENOTDIR
    everything = b"".join(read(os.path.join(d, f)) for d, _, fs in os.walk(m / "models")
                          for f in fs)
    assert b"EVIL" not in everything
    for v in range(2, 9):
        assert errno_of(os.listdir, m / f"models/evil/{v}") == errno.ENOENT

    alive(m)
    for p in shown_paths:
        assert logged(m, r"model evil version 1: file path '" + re.escape(p) + "'"), p
    assert logged(m, r"model evil version 1: file 'dup\.bin' clashes")
    assert logged(m, r"model evil version 1: file 'model\.bin/inner' clashes")
    for v in range(2, 9):
        assert logged(m, rf"registry record of model evil version {v} is unusable")


BAD_MODEL_NAMES_LOCAL = ["bad name", "-dash", ".hidden", "_under", "x" * 129,
                         "caf\u00e9", "semi;colon", "a+b", "ctl\x01"]
BAD_MODEL_NAMES_AZURE = BAD_MODEL_NAMES_LOCAL[:-1] + ["tab\tname", "..", "."]


@pytest.mark.parametrize("kind", ["local", "azure"])
def test_model_folders_with_bad_names_are_skipped(kind, tmp_path, request, make_mount):
    if kind == "local":
        store = LocalStore(tmp_path / "store")
        bad = BAD_MODEL_NAMES_LOCAL
    else:
        store = AzureStore(request.getfixturevalue("azurite"), f"t{uuid.uuid4().hex[:16]}")
        bad = BAD_MODEL_NAMES_AZURE
    model = os.urandom(30_000)
    store.put("runs/e/r/out/model.bin", model)
    assert store.register("good", "runs/e/r/out/") == 1
    rec = json.loads(store.get("registry/good/1.json"))
    for n in bad:
        store.put(f"registry/{n}/1.json", json.dumps({**rec, "name": n}))
        store.put(f"registry/{n}/aliases.json", '{"production": 1}')
    if kind == "azure":
        store.put("registry//1.json", json.dumps({**rec, "name": ""}))
    m = make_mount(store)
    shown = [CTRL.sub("?", n)[:80] for n in bad] + ([""] if kind == "azure" else [])
    for n in shown:
        m.expect_log(r": WARN: [a-z_]+: .*'" + re.escape(n) + "'")

    assert tree(m, "models") == {"models/good": "dir", "models/good/1": "dir",
                                 "models/good/1/model.bin": "file",
                                 "models/good/latest": "link:1"}
    assert read(m / "models/good/latest/model.bin") == model
    for n in bad:
        if n in (".", ".."):
            continue
        assert errno_of(os.listdir, m / "models" / n) == errno.ENOENT, n
        assert errno_of(read, m / "models" / n / "1/model.bin") == errno.ENOENT, n
        assert errno_of(os.readlink, m / "models" / n / "production") == errno.ENOENT, n

    alive(m)
    missing = [n for n in shown
               if not any(re.search(r": WARN: [a-z_]+: .*'" + re.escape(n) + "'", l)
                          for l in m.log().splitlines())]
    assert not missing, f"model folders skipped without a warning: {missing}"


# ---- a folder of 100,000 blobs ----

MANY = 100_000
# one blob in about 10,000 has bytes of its own; the rest are empty
WITH_BYTES = {i: f"blob {i} of {MANY}\n".encode() for i in range(0, MANY, 9_973)}


def many_name(i):
    return f"f{i:06d}.txt"


@pytest.fixture
def big_azurite(tmp_path):
    """An Azurite of its own (in memory) for the 100,000 blobs: Azurite scans every
    blob it holds on each listing, so they stay out of the session's instance."""
    with running_azurite(tmp_path, "--inMemoryPersistence") as port:
        yield port


def put_pipelined(port, container, items, conns=4, window=64):
    """PUTs many small blobs fast: a few keep-alive connections, each with up to
    `window` requests in flight (Azurite answers them in order). Shared Key signed
    like azure_client, per request."""
    key = base64.b64decode(DEV_KEY)

    def request(name, body):
        date = formatdate(usegmt=True)
        path = f"/{DEV_ACCOUNT}/{container}/" + urllib.parse.quote(name)
        sts = (f"PUT\n\n\n{len(body) or ''}\n\n\n\n\n\n\n\n\nx-ms-blob-type:BlockBlob\n"
               f"x-ms-date:{date}\nx-ms-version:2021-08-06\n/{DEV_ACCOUNT}{path}")
        sig = base64.b64encode(hmac.new(key, sts.encode(), hashlib.sha256).digest()).decode()
        return (f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"x-ms-blob-type: BlockBlob\r\nx-ms-date: {date}\r\n"
                f"x-ms-version: 2021-08-06\r\nAuthorization: SharedKey {DEV_ACCOUNT}:{sig}"
                f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    errors = []

    def run(part):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=120)
            buf, sent, done = b"", 0, 0
            while done < len(part):
                while sent < len(part) and sent - done < window:
                    s.sendall(request(*part[sent]))
                    sent += 1
                data = s.recv(1 << 20)
                assert data, "azurite closed the connection"
                buf += data
                while (end := buf.find(b"\r\n\r\n")) >= 0:
                    head = buf[:end]
                    assert head.startswith(b"HTTP/1.1 201 "), head[:300]
                    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                    skip = int(length.group(1)) if length else 0
                    if len(buf) < end + 4 + skip:
                        break
                    buf = buf[end + 4 + skip:]
                    done += 1
            s.close()
        except Exception as e:
            errors.append(e)
    threads = [threading.Thread(target=run, args=(items[i::conns],)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not any(t.is_alive() for t in threads), "an upload hung"
    assert not errors, errors


def vm(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(field)


@pytest.mark.parametrize("kind", ["local", "azure"])
def test_folder_of_100000_blobs(kind, tmp_path, request, make_mount):
    """Every one of 100,000 names is listed (through 20 pages of 5,000 on Azure), and
    the daemon stays within the memory budget the product sets itself (DESIGN: under
    100 MiB while streaming a 10 GiB file) while it holds the folder: the listing
    itself (168 bytes of struct blob_entry plus a name per entry, about 25 MiB) and
    libfuse's copy of the directory for readdir (about 20 MiB) fit with room to spare;
    a listing that costs a kilobyte per entry does not."""
    if kind == "local":
        store = LocalStore(tmp_path / "store")
    else:
        port = request.getfixturevalue("big_azurite")
        store = AzureStore(port, f"t{uuid.uuid4().hex[:16]}")
        # the mount lists through a proxy that counts the pages
        proxy = FaultProxy(port).start()
        request.addfinalizer(proxy.stop)
        store.url = f"http://127.0.0.1:{proxy.port}/devstoreaccount1/{store.container}"
    store.put("runs/small/r/x.txt", b"small")
    # mount first: the mount's start-up probe lists the container's top with one
    # result, which Azurite answers by walking every blob one at a time
    m = make_mount(store)
    assert os.listdir(m / "models") == []
    items = [(f"runs/many/{many_name(i)}", WITH_BYTES.get(i, b"")) for i in range(MANY)]
    t0 = time.monotonic()
    if kind == "local":
        os.makedirs(store.root / "runs/many")
        dfd = os.open(store.root / "runs/many", os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(MANY):
                fd = os.open(many_name(i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644,
                             dir_fd=dfd)
                if i in WITH_BYTES:
                    os.write(fd, WITH_BYTES[i])
                os.close(fd)
        finally:
            os.close(dfd)
    else:
        put_pipelined(port, store.container, items)
    upload = time.monotonic() - t0
    before = vm(m.proc.pid, "VmRSS")

    t0 = time.monotonic()
    names = os.listdir(m / "runs/many")
    cold = time.monotonic() - t0
    after = vm(m.proc.pid, "VmRSS")
    t0 = time.monotonic()
    again = os.listdir(m / "runs/many")
    warm = time.monotonic() - t0
    print(f"\n{kind}: upload {upload:.1f} s, cold listing {cold:.1f} s, warm {warm:.2f} s, "
          f"RSS {before >> 20} -> {after >> 20} MiB (peak {vm(m.proc.pid, 'VmHWM') >> 20})")

    assert len(names) == MANY
    assert sorted(names) == [many_name(i) for i in range(MANY)]
    assert sorted(again) == sorted(names)
    assert sorted(os.listdir(m / "runs")) == ["many", "small"]
    assert read(m / "runs/small/r/x.txt") == b"small"
    for i, data in WITH_BYTES.items():
        assert os.path.getsize(m / "runs/many" / many_name(i)) == len(data)
        assert read(m / "runs/many" / many_name(i)) == data
    for i in (1, 4_242, 50_001, MANY - 1):
        assert os.path.getsize(m / "runs/many" / many_name(i)) == 0
        assert read(m / "runs/many" / many_name(i)) == b""
    assert errno_of(os.stat, m / "runs/many" / many_name(MANY)) == errno.ENOENT
    assert warm < 5, warm
    if kind == "azure":
        pages = proxy.requests("GET", "prefix=runs%2Fmany%2F")
        assert len(pages) == MANY // 5000, pages[:3]
        assert sum("marker=" in r.target for r in pages) == MANY // 5000 - 1
        assert proxy.injected() == 0
    alive(m)
    # the bound is the daemon's own: AddressSanitizer's shadow memory and quarantine
    # are not, so a sanitized build is held to the listing checks above only
    if "/san/" not in os.environ.get("ARTIFACTFS_BIN", ""):
        assert after <= 100 << 20, \
            f"the daemon holds {after >> 20} MiB after listing {MANY} names " \
            f"({(after - before) // MANY} bytes per name)"
