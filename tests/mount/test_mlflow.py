"""An MLflow tracking server mounted: mlflow+http://HOST:PORT.

The server is tests/mount/mlflow_server.py (MLflow 2.12.2's REST shapes and quirks,
checked against the real server by mlflow_crosscheck.py), started on loopback with a
page size of 2 so that every list the mount reads takes several pages, and filled
through its REST API the way MLflow's own client fills it. A fault proxy in front of
it counts the requests and injects faults. Artifacts are either proxied by the server
(mlflow-artifacts:/, whole files only) or in Azurite (wasbs://, read directly)."""
import errno
import os
import re
import subprocess
import sys
import time
import uuid

import pytest

import conftest
from conftest import AzureStore, Store, free_port, run_cli, wait_for

sys.path.insert(0, os.path.dirname(__file__))
from mlflow_client import MlflowClient  # noqa: E402

MiB = 1 << 20
SERVER = conftest.ROOT / "tests" / "mount" / "mlflow_server.py"
DEV_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
           "KBHBeksoGMGw==")


class MlflowServer:
    """One server process: its URL, a client, and a fault proxy in front of it."""

    def __init__(self, where, *args, env=None):
        self.where = where
        where.mkdir(parents=True, exist_ok=True)
        self.log = open(where / "server.log", "wb")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", str(SERVER), "--port", "0", "--page-max", "2", *args],
            stdout=subprocess.PIPE, stderr=self.log, env={**os.environ, **(env or {})})
        line = self.proc.stdout.readline().decode().strip()
        assert line.startswith("http://"), (where / "server.log").read_text()
        self.direct_url = line
        self.port = int(line.rsplit(":", 1)[1])
        from faultproxy import FaultProxy
        self.proxy = FaultProxy(self.port).start()
        self.url = f"http://127.0.0.1:{self.proxy.port}"

    def client(self, auth=None):
        return MlflowClient(self.direct_url, auth=auth)

    def stop(self):
        self.proxy.stop()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()

    def downloads(self, path=""):
        return len(self.proxy.requests(method="GET",
                                       path="/api/2.0/mlflow-artifacts/artifacts/" + path))


class MlflowStore(Store):
    kind = "mlflow"

    def __init__(self, server, env=None):
        self.server = server
        self.url = "mlflow+" + server.url
        self.env = dict(env or {})


@pytest.fixture
def proxied(tmp_path):
    s = MlflowServer(tmp_path / "mlflow", "--artifacts-destination",
                     str(tmp_path / "mlflow" / "artifacts"))
    yield s
    s.stop()


