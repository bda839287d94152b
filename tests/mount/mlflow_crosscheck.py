"""Compare tests/mount/mlflow_server.py with a real MLflow 2.12.2 tracking server.

Not part of the test suite (CI has no MLflow). Run by hand:

    MLFLOW_SRC=DIR /usr/bin/python3 tests/mount/mlflow_crosscheck.py [--mode M] [--show P]

DIR holds MLflow's `mlflow/` and `querystring_parser/` packages (see
../shared/mlflow/README.md). For each mode (proxied artifacts, then a file:// artifact
root) it starts the real server with ../shared/mlflow/start and the test server, runs the
same scenario on both through mlflow_client.py, and prints every difference: statuses,
JSON field names, types and values, fields absent when empty, paging tokens, error codes
and messages, headers of artifact downloads. Run ids, current timestamps, random run
names and temporary folders become placeholders first; SQL details appended to a few real
messages are cut. `--mode all` (the default) also starts MLflow's basic-auth app (through
gunicorn, as `mlflow server --app-name basic-auth` does) to compare the 401 answers.
`--show PREFIX` prints the real answers of the steps so named. Exits 1 on any difference."""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from mlflow_client import MlflowClient  # noqa: E402

START = os.environ.get("MLFLOW_START") or os.path.join(HERE, "../../../shared/mlflow/start")
SERVER = os.path.join(HERE, "mlflow_server.py")
PROXY = "/api/2.0/mlflow-artifacts/artifacts"
HEADERS = ("content-type", "content-disposition", "transfer-encoding", "content-length",
           "content-range", "accept-ranges", "x-content-type-options", "cache-control",
           "www-authenticate", "allow")


