"""The prefetch step of scripts/bench: `artifactfs prefetch` of the cold 1 GiB registered
file, beside a cold `dd` of it through the mount and the 8 ranged curl GETs into one
file (the download a user does today), each from the same cold state."""
import shutil
import statistics
import subprocess


def run(b, bench):
    key = "runs/bench/r/blob.bin"
    model = "models/bench-blob/1/blob.bin"
    size = b.size
    dl = b.work / "prefetch-download.bin"

    def mounted(fn):
        def go():
            cache = b.fresh("prefetch")
            mnt, p = b.mount_afs(cache)
            try:
                b.cold_state(key)
                return bench.timed(lambda: fn(mnt))
            finally:
                b.umount_afs(mnt, p)
                shutil.rmtree(cache, ignore_errors=True)
        return go

    def curl_file():
        b.cold_state(key)
        try:
            return b.curl8(key, size, dl)[0]
        finally:
            dl.unlink()

    res = b.contest({
        "prefetch": mounted(lambda mnt: subprocess.run(
            [str(bench.BIN), "prefetch", str(mnt / model)], check=True,
            stderr=subprocess.DEVNULL)),
        "dd": mounted(lambda mnt: bench.dd(mnt / model)),
        "curl": curl_file,
    })
    t = {k: statistics.median(v) for k, v in res.items()}
    mbs = lambda s: size / bench.MiB / s  # noqa: E731
    what = f"prefetch of a cold {size // bench.MiB} MiB registered file (MiB/s)"
    b.row(what, mbs(t["prefetch"]), "cold dd of it through the mount", mbs(t["dd"]), ">= 0.95")
    b.row(what, mbs(t["prefetch"]), "8x ranged curl into one file", mbs(t["curl"]), ">= 1.0")