def fill(c):
    """Experiments (one whose name holds '/'), runs (two share a name), artifacts in
    folders, registered models with versions, aliases and stages. Returns what the
    tree must show."""
    t = {"files": {}, "runs": {}}
    big = os.urandom(20 * MiB + 12345)  # several chunks, not chunk-aligned
    e1 = c.create_experiment("birds")
    e2 = c.create_experiment("/Users/ml@example.com/fish")
    c.create_experiment("empty")
    names = ["brave-owl", "twin", "twin"]
    for i in range(3):
        rid, uri = c.create_run(e1, run_name=names[i % 3])
        files = {"outputs/model.pth": os.urandom(3000 + i),
                 "outputs/ck/step-1/optim.bin": os.urandom(500),
                 "metrics.json": b'{"acc": 0.9}\n'}
        if i == 0:
            files["outputs/big.bin"] = big
        for rel, data in files.items():
            c.upload_artifact(uri, rel, data)
            t["files"][f"runs/birds/{rid}/{rel}"] = data
        c.finish_run(rid)
        t["runs"][rid] = (names[i % 3], uri, files)
    rid2, uri2 = c.create_run(e2, run_name="fish-1")
    c.upload_artifact(uri2, "w.bin", b"fish weights")
    t["files"][f"runs/{e2}/{rid2}/w.bin"] = b"fish weights"
    t["e2"] = e2
    t["e1"] = e1
    t["big_run"] = next(r for r, v in t["runs"].items() if "outputs/big.bin" in v[2])
    ids = list(t["runs"])
    for k, rid in enumerate(ids):
        v = c.create_model_version("pt-dnn", f"{t['runs'][rid][1]}/outputs", run_id=rid) \
            if k else None
        if k == 0:
            c.create_registered_model("pt-dnn")
            v = c.create_model_version("pt-dnn", f"{t['runs'][rid][1]}/outputs", run_id=rid)
        assert v == str(k + 1)
    for m in ("m-a", "m-b", "m-c"):
        c.create_registered_model(m)
        c.create_model_version(m, f"runs:/{ids[1]}/outputs", run_id=ids[1])
    c.set_alias("pt-dnn", "champion", 2)
    c.transition_stage("pt-dnn", 1, "Production")
    c.transition_stage("pt-dnn", 3, "Staging")
    t["ids"] = ids
    return t


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_tree_of_a_proxied_server(proxied, make_mount):
    c = proxied.client()
    t = fill(c)
    # an experiment named as another's id shows by its own id: both are reachable
    clash = c.create_experiment(t["e1"])
    crid, curi = c.create_run(clash, run_name="clash-run")
    c.upload_artifact(curi, "c.txt", b"clash")
    # MLflow's names may hold spaces and letters of any script
    for name in ("my model ü", "bob's model"):
        c.create_registered_model(name)
        c.create_model_version(name, f"runs:/{t['ids'][1]}/outputs", run_id=t["ids"][1])
    m = make_mount(MlflowStore(proxied))
    assert sorted(os.listdir(m.path)) == ["models", "runs"]
    # experiments by name, or by id when the name cannot be a file name or is an id
    assert sorted(os.listdir(m / "runs")) == sorted(["Default", "birds", "empty", t["e2"], clash])
    assert read(m / f"runs/{clash}/clash-run/c.txt") == b"clash"
    ids = t["ids"]
    birds = sorted(os.listdir(m / "runs/birds"))
    # run ids, and a link per unique run name
    assert birds == sorted(ids + ["brave-owl"])
    assert os.readlink(m / "runs/birds/brave-owl") == ids[0]
    assert os.listdir(m / "runs/empty") == []
    for key, data in t["files"].items():
        st = os.stat(m / key)
        assert st.st_size == len(data), key
        assert read(m / key) == data, key
    assert sorted(os.listdir(m / f"runs/birds/{ids[0]}/outputs")) == ["big.bin", "ck", "model.pth"]
    assert read(m / "runs/birds/brave-owl/metrics.json") == b'{"acc": 0.9}\n'
    # models: versions, latest, aliases and stages; all of them paged through
    assert sorted(os.listdir(m / "models")) == \
        ["bob's model", "m-a", "m-b", "m-c", "my model ü", "pt-dnn"]
    for name in ("my model ü", "bob's model"):
        assert read(m / "models" / name / "latest/model.pth") == \
            t["runs"][ids[1]][2]["outputs/model.pth"]
    assert sorted(os.listdir(m / "models/pt-dnn")) == \
        ["1", "2", "3", "Production", "Staging", "champion", "latest"]
    links = {n: os.readlink(m / "models/pt-dnn" / n)
             for n in ("latest", "champion", "Production", "Staging")}
    assert links == {"latest": "3", "champion": "2", "Production": "1", "Staging": "3"}
    for k, rid in enumerate(ids):
        files = t["runs"][rid][2]
        for rel, data in files.items():
            if rel.startswith("outputs/"):
                assert read(m / f"models/pt-dnn/{k + 1}" / rel[len("outputs/"):]) == data
    assert read(m / "models/m-b/latest/model.pth") == t["runs"][ids[1]][2]["outputs/model.pth"]
    # ls -l shows sizes
    out = subprocess.run(["ls", "-l", str(m / "models/pt-dnn/champion") + "/"], capture_output=True,
                         text=True, check=True).stdout
    assert re.search(r"\s%d\s.*model\.pth" % len(t["runs"][ids[1]][2]["outputs/model.pth"]), out)
    # read-only, and a clear ENOENT
    with pytest.raises(OSError) as e:
        open(m / "models/pt-dnn/1/new.bin", "wb")
    assert e.value.errno == errno.EROFS
    with pytest.raises(OSError) as e:
        open(m / f"runs/birds/{ids[0]}/new.bin", "wb")
    assert e.value.errno == errno.EROFS
    for missing in ("models/nope", "models/pt-dnn/9", "runs/birds/0000", "runs/nope",
                    f"runs/birds/{ids[0]}/outputs/nope.pth"):
        assert not os.path.exists(m / missing), missing