class Recorder:
    """Runs scenario steps on one server and keeps {label: normalized answer}."""

    def __init__(self, client, paths):
        self.c, self.paths, self.out, self.runs = client, paths, {}, {}

    def norm(self, value, key=""):
        if isinstance(value, dict):
            return {k: self.norm(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self.norm(v, key) for v in value]
        if isinstance(value, int) and not isinstance(value, bool) and value > 10**12:
            return "<now:int>"
        if isinstance(value, str):
            if key == "message":
                value = re.split(r" Error: |\n\[SQL", value)[0]
            if re.fullmatch(r"[a-z]+-[a-z]+-\d+", value):  # a run name MLflow made up
                return "<random name>"
            for path, name in self.paths:
                value = value.replace(path, name)
            for rid in re.findall(r"[0-9a-f]{32}", value):
                self.runs.setdefault(rid, f"<run{len(self.runs) + 1}>")
                value = value.replace(rid, self.runs[rid])
        return value

    def call(self, label, method, path, params=None, body=None):
        status, js = self.c.call(method, path, params=params, body=body)
        self.out[label] = {"status": status, "body": self.norm(js)}
        return js if isinstance(js, dict) else {}

    def get(self, label, route, /, **params):
        return self.call(label, "GET", route, params=params)

    def post(self, label, route, /, **body):
        return self.call(label, "POST", route, body=body)

    def delete(self, label, route, /, **body):
        return self.call(label, "DELETE", route, body=body)

    def pages(self, label, method, path, **params):
        """Every page of a search, each a step, following next_page_token."""
        token = None
        for page in range(8):
            args = dict(params, page_token=token) if token else params
            js = self.call(f"{label}.page{page}", method, path, **(
                {"params": args} if method == "GET" else {"body": args}))
            token = js.get("next_page_token")
            if not token:
                break

    def raw(self, label, method, path, params=None, headers=None, data=None):
        status, hdrs, body = self.c.request(method, path, params, headers=headers, data=data)
        kept = {k: v for k, v in hdrs.items() if k in HEADERS}
        if "content-length" in kept:
            kept["content-length"] = "= body" if int(kept["content-length"]) == len(body) else "!"
        if "allow" in kept:
            kept["allow"] = sorted(kept["allow"].split(", "))
        kept["etag?"], kept["last-modified?"] = "etag" in hdrs, "last-modified" in hdrs
        self.out[label] = {"status": status, "headers": self.norm(kept),
                           "body": self.norm(body.decode("utf-8", "replace"))}


def scenario(r, root):
    """The same requests on either server; `root` is this server's file:// artifact root
    in direct mode (a folder no run uses in proxied mode)."""
    ES, RS, AL = "experiments/search", "runs/search", "artifacts/list"
    MV, RM, AZ = "model-versions/", "registered-models/", "registered-models/alias"
    r.get("health", "/health")
    r.get("exp.search.no-max", ES)
    r.get("exp.search.max-big", ES, max_results=50001)
    r.get("exp.search.max-str", ES, max_results="abc")
    eids = []
    for i, extra in enumerate([{}, {"tags": [{"key": "k", "value": "v"}]},
                               {"artifact_location": "s3://bucket/x"}]):
        eids.append(r.post(f"exp.create.{i}", "experiments/create", name=f"e{i}", **extra)
                    .get("experiment_id"))
        time.sleep(0.01)
    e = eids[0]
    r.post("exp.create.dup", "experiments/create", name="e0")
    r.post("exp.create.noname", "experiments/create")
    r.post("exp.create.intname", "experiments/create", name=5)
    r.raw("exp.create.form", "POST", "/api/2.0/mlflow/experiments/create", data=b'{"name": "f"}')
    r.get("exp.get", "experiments/get", experiment_id=eids[1])
    r.get("exp.get.missing", "experiments/get", experiment_id="999")
    r.get("exp.get.noid", "experiments/get")
    r.get("exp.byname", "experiments/get-by-name", experiment_name="e0")
    r.get("exp.byname.missing", "experiments/get-by-name", experiment_name="zz")
    r.pages("exp.search", "GET", ES, max_results=2)
    r.post("exp.search.post", ES, max_results=1, view_type="ALL")
    r.get("exp.search.filter", ES, max_results=5, filter="name = 'e1'")
    r.get("exp.search.badtoken", ES, max_results=5, page_token="zzz")

    runs = []
    for i, body in enumerate([{"run_name": "r0", "start_time": 1000}, {"start_time": 2000},
                              {"run_name": "r2", "start_time": 3000, "user_id": "bob",
                               "tags": [{"key": "mlflow.user", "value": "bob"}]},
                              {"run_name": "r3", "start_time": 4000}]):
        js = r.post(f"run.create.{i}", "runs/create", experiment_id=e, **body)
        runs.append(js.get("run", {}).get("info", {}).get("run_id"))
    run, uri = runs[0], r.c.get_run(runs[0])["info"]["artifact_uri"]
    r.post("run.create.intexp", "runs/create", experiment_id=int(e), run_name="ri")
    r.post("run.create.missingexp", "runs/create", experiment_id="77")
    r.post("run.create.conflict", "runs/create", experiment_id=e, run_name="x",
           tags=[{"key": "mlflow.runName", "value": "y"}])
    r.post("run.update", "runs/update", run_id=run, status="FINISHED", end_time=5000)
    r.post("run.update.nostatus", "runs/update", run_id=runs[1], end_time=6000)
    r.post("run.update.missing", "runs/update", run_id="abc", status="FAILED")
    r.get("run.get", "runs/get", run_id=run)
    r.get("run.get.missing", "runs/get", run_id="deadbeef")
    r.get("run.get.noid", "runs/get")
    r.pages("run.search2", "POST", RS, experiment_ids=[e], max_results=2)
    r.pages("run.search5", "POST", RS, experiment_ids=[e], max_results=5)  # then an empty page
    r.post("run.search.default", RS, experiment_ids=[e, "0"])
    r.post("run.search.strmax", RS, experiment_ids=[int(e)], max_results="1")
    r.post("run.search.max0", RS, experiment_ids=[e], max_results=0)
    r.post("run.search.maxbig", RS, experiment_ids=[e], max_results=50001)
    r.post("run.search.noids", RS)
    r.post("run.search.token0", RS, experiment_ids=[e], page_token="eyJvZmZzZXQiOiAwfQ==")
    r.get("run.search.get", RS, experiment_ids=e)

    r.get("art.list.empty", AL, run_id=run)
    for rel, data in [("outputs/model.pth", b"x" * 100), ("a.txt", b"hello"), ("z.bin", b""),
                      ("d/MLmodel", b"m")]:
        r.c.upload_artifact(uri, rel, data)
    r.get("art.list", AL, run_id=run)
    r.get("art.list.sub", AL, run_id=run, path="outputs")
    r.get("art.list.slash", AL, run_id=run, path="outputs/")
    r.get("art.list.file", AL, run_id=run, path="a.txt")
    r.get("art.list.missing", AL, run_id=run, path="nope")
    r.get("art.list.dotdot", AL, run_id=run, path="../x")
    r.get("art.list.norun", AL, run_id="abc")
    s3run = r.post("run.create.s3", "runs/create", experiment_id=eids[2], run_name="s3")
    r.get("art.list.s3", AL, run_id=s3run.get("run", {}).get("info", {}).get("run_id"))
    base = f"{PROXY}/{e}/{run}/artifacts"
    r.get("proxy.list", PROXY, path=f"{e}/{run}/artifacts")
    r.get("proxy.list.missing", PROXY, path="nope")
    r.raw("proxy.get", "GET", f"{base}/a.txt")
    r.raw("proxy.get.range", "GET", f"{base}/outputs/model.pth", headers={"Range": "bytes=10-19"})
    r.raw("proxy.get.empty", "GET", f"{base}/z.bin")
    r.raw("proxy.get.mlmodel", "GET", f"{base}/d/MLmodel")
    r.raw("proxy.get.missing", "GET", f"{base}/missing.bin")
    r.raw("proxy.get.dir", "GET", f"{base}/outputs")
    r.raw("proxy.put", "PUT", f"{base}/put/b.bin", data=b"abc",
          headers={"Content-Type": "application/octet-stream"})

    r.post("rm.create", RM + "create", name="m1")
    r.post("rm.create.dup", RM + "create", name="m1")
    r.get("rm.get.missing", RM + "get", name="zz")
    for i, src in enumerate([uri + "/outputs", f"runs:/{run}/outputs", "s3://b/k", "s3://b/k2/"]):
        r.post(f"mv.create.{i}", MV + "create", name="m1", source=src,
               run_id=run if i < 2 else None)
        time.sleep(0.01)
    r.post("mv.create.local-norun", MV + "create", name="m1", source=root.rstrip("/") + "/x")
    r.post("mv.create.local-outside", MV + "create", name="m1", source="/etc", run_id=run)
    r.post("mv.create.relative", MV + "create", name="m1", source="s3://b/x/../y")
    r.post("mv.create.bucket", MV + "create", name="m1", source="s3://b")
    r.post("mv.create.nomodel", MV + "create", name="zz", source="s3://b/k")
    r.post("mv.create.nosource", MV + "create", name="m1")
    r.get("mv.get", MV + "get", name="m1", version="1")
    r.get("mv.get.missing", MV + "get", name="m1", version="9")
    r.get("mv.get.bad", MV + "get", name="m1", version="x")
    r.get("mv.uri.0", MV + "get-download-uri", name="m1", version="1")
    r.get("mv.uri.1", MV + "get-download-uri", name="m1", version="2")
    r.get("mv.uri.missing", MV + "get-download-uri", name="m1", version="9")
    r.post("mv.stage", MV + "transition-stage", name="m1", version="1", stage="production",
           archive_existing_versions=False)
    time.sleep(0.01)
    r.post("mv.stage.archive", MV + "transition-stage", name="m1", version="2",
           stage="Production", archive_existing_versions=True)
    r.post("mv.stage.int", MV + "transition-stage", name="m1", version=2, stage="Staging")
    r.post("mv.stage.bad", MV + "transition-stage", name="m1", version="2", stage="Bogus")
    for alias, version in [("champ", "2"), ("b", "2"), ("a", "4"), ("gone", "3"), ("c", 3),
                           ("Latest", "1"), ("v1", "1"), ("a.b", "1"), ("x", "9")]:
        r.post(f"alias.set.{alias}", AZ, name="m1", alias=alias, version=version)
    r.get("alias.get", AZ, name="m1", alias="champ")
    r.get("alias.get.missing", AZ, name="m1", alias="nope")
    r.get("alias.get.nomodel", AZ, name="zz", alias="nope")
    r.get("mv.get.aliased", MV + "get", name="m1", version="2")
    r.get("rm.get", RM + "get", name="m1")
    r.get("mv.search", MV + "search", filter="name='m1'")
    r.pages("mv.search", "GET", MV + "search", filter='name = "m1"', max_results=3)
    r.get("mv.search.run", MV + "search", filter=f"run_id = '{run}'")
    r.get("mv.search.none", MV + "search", filter="name='nothing'")
    r.get("mv.search.bad", MV + "search", filter="bogus")
    r.get("mv.search.max0", MV + "search", max_results=0)
    r.get("mv.search.maxbig", MV + "search", max_results=200001)
    r.call("alias.del.query", "DELETE", AZ, params={"name": "m1", "alias": "b"})
    r.delete("alias.del", AZ, name="m1", alias="b")
    r.delete("alias.del.again", AZ, name="m1", alias="b")
    r.delete("alias.del.nomodel", AZ, name="zz", alias="b")
    r.delete("mv.delete.int", MV + "delete", name="m1", version=3)
    r.delete("mv.delete", MV + "delete", name="m1", version="3")
    r.delete("mv.delete.again", MV + "delete", name="m1", version="3")
    r.get("alias.get.deleted", AZ, name="m1", alias="gone")
    r.post("mv.create.afterdelete", MV + "create", name="m1", source="s3://b/k5")
    r.get("rm.get.afterdelete", RM + "get", name="m1")
    for name in ("m2", "m3", "n1"):
        r.post(f"rm.create.{name}", RM + "create", name=name)
    r.pages("rm.search", "GET", RM + "search", max_results=2)
    r.get("rm.search.filter", RM + "search", filter="name='m2'")
    r.get("rm.search.none", RM + "search", filter="name='nothing'")
    r.get("rm.search.max0", RM + "search", max_results=0)
    r.get("rm.search.maxbig", RM + "search", max_results=1001)
    r.delete("rm.delete", RM + "delete", name="m3")
    r.delete("rm.delete.again", RM + "delete", name="m3")
    r.raw("route.unknown", "GET", "/api/2.0/mlflow/nope")
    r.raw("route.method", "GET", "/api/2.0/mlflow/runs/create")

    # the client's helpers, as the tests call them
    rid, ruri = r.c.create_run(r.c.create_experiment("via-client"), run_name="c1")
    r.c.upload_artifact(ruri, "m/w.bin", b"w")
    r.c.finish_run(rid)
    r.c.create_registered_model("cm")
    r.out["client.version"] = r.c.create_model_version("cm", ruri + "/m", run_id=rid)
    r.c.transition_stage("cm", 1, "Staging")
    r.c.set_alias("cm", "best", 1)
    r.get("client.run", "runs/get", run_id=rid)
    r.get("client.list", AL, run_id=rid, path="m")
    r.get("client.alias", AZ, name="cm", alias="best")
    r.c.delete_alias("cm", "best")
    r.get("client.alias.deleted", AZ, name="cm", alias="best")
    r.out["client.search_all"] = [m["name"] for m in r.c.search_all(RM + "search",
                                                                    "registered_models",
                                                                    max_results=1)]


def diff(a, b, path=""):
    """[(path, real, test)] where two normalized answers differ."""
    if type(a) is not type(b):
        return [(path, a, b)]
    if isinstance(a, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                out.append((f"{path}.{k}", a.get(k, "<absent>"), b.get(k, "<absent>")))
            else:
                out += diff(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list):
        if len(a) != len(b):
            return [(path + "[len]", len(a), len(b))]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [(path, a, b)]


def compare(real, test, title, show=None):
    problems = 0
    for label in real if show is not None else []:
        if label.startswith(show):
            print(f"  [real] {label}: {json.dumps(real[label])}")
    for label in list(real) + [k for k in test if k not in real]:
        found = diff(real.get(label, "<no step>"), test.get(label, "<no step>"))
        for path, x, y in found:
            print(f"  {label}{path}:\n      real: {x!r}\n      test: {y!r}")
        problems += bool(found)
    print(f"{title}: {len(real)} steps, {problems} differ")
    return problems


def start_test_server(*args):
    proc = subprocess.Popen(["/usr/bin/python3", SERVER, "--port", "0", *args],
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def run_mode(mode, src, tmp, show):
    roots = {who: f"file://{tmp}/{mode}-{who}-root" for who in ("real", "test")}
    extra = ["--dir", f"{tmp}/{mode}-real"]
    extra += ["--artifact-root", roots["real"]] if mode == "direct" else []
    url, pid, folder = subprocess.run([START, *extra], env=dict(os.environ, MLFLOW_SRC=src),
                                      check=True, capture_output=True, text=True).stdout.split()
    dest = f"{tmp}/{mode}-test-dest"
    proc, turl = start_test_server(*(["--default-artifact-root", roots["test"]]
                                     if mode == "direct" else ["--artifacts-destination", dest]))
    results = {}
    try:
        for who, u, d in (("real", url, folder + "/artifacts"), ("test", turl, dest)):
            rec = Recorder(MlflowClient(u), [(d, "<DEST>"), (roots[who][7:], "<ROOT>")])
            scenario(rec, roots[who])
            results[who] = rec.out
    finally:
        os.killpg(int(pid), signal.SIGTERM)
        proc.terminate()
        proc.wait()
    return compare(results["real"], results["test"], f"{mode} mode", show)


def ready(url):
    try:
        return MlflowClient(url, timeout=2).request("GET", "/health")[0] == 200
    except OSError:
        return False


def run_auth(src, tmp):
    """MLflow's basic-auth app against the test server's --auth basic:USER:PASS, then
    the test server's bearer mode alone (MLflow has no bearer app to compare with)."""
    with open(f"{tmp}/auth.ini", "w") as f:
        f.write(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{tmp}/auth.db\n"
                "admin_username = admin\nadmin_password = password1234\nauthorization_function"
                " = mlflow.server.auth:authenticate_request_basic_auth\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = "http://127.0.0.1:%d" % s.getsockname()[1]
    db = f"sqlite:///{tmp}/auth-db.sqlite"
    env = dict(os.environ, PYTHONPATH=src, MLFLOW_AUTH_CONFIG_PATH=f"{tmp}/auth.ini",
               _MLFLOW_SERVER_FILE_STORE=db, _MLFLOW_SERVER_REGISTRY_STORE=db,
               _MLFLOW_SERVER_ARTIFACT_ROOT="mlflow-artifacts:/",
               _MLFLOW_SERVER_ARTIFACT_DESTINATION=f"{tmp}/auth-art",
               _MLFLOW_SERVER_SERVE_ARTIFACTS="true")
    real = subprocess.Popen(["/usr/bin/python3", "-m", "gunicorn", "-b", url[7:], "-w", "1",
                             "mlflow.server.auth:create_app()"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    test, turl = start_test_server("--auth", "basic:admin:password1234",
                                   "--artifacts-destination", f"{tmp}/auth-test")
    bearer, burl = start_test_server("--auth", "bearer:s3cret",
                                     "--artifacts-destination", f"{tmp}/auth-test")
    results, search = {}, "/api/2.0/mlflow/experiments/search"
    try:
        for _ in range(240):
            if ready(url):
                break
            time.sleep(0.25)
        else:
            print("basic auth: MLflow's basic-auth app did not start")
            return 1
        for who, u in (("real", url), ("test", turl)):
            rec = Recorder(MlflowClient(u), [])
            rec.raw("health", "GET", "/health")
            rec.raw("none", "GET", search, {"max_results": 1})
            rec.raw("none.unknown-route", "GET", "/api/2.0/mlflow/nope")
            rec.raw("none.get-artifact", "GET", "/get-artifact", {"path": "x", "run_id": "y"})
            for label, auth in (("wrong", "basic:admin:wrong"), ("bearer", "bearer:s3cret")):
                rec.c = MlflowClient(u, auth=auth)
                rec.raw(label, "GET", search, {"max_results": 1})
            rec.c = MlflowClient(u, auth="basic:admin:password1234")
            rec.get("right", "experiments/search", max_results=1)
            results[who] = rec.out
        problems = compare(results["real"], results["test"], "basic auth")
        got = [MlflowClient(burl, auth=a).request("GET", search, {"max_results": 1})[0]
               for a in (None, "bearer:nope", "bearer:s3cret")]
        print(f"bearer (test server only): no token {got[0]}, wrong {got[1]}, right {got[2]}")
        return problems + (got != [401, 401, 200])
    finally:
        os.killpg(real.pid, signal.SIGTERM)
        for p in (test, bearer):
            p.terminate()
            p.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=["proxied", "direct", "all"], default="all")
    p.add_argument("--show", metavar="PREFIX", help="print the real answers of steps so named")
    o = p.parse_args()
    src = os.environ.get("MLFLOW_SRC")
    if not src:
        sys.exit("set MLFLOW_SRC to the folder holding mlflow/ and querystring_parser/")
    src, tmp, problems = os.path.abspath(src), tempfile.mkdtemp(prefix="mlflow-crosscheck."), 0
    try:
        for mode in (["proxied", "direct"] if o.mode == "all" else [o.mode]):
            problems += run_mode(mode, src, tmp, o.show)
        if o.mode == "all":
            problems += run_auth(src, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("no differences" if not problems else f"{problems} differing steps")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
