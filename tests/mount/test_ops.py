"""Running artifactfs the way operators run filesystems: make install lays out its
files; an fstab line (in a scratch fstab, mount -T) mounts through the mount helper
with its options and a root-only environment file, and umount unmounts; the systemd
units pass systemd-analyze verify and the daemon says READY=1 to systemd's notify
socket once the mount answers; the Kubernetes manifests parse and agree on the image,
the paths and the readiness file; the man page covers every option of --help.

Tests marked build_only check what the build and packaging lay out, with the plain
build: the sanitized suite (make check SANITIZE=...) leaves them to the plain one."""
import os
import re
import socket
import subprocess
import uuid

import pytest
import yaml

import conftest
from conftest import AzureStore, is_mounted, wait_for

ROOT = conftest.ROOT
HELPER = "/sbin/mount.artifactfs"


@pytest.mark.build_only
def test_make_install_lays_out_the_files(tmp_path):
    dest = tmp_path / "root"
    subprocess.run(["make", "-s", "-C", str(ROOT), "install", f"DESTDIR={dest}",
                    "PREFIX=/usr"], check=True, capture_output=True)
    for f in ("usr/bin/artifactfs", "sbin/mount.artifactfs",
              "usr/share/man/man1/artifactfs.1",
              "usr/share/doc/artifactfs/examples/systemd/artifactfs@.service",
              "usr/share/doc/artifactfs/examples/systemd/mnt-artifacts.mount",
              "usr/share/doc/artifactfs/examples/kubernetes/daemonset.yaml",
              "usr/share/doc/artifactfs/nginx-proxy.conf"):
        assert (dest / f).is_file(), f
    assert os.access(dest / "usr/bin/artifactfs", os.X_OK)
    helper = (dest / "sbin/mount.artifactfs").read_text()
    assert "ARTIFACTFS_BIN:-/usr/bin/artifactfs" in helper and "@BINDIR@" not in helper
    p = subprocess.run([str(dest / "usr/bin/artifactfs"), "--version"], capture_output=True,
                       text=True, check=True)
    assert p.stdout.startswith("artifactfs ")


@pytest.fixture
def helper_installed():
    """The mount helper where mount(8) looks for it, pointing at this build."""
    if os.path.exists(HELPER):
        pytest.fail(f"{HELPER} exists already: not this test's to replace")
    os.symlink(ROOT / "deploy" / "mount.artifactfs", HELPER)
    try:
        yield
    finally:
        os.unlink(HELPER)


def test_fstab_line_mounts_with_options_and_env_file(azurite, tmp_path, helper_installed):
    store = AzureStore(azurite, f"t{uuid.uuid4().hex[:16]}")
    store.put("runs/e/r/m.bin", b"through fstab")
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    mnt.mkdir()
    env = tmp_path / "artifacts.env"
    env.write_text("# the store's credentials\n"
                   "AZURE_STORAGE_CONNECTION_STRING='UseDevelopmentStorage=true'\n")
    env.chmod(0o600)
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{store.url} {mnt} artifactfs _netdev,nofail,noauto,x-systemd.automount,"
                     f"cache_dir={cache},ttl=30,allow_other,env_file={env} 0 0\n")
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    run_env["ARTIFACTFS_BIN"] = str(conftest.BIN)
    p = subprocess.run(["mount", "-T", str(fstab), str(mnt)], capture_output=True, text=True,
                       env=run_env, timeout=60)
    try:
        assert p.returncode == 0, p.stderr
        assert is_mounted(mnt)
        assert (mnt / "runs/e/r/m.bin").read_bytes() == b"through fstab"
        mounts = [ln.split() for ln in open("/proc/self/mounts") if ln.split()[1] == str(mnt)]
        assert "allow_other" in mounts[0][3].split(","), mounts  # an option went through
        # the source is the fstab line's, so mount(8) knows the line is mounted
        assert mounts[0][0] == store.url and mounts[0][2] == "fuse.artifactfs", mounts
    finally:
        u = subprocess.run(["umount", str(mnt)], capture_output=True, text=True)
    assert u.returncode == 0, u.stderr
    wait_for(lambda: not is_mounted(mnt), 10, "the unmount")
    # an env_file others may read is refused, with one line, and nothing is mounted
    env.chmod(0o644)
    p = subprocess.run(["mount", "-T", str(fstab), str(mnt)], capture_output=True, text=True,
                       env=run_env, timeout=60)
    assert p.returncode != 0 and "readable by root only" in p.stderr and not is_mounted(mnt)
    # the daemon's own refusal is a mount failure to mount(8): 32, one line
    env.chmod(0o600)
    bad = tmp_path / "fstab.bad"
    bad.write_text(fstab.read_text().replace("ttl=30", "ttl=soon"))
    p = subprocess.run(["mount", "-T", str(bad), str(mnt)], capture_output=True, text=True,
                       env=run_env, timeout=60)
    assert p.returncode == 32 and "ttl" in p.stderr and not is_mounted(mnt), p
    # -f (fake) does nothing
    p = subprocess.run(["mount", "-f", "-T", str(fstab), str(mnt)], capture_output=True,
                       text=True, env=run_env, timeout=60)
    assert p.returncode == 0 and not is_mounted(mnt)


