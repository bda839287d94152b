"""The MLflow step of scripts/bench: a cold read of a registered file of the bench's
blob size through an MLflow tracking server (the suite's tests/mount/mlflow_server.py),
by both paths:

- proxied artifacts (mlflow-artifacts:/): the server sends whole files only, so the
  strongest reference is one curl of the same bytes through the same server into a
  file; the server's copy is read once beforehand (it serves from memory);
- artifacts in Azurite (wasbs://, reached through a connection string's
  BlobEndpoint): read directly, beside the bench's 8 parallel ranged curl GETs of the
  same blob into one file.
"""
import os
import shutil
import statistics
import subprocess

# the helpers of scripts/bench (its module, handed to run())
BIN = MiB = ROOT = SERVER = sh = timed = dd = drop_caches = is_mounted = wait_for = None


def start_server(b, name, *args):
    log = open(b.work / f"{name}.log", "ab")
    p = subprocess.Popen(["/usr/bin/python3", str(SERVER), "--port", "0", *args],
                         stdout=subprocess.PIPE, stderr=log)
    b.procs.append(p)
    url = p.stdout.readline().decode().strip()
    if not url.startswith("http://"):
        raise SystemExit(f"bench: the MLflow test server did not start ({name}.log)")
    return url


def mount(b, url, env, name):
    cache = b.fresh(name)
    mnt = b.work / name
    mnt.mkdir(exist_ok=True)
    log = open(b.work / f"{name}.log", "ab")
    p = subprocess.Popen([BIN, "mount", "mlflow+" + url, mnt, "--cache-dir", cache,
                          "--cache-size", "40G", "-f"], stdout=log, stderr=log, env=env)
    wait_for(lambda: is_mounted(mnt), 30, "artifactfs mount (mlflow)")
    return mnt, p, cache


def read_cold(b, url, env, name, path, warm):
    mnt, p, cache = mount(b, url, env, name)
    try:
        os.listdir(mnt / os.path.dirname(path))  # the record, made before the clock
        drop_caches()
        warm()
        return timed(lambda: dd(mnt / path))
    finally:
        b.umount_afs(mnt, p)
        shutil.rmtree(cache, ignore_errors=True)


def run(b, bench):
    global BIN, MiB, ROOT, SERVER, sh, timed, dd, drop_caches, is_mounted, wait_for
    BIN, MiB, ROOT, sh, timed, dd = bench.BIN, bench.MiB, bench.ROOT, bench.sh, bench.timed, bench.dd
    drop_caches, is_mounted, wait_for = bench.drop_caches, bench.is_mounted, bench.wait_for
    SERVER = ROOT / "tests" / "mount" / "mlflow_server.py"
    from mlflow_client import MlflowClient
    size = b.size

    # proxied: the blob laid where the server keeps artifacts
    art = b.work / "mlflow-artifacts"
    url = start_server(b, "mlflow-proxied", "--artifacts-destination", str(art))
    c = MlflowClient(url)
    exp = c.create_experiment("bench")
    rid, uri = c.create_run(exp, run_name="r")
    rel = uri.split(":", 1)[1].strip("/")
    dest = art / rel / "model" / "blob.bin"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(b.local, dest)
    c.finish_run(rid)
    c.create_registered_model("bm")
    assert c.create_model_version("bm", f"{uri}/model", run_id=rid) == "1"
    dl = b.work / "mlflow-download.bin"
    src = f"{url}/api/2.0/mlflow-artifacts/artifacts/{rel}/model/blob.bin"

    def warm_proxied():
        sh("cat", dest, stdout=subprocess.DEVNULL)

    def curl_proxied():
        drop_caches()
        warm_proxied()
        try:
            return timed(lambda: sh("curl", "-sf", "-o", dl, src))
        finally:
            assert os.stat(dl).st_size == size
            dl.unlink()

    def afs_proxied():
        return read_cold(b, url, os.environ, "afs-mlflow-p", "models/bm/1/blob.bin",
                         warm_proxied)

    # direct: the blob in Azurite, where a wasbs:// artifact root says
    root = "wasbs://bench@devstoreaccount1.blob.core.windows.net/mlflow"
    urld = start_server(b, "mlflow-direct", "--default-artifact-root", root)
    cd = MlflowClient(urld)
    expd = cd.create_experiment("bench")
    ridd, urid = cd.create_run(expd, run_name="r")
    key = urid.split(".blob.core.windows.net/", 1)[1] + "/model/blob.bin"
    b.upload(key, b.local)
    cd.finish_run(ridd)
    cd.create_registered_model("bmd")
    assert cd.create_model_version("bmd", f"{urid}/model", run_id=ridd) == "1"
    from azure_client import DEV_KEY
    envd = {**os.environ, "AZURE_STORAGE_CONNECTION_STRING":
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{b.port}/devstoreaccount1;"}
    dld = b.work / "mlflow-direct-download.bin"

    def curl_direct():
        b.cold_state(key)
        try:
            return b.curl8(key, size, dld)[0]
        finally:
            dld.unlink()

    def afs_direct():
        return read_cold(b, urld, envd, "afs-mlflow-d", "models/bmd/1/blob.bin",
                         lambda: b.warm_server(key))

    t = b.contest({"curl proxied": curl_proxied, "proxied": afs_proxied,
                   "curl direct": curl_direct, "direct": afs_direct})
    t = {k: statistics.median(v) for k, v in t.items()}
    mbs = lambda s: size / MiB / s  # noqa: E731
    b.row(f"MLflow cold read of {size // MiB} MiB, proxied models/ (MiB/s)", mbs(t["proxied"]),
          "curl of the same proxied download into a file", mbs(t["curl proxied"]), ">= 0.9")
    b.row(f"MLflow cold read of {size // MiB} MiB, direct (wasbs) models/ (MiB/s)",
          mbs(t["direct"]), "8x ranged curl into one file", mbs(t["curl direct"]), ">= 1.0")