def test_proxied_file_is_one_streaming_request(proxied, make_mount):
    t = fill(proxied.client())
    m = make_mount(MlflowStore(proxied))
    key = f"runs/birds/{t['big_run']}/outputs/big.bin"
    data = t["files"][key]
    before = proxied.downloads()
    # a read in the middle first (the server has no Range), then all of it, twice
    with open(m / key, "rb") as f:
        f.seek(15 * MiB)
        assert f.read(4096) == data[15 * MiB:15 * MiB + 4096]
        f.seek(0)
        assert f.read() == data
    assert read(m / key) == data
    assert proxied.downloads() - before == 1
    # a registered version's file: the same bytes under another key, one request
    v1 = read(m / "models/pt-dnn/1/big.bin")
    assert v1 == data
    assert proxied.downloads() - before == 2
    # four readers at once, each starting at another offset, on a cold cache: still
    # one download
    import threading
    m2 = make_mount(MlflowStore(proxied), name="m2", cache_dir=m.cache_dir.parent / "c2")
    got = {}

    def reader(i):
        with open(m2 / key, "rb") as f:
            f.seek(i * 5 * MiB)
            got[i] = f.read(5 * MiB)
    before = proxied.downloads()
    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(got[i] == data[i * 5 * MiB:(i + 1) * 5 * MiB] for i in range(4))
    assert proxied.downloads() - before == 1


def test_torch_loads_a_state_dict_and_a_checkpoint(proxied, make_mount):
    import io
    import torch
    c = proxied.client()
    exp = c.create_experiment("torchy")
    rid, uri = c.create_run(exp, run_name="r1")
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    c.upload_artifact(uri, "model/data/model.pth", buf.getvalue())
    opt = torch.optim.Adam(model.parameters())
    buf2 = io.BytesIO()
    torch.save({"epoch": 3, "model": model.state_dict(), "optim": opt.state_dict()}, buf2)
    c.upload_artifact(uri, "checkpoints/ck-3.pt", buf2.getvalue())
    c.finish_run(rid)
    c.create_registered_model("tiny")
    c.create_model_version("tiny", f"{uri}/model", run_id=rid)
    c.set_alias("tiny", "champion", 1)
    m = make_mount(MlflowStore(proxied))
    sd = torch.load(m / "models/tiny/champion/data/model.pth", weights_only=True)
    fresh = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    fresh.load_state_dict(sd)
    x = torch.randn(5, 64)
    assert torch.equal(fresh(x), model(x))
    # this torch's weights-only loader refuses the optimizer's floats: a full load
    ck = torch.load(m / "runs/torchy/r1/checkpoints/ck-3.pt", weights_only=False)
    assert ck["epoch"] == 3 and set(ck["optim"]) == {"state", "param_groups"}


def test_aliases_move_after_the_ttl_and_versions_stay(proxied, make_mount):
    t = fill(proxied.client())
    c = proxied.client()
    m = make_mount(MlflowStore(proxied), "--ttl", "1")
    assert os.readlink(m / "models/pt-dnn/champion") == "2"
    v1 = read(m / "models/pt-dnn/1/model.pth")
    c.set_alias("pt-dnn", "champion", 3)
    wait_for(lambda: os.readlink(m / "models/pt-dnn/champion") == "3", 10, "the alias to move")
    # a new version appears after the TTL; a version not READY never does
    rid = t["ids"][0]
    v4 = c.create_model_version("pt-dnn", f"{t['runs'][rid][1]}/outputs", run_id=rid)
    wait_for(lambda: os.path.isdir(m / f"models/pt-dnn/{v4}"), 10, "the new version")
    assert os.readlink(m / "models/pt-dnn/latest") == v4
    # one still registering (or failed) is not shown, nor named by latest or an alias
    v5 = c.create_model_version("pt-dnn", f"{t['runs'][rid][1]}/outputs", run_id=rid)
    assert c.post("/_test/model-versions/set-status", {
        "name": "pt-dnn", "version": v5, "status": "PENDING_REGISTRATION"})[0] == 200
    c.set_alias("pt-dnn", "next", int(v5))
    time.sleep(2.5)  # past the TTL: the mount has asked again
    assert v5 not in os.listdir(m / "models/pt-dnn")
    assert not os.path.lexists(m / "models/pt-dnn/next")
    assert os.readlink(m / "models/pt-dnn/latest") == v4
    assert c.post("/_test/model-versions/set-status", {
        "name": "pt-dnn", "version": v5, "status": "READY"})[0] == 200
    wait_for(lambda: os.path.isdir(m / f"models/pt-dnn/{v5}"), 10, "the version once READY")
    assert os.readlink(m / "models/pt-dnn/next") == v5
    assert os.readlink(m / "models/pt-dnn/latest") == v5
    # one in a store the mount cannot read is left out (said once); the rest stay
    m.expect_log(r"model pt-dnn version 6: its artifacts are at 'gs://bkt/some/model'")
    v6 = c.create_model_version("pt-dnn", "gs://bkt/some/model")
    v7 = c.create_model_version("pt-dnn", f"{t['runs'][rid][1]}/outputs", run_id=rid)
    wait_for(lambda: os.path.isdir(m / f"models/pt-dnn/{v7}"), 10, "the version after it")
    assert v6 not in os.listdir(m / "models/pt-dnn")
    assert read(m / f"models/pt-dnn/{v7}/model.pth") == v1
    fresh = make_mount(MlflowStore(proxied), name="fresh", cache_dir=m.cache_dir.parent / "c2")
    fresh.expect_log(r"model pt-dnn version 6: its artifacts are at 'gs://bkt/some/model'")
    assert v6 not in os.listdir(fresh / "models/pt-dnn")
    assert os.readlink(fresh / "models/pt-dnn/latest") == v7
    c.delete_alias("pt-dnn", "champion")
    wait_for(lambda: not os.path.lexists(m / "models/pt-dnn/champion"), 10, "the alias to go")
    assert read(m / "models/pt-dnn/1/model.pth") == v1