@pytest.mark.build_only
def test_systemd_units_verify(tmp_path):
    unit = (ROOT / "deploy/systemd/artifactfs@.service").read_text()
    (tmp_path / "artifactfs@mnt-artifacts.service").write_text(
        unit.replace("/usr/bin/artifactfs", str(conftest.BIN)))
    for u in ("artifactfs@mnt-artifacts.service",):
        p = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / u)],
                           capture_output=True, text=True)
        assert p.returncode == 0 and not p.stderr.strip(), p.stderr
    p = subprocess.run(["systemd-analyze", "verify", "--man=no",
                        str(ROOT / "deploy/systemd/mnt-artifacts.mount")],
                       capture_output=True, text=True)
    assert p.returncode == 0 and not p.stderr.strip(), p.stderr


def test_the_daemon_notifies_systemd_when_ready(tmp_path):
    store = conftest.LocalStore(tmp_path / "store")
    store.put("runs/e/r/a.txt", b"a")
    sock_path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(sock_path)
    s.settimeout(20)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p = subprocess.Popen([str(conftest.BIN), "mount", store.url, str(mnt), "--cache-dir",
                          str(tmp_path / "cache"), "-f"], stderr=subprocess.DEVNULL,
                         env={**os.environ, "NOTIFY_SOCKET": sock_path})
    try:
        msg = s.recv(4096).decode()
        assert "READY=1" in msg and str(mnt) in msg, msg
        assert is_mounted(mnt) and (mnt / "runs/e/r/a.txt").read_bytes() == b"a"
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True)
        assert "STOPPING=1" in s.recv(4096).decode()
        p.wait(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        s.close()


@pytest.mark.build_only
def test_kubernetes_manifests_agree():
    docs = {}
    for f in ("daemonset.yaml", "deployment.yaml", "sidecar.yaml"):
        docs[f] = list(yaml.safe_load_all(open(ROOT / "deploy/kubernetes" / f)))
    ds = next(d for d in docs["daemonset.yaml"] if d["kind"] == "DaemonSet")
    cm = next(d for d in docs["daemonset.yaml"] if d["kind"] == "ConfigMap")
    pod = docs["sidecar.yaml"][0]
    dep = docs["deployment.yaml"][0]
    afs = [ds["spec"]["template"]["spec"]["containers"][0], pod["spec"]["containers"][0]]
    assert len({c["image"] for c in afs}) == 1 and "artifactfs" in afs[0]["image"]
    for c in afs:
        script = c["args"][0]
        ready = c["readinessProbe"]["exec"]["command"][-1]
        assert f"touch {ready}" in script and "artifactfs prefetch" in script
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts["artifacts"]["mountPath"] == "/mnt/artifacts"
        assert mounts["artifacts"]["mountPropagation"] == "Bidirectional"
        assert "artifactfs mount \"$STORE\" /mnt/artifacts -f" in script
        assert c["securityContext"]["privileged"] is True
    host = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert host["artifacts"]["hostPath"]["path"] == "/mnt/artifacts"
    dvol = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert dvol["artifacts"]["hostPath"]["path"] == "/mnt/artifacts"
    dm = dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]
    assert dm["mountPropagation"] == "HostToContainer" and dm["readOnly"] is True
    model = cm["data"]["MODEL_PATH"]
    model_file = dep["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"]
    assert model_file.startswith(f"/mnt/artifacts/{model}/")


@pytest.mark.build_only
def test_man_page_covers_every_option():
    man = (ROOT / "docs/artifactfs.1").read_text().replace("\\-", "-")
    helptext = subprocess.run([str(conftest.BIN), "--help"], capture_output=True, text=True,
                              check=True).stdout
    assert len(helptext.splitlines()) <= 50
    opts = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", helptext))
    assert opts >= {"--cache-dir", "--proxy", "--ca-file", "--writable"}
    for o in sorted(opts):
        assert o in man, o
    for cmd in ("mount", "register", "alias", "prefetch"):
        assert f".B artifactfs {cmd}" in man.replace("\\", "")


@pytest.mark.build_only
def test_the_debian_package_builds_installs_and_mounts(tmp_path):
    subprocess.run(["make", "-s", "-C", str(ROOT), "deb"], check=True, capture_output=True,
                   timeout=900)
    debs = [p for p in (ROOT / "build/deb").glob("artifactfs_*.deb")]
    assert len(debs) == 1, debs
    if os.path.exists("/usr/bin/artifactfs") or os.path.exists(HELPER):
        pytest.fail("an artifactfs is installed already: not this test's to replace")
    p = subprocess.run(["apt-get", "install", "-y", "-qq", str(debs[0])], capture_output=True,
                       text=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    try:
        assert p.returncode == 0, p.stdout + p.stderr
        assert subprocess.run(["/usr/bin/artifactfs", "--version"], capture_output=True,
                              text=True).stdout.startswith("artifactfs ")
        assert os.path.exists("/usr/share/man/man1/artifactfs.1.gz")
        store = conftest.LocalStore(tmp_path / "store")
        store.put("runs/e/r/a.txt", b"from the package")
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "ARTIFACTFS_BIN"}
        p = subprocess.run(["mount", "-t", "artifactfs", store.url, str(mnt), "-o",
                            f"cache_dir={tmp_path / 'cache'},ttl=5"], capture_output=True,
                           text=True, env=env, timeout=60)
        assert p.returncode == 0, p.stderr
        try:
            assert (mnt / "runs/e/r/a.txt").read_bytes() == b"from the package"
        finally:
            assert subprocess.run(["umount", str(mnt)]).returncode == 0
    finally:
        subprocess.run(["apt-get", "remove", "-y", "-qq", "artifactfs"], capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    assert not os.path.exists("/usr/bin/artifactfs")
