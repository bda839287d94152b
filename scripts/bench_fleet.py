"""The fleet step of scripts/bench: N mounts (default 8), each with a cache folder of
its own, start at once and read one cold registered file of the bench's blob size.

- through nginx with deploy/nginx-proxy.conf (filled with envsubst; its cache empty
  at the start of each run), `--proxy "http://nginx;DIRECT"`;
- beside the same N mounts reading straight from the store.

A counting relay in front of Azurite measures what the store sends in each case; the
time is from the start of the N reads to the end of the last one (the fleet's
start-up). Printed: the store's bytes as a multiple of the file size, and the
aggregate start-up time of both, side by side.
"""
import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time


def run(b, bench, mounts=8):
    import sys
    sys.path.insert(0, str(bench.ROOT / "tests" / "mount"))
    from relay import CountingRelay
    from azure_client import AzureClient
    relay = CountingRelay(b.port)
    try:
        measure(b, bench, mounts, relay, AzureClient)
    finally:
        relay.stop()


def measure(b, bench, mounts, relay, AzureClient):
    size = b.size
    store = f"http://127.0.0.1:{relay.port}/devstoreaccount1/bench"
    sas = AzureClient("127.0.0.1", b.port).container_sas("bench")
    model = "models/bench-blob/1/blob.bin"
    want = hashlib.sha256(open(b.local, "rb").read()).hexdigest()

    def nginx_start():
        d = tempfile.mkdtemp(prefix="artifactfs-nginx-", dir="/var/tmp")
        os.chmod(d, 0o755)
        shutil.chown(d, "www-data")
        port = bench.free_port()
        env = {**os.environ, "STORE_URL": f"http://127.0.0.1:{relay.port}",
               "LISTEN": f"127.0.0.1:{port}", "CACHE_DIR": d, "SAS": sas}
        conf = subprocess.run(["envsubst", "${STORE_URL} ${LISTEN} ${CACHE_DIR} ${SAS}"],
                              stdin=open(bench.ROOT / "deploy" / "nginx-proxy.conf"),
                              capture_output=True, text=True, env=env, check=True).stdout
        path = os.path.join(d, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        p = subprocess.Popen(["nginx", "-c", path, "-g", "daemon off;"],
                             stderr=subprocess.DEVNULL, start_new_session=True)
        bench.wait_for(lambda: b.port_answers(port), 20, "nginx")
        return p, d, f"http://127.0.0.1:{port}"

    def fleet(extra):
        ms = []
        try:
            for i in range(mounts):
                cache = b.fresh(f"fleet{i}")
                ms.append(b.mount_afs(cache, url=store, name=f"fleet{i}", extra=extra)
                          + (cache,))
            for mnt, _, _ in ms:
                os.listdir(mnt / os.path.dirname(model))  # the record, before the clock
            bench.drop_caches()
            b.warm_server("runs/bench/r/blob.bin")
            before = relay.sent
            out = [None] * len(ms)

            def one(i):
                h = hashlib.sha256()
                with open(ms[i][0] / model, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                out[i] = h.hexdigest()
            t0 = time.perf_counter()
            threads = [threading.Thread(target=one, args=(i,)) for i in range(len(ms))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            took = time.perf_counter() - t0
            assert out == [want] * len(ms), "a mount read other bytes"
            return took, (relay.sent - before) / size
        finally:
            for mnt, p, cache in ms:
                b.umount_afs(mnt, p)
                shutil.rmtree(cache, ignore_errors=True)

    def proxied():
        p, d, url = nginx_start()
        try:
            return fleet(("--proxy", f"{url};DIRECT"))
        finally:
            os.killpg(p.pid, 9)
            p.wait()
            shutil.rmtree(d, ignore_errors=True)

    def direct():
        return fleet(())

    res = b.contest({"proxied": proxied, "direct": direct})
    t = {k: statistics.median(x[0] for x in v) for k, v in res.items()}
    sent = {k: statistics.median(x[1] for x in v) for k, v in res.items()}
    what = f"{mounts} mounts start at once, cold {size // bench.MiB} MiB models/ file"
    b.row(f"{what}: bytes the store sends (x file size)", sent["proxied"],
          f"{mounts} mounts straight to the store", sent["direct"], "<= 1.02 (proxied)",
          lower=True)
    b.row(f"{what}: aggregate start-up (s)", t["proxied"], f"{mounts} mounts straight to the "
          "store", t["direct"], "report", lower=True)