def test_register_and_alias_into_mlflow(proxied):
    t = fill(proxied.client())
    c = proxied.client()
    store = MlflowStore(proxied)
    rid = t["ids"][1]
    p = run_cli("register", store.url, "from-cli", f"runs/birds/{rid}/outputs",
                "--alias", "prod", "--tag", "team=vision", store=store)
    assert p.stdout.strip() == "1"
    mv = c.get("model-versions/get", name="from-cli", version="1")[1]["model_version"]
    assert mv["source"] == f"{t['runs'][rid][1]}/outputs" and mv["run_id"] == rid
    assert mv["status"] == "READY"
    assert c.get("registered-models/alias", name="from-cli", alias="prod")[0] == 200
    run_cli("alias", store.url, "from-cli", "prod", "--delete", store=store)
    assert c.get("registered-models/alias", name="from-cli", alias="prod")[0] != 200
    bad = run_cli("register", store.url, "from-cli", f"runs/birds/{rid}/no-such-folder",
                  store=store, check=False)
    assert bad.returncode != 0 and "no-such-folder" in bad.stderr
    # one file is not a version's source: refused, nothing registered
    bad = run_cli("register", store.url, "from-cli", f"runs/birds/{rid}/outputs/model.pth",
                  store=store, check=False)
    assert bad.returncode == 2 and "a file" in bad.stderr and bad.stderr.count("\n") == 1
    assert c.get("model-versions/get", name="from-cli", version="2")[0] != 200
    bad = run_cli("alias", store.url, "from-cli", "prod", "7", store=store, check=False)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1


def test_credentials(tmp_path, make_mount):
    s = MlflowServer(tmp_path / "mlflow", "--artifacts-destination",
                     str(tmp_path / "mlflow" / "artifacts"), "--auth", "basic:ml:s3cret-pw")
    try:
        c = s.client(auth=("ml", "s3cret-pw"))
        exp = c.create_experiment("e")
        rid, uri = c.create_run(exp, run_name="r")
        c.upload_artifact(uri, "a.txt", b"hello")
        good = MlflowStore(s, env={"MLFLOW_TRACKING_USERNAME": "ml",
                                   "MLFLOW_TRACKING_PASSWORD": "s3cret-pw"})
        m = make_mount(good)
        assert read(m / "runs/e/r/a.txt") == b"hello"
        for env, source in (({}, "none"),
                            ({"MLFLOW_TRACKING_USERNAME": "ml",
                              "MLFLOW_TRACKING_PASSWORD": "wrong-pw"}, "MLFLOW_TRACKING_USERNAME"),
                            ({"MLFLOW_TRACKING_TOKEN": "tok-123"}, "MLFLOW_TRACKING_TOKEN")):
            (tmp_path / "m2").mkdir(exist_ok=True)
            p = subprocess.run([str(conftest.BIN), "mount", "mlflow+" + s.url,
                                str(tmp_path / "m2"), "--cache-dir", str(tmp_path / "c2"), "-f"],
                               capture_output=True, text=True, timeout=60,
                               env={k: v for k, v in {**os.environ, **env}.items()
                                    if not k.startswith("MLFLOW_TRACKING_") or k in env})
            assert p.returncode == 2, p.stderr
            lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
            assert len(lines) == 1 and "refused access" in lines[0] and source in lines[0], lines
            for secret in ("wrong-pw", "tok-123", "s3cret-pw"):
                assert secret not in p.stderr
        # credentials in the URL are refused, and not repeated back
        url = "mlflow+" + s.url.replace("://", "://ml:s3cret-pw@")
        p = run_cli("mount", url, tmp_path / "m2", check=False)
        assert p.returncode == 2 and "MLFLOW_TRACKING_" in p.stderr, p.stderr
        assert "s3cret-pw" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    finally:
        s.stop()


def test_a_server_that_goes_away(proxied, make_mount):
    t = fill(proxied.client())
    rid = t["ids"][0]
    m = make_mount(MlflowStore(proxied), "--ttl", "1", "--timeout", "5")
    v1 = read(m / "models/pt-dnn/1/model.pth")
    listing = sorted(os.listdir(m / f"runs/birds/{rid}/outputs"))
    # the server stalls: what is cached is served at once, the rest fails in time
    rule = proxied.proxy.fail_always("stall", seconds=60)
    m.expect_log(r"not answering|unreachable|cannot|failed|giving up")
    time.sleep(1.5)  # past the TTL: every listing and alias table is due a refresh
    # each access waits at most about a second per stale copy, then at most the
    # deadline (5 s) once; after that the server counts as down
    for access in (lambda: read(m / "models/pt-dnn/1/model.pth") == v1,
                   lambda: sorted(os.listdir(m / f"runs/birds/{rid}/outputs")) == listing,
                   lambda: os.readlink(m / "models/pt-dnn/champion") == "2"):
        t0 = time.monotonic()
        assert access()
        assert time.monotonic() - t0 < 10
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        read(m / f"runs/birds/{rid}/outputs/ck/step-1/optim.bin")
    assert e.value.errno == errno.EIO and time.monotonic() - t0 < 20
    # a new mount over the same cache, the server still away: offline
    m.stop()
    proxied.proxy.clear(rule)
    proxied.proxy.refuse()
    m.start()
    assert read(m / "models/pt-dnn/1/model.pth") == v1
    assert sorted(os.listdir(m / f"runs/birds/{rid}/outputs")) == listing
    assert os.readlink(m / "models/pt-dnn/latest") == "3"
    proxied.proxy.accept_again()


def test_server_quirks_size_and_missing_files(proxied, make_mount, tmp_path):
    c = proxied.client()
    exp = c.create_experiment("q")
    rid, uri = c.create_run(exp, run_name="r")
    for name, byte in (("grows.bin", b"x"), ("goes.bin", b"y"), ("fine.bin", b"z")):
        c.upload_artifact(uri, f"model/{name}", byte * 1000)
    c.finish_run(rid)
    c.create_registered_model("q")
    c.create_model_version("q", f"{uri}/model", run_id=rid)
    m = make_mount(MlflowStore(proxied))
    # the version's file list and sizes are kept from here on
    assert sorted(os.listdir(m / "models/q/1")) == ["fine.bin", "goes.bin", "grows.bin"]
    root = tmp_path / "mlflow" / "artifacts" / uri.split(":", 1)[1].strip("/") / "model"
    (root / "grows.bin").write_bytes(b"x" * 2000)   # changed behind the version
    (root / "goes.bin").unlink()                      # the proxy answers 500 for it
    m.expect_log(r"grows\.bin.*(listing says|than)")
    m.expect_log(r"goes\.bin.*could not send it")
    m.expect_log(r"the store failed")
    t0 = time.monotonic()
    for name in ("grows.bin", "goes.bin"):
        with pytest.raises(OSError) as e:
            read(m / "models/q/1" / name)
        assert e.value.errno == errno.EIO, name
    assert time.monotonic() - t0 < 20
    assert read(m / "models/q/1/fine.bin") == b"z" * 1000
    # a run's file is read as the server has it now: pinned at open
    assert read(m / "runs/q/r/model/grows.bin") == b"x" * 2000
    assert not os.path.exists(m / "runs/q/r/model/goes.bin")


def test_transient_faults_are_retried(proxied, make_mount):
    c = proxied.client()
    exp = c.create_experiment("f")
    rid, uri = c.create_run(exp, run_name="r")
    data = os.urandom(12 * MiB + 7)
    c.upload_artifact(uri, "ck.bin", data)
    m = make_mount(MlflowStore(proxied))
    px = proxied.proxy
    px.fail_next(2, "status", path="/api/2.0/mlflow/experiments/search", status=503)
    px.fail_next(1, "status", path="/api/2.0/mlflow/runs/search", status=429, retry_after=1)
    assert sorted(os.listdir(m / "runs/f")) == sorted([rid, "r"])
    # the download is cut half-way: it starts again, readers keep what they had
    px.fail_next(1, "reset", path="/api/2.0/mlflow-artifacts/artifacts/", fraction=0.5)
    assert read(m / "runs/f/r/ck.bin") == data
    assert px.injected("reset") == 1 and px.injected("status") == 3
    assert proxied.downloads() == 2


@pytest.fixture
def wasbs(azurite, tmp_path):
    """A server whose artifact root is an Azurite container named the way MLflow
    keeps it (wasbs://CONTAINER@ACCOUNT.blob.core.windows.net/...), reached through a
    connection string's BlobEndpoint as MLflow's own client reaches it."""
    container = f"t{uuid.uuid4().hex[:16]}"
    az = AzureStore(azurite, container)
    root = f"wasbs://{container}@devstoreaccount1.blob.core.windows.net/mlflow"
    env = {"AZURE_STORAGE_CONNECTION_STRING":
           "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
           f"AccountKey={DEV_KEY};BlobEndpoint=http://127.0.0.1:{azurite}/devstoreaccount1;"}
    s = MlflowServer(tmp_path / "mlflow", "--default-artifact-root", root)
    yield s, az, env
    s.stop()


def test_direct_reads_from_azure(wasbs, make_mount):
    s, az, env = wasbs
    c = s.client()
    exp = c.create_experiment("az")
    rid, uri = c.create_run(exp, run_name="r")
    assert uri.startswith("wasbs://")
    prefix = uri.split(".blob.core.windows.net/", 1)[1]
    big = os.urandom(20 * MiB + 3)
    az.put(f"{prefix}/model/model.pth", big)
    az.put(f"{prefix}/model/MLmodel", b"flavors: {}\n")
    c.finish_run(rid)
    c.create_registered_model("azm")
    c.create_model_version("azm", f"{uri}/model", run_id=rid)
    m = make_mount(MlflowStore(s, env=env))
    with open(m / "models/azm/1/model.pth", "rb") as f:
        f.seek(10 * MiB)
        assert f.read(1000) == big[10 * MiB:10 * MiB + 1000]
    assert read(m / "models/azm/latest/model.pth") == big
    assert read(m / "runs/az/r/model/MLmodel") == b"flavors: {}\n"
    # the bytes came from Azurite, never through the server
    assert s.downloads() == 0
    assert "read directly" in m.log()
    # a blob changed after the version was first seen: EIO, and the log names it
    az.put(f"{prefix}/model/MLmodel", b"changed\n")
    m.expect_log(r"MLmodel")
    with pytest.raises(OSError) as e:
        read(m / "models/azm/1/MLmodel")
    assert e.value.errno == errno.EIO


def test_direct_reads_from_a_local_artifact_root(tmp_path, make_mount):
    root = tmp_path / "mlruns"
    root.mkdir()
    s = MlflowServer(tmp_path / "mlflow", "--default-artifact-root", f"file://{root}")
    try:
        c = s.client()
        exp = c.create_experiment("local")
        rid, uri = c.create_run(exp, run_name="r")
        assert uri.startswith("file:///")
        data = os.urandom(3 * MiB + 5)
        c.upload_artifact(uri, "model/weights.bin", data)
        c.finish_run(rid)
        c.create_registered_model("loc")
        c.create_model_version("loc", f"{uri}/model", run_id=rid)
        m = make_mount(MlflowStore(s))
        assert read(m / "models/loc/1/weights.bin") == data
        assert read(m / "runs/local/r/model/weights.bin") == data
        assert s.downloads() == 0 and "read directly" in m.log()
    finally:
        s.stop()
