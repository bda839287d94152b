"""Compare tests/mount/mlflow_server.py with a real MLflow 2.12.2 tracking server.

Not part of the test suite (CI has no MLflow). Run by hand:

    MLFLOW_SRC=DIR /usr/bin/python3 tests/mount/mlflow_crosscheck.py [--mode proxied|direct|all]

DIR holds MLflow's `mlflow/` and `querystring_parser/` packages (see
../shared/mlflow/README.md). For each mode (proxied artifacts, then a file:// artifact
root) it starts the real server with ../shared/mlflow/start and the test server, runs
the same scenario on both through mlflow_client.py, and prints every difference in
status, JSON field names, types and values, presence of empty fields, paging tokens,
error codes and messages, and the headers of artifact downloads. Run ids, current
timestamps, generated run names and temporary folders are replaced by placeholders
before comparing. With `--mode all` (the default) it also starts MLflow's basic-auth app
(gunicorn) to compare the 401 answers. Exit status 1 when anything differs."""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from mlflow_client import MlflowClient  # noqa: E402

START = os.environ.get("MLFLOW_START") or os.path.join(HERE, "..", "..", "..", "shared", "mlflow", "start")
SERVER = os.path.join(HERE, "mlflow_server.py")
HEADERS = ("content-type", "content-disposition", "transfer-encoding", "content-length",
           "content-range", "accept-ranges", "x-content-type-options", "cache-control",
           "www-authenticate", "allow")


class Recorder:
    """Runs scenario steps on one server and keeps (label -> normalized answer)."""

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
            if re.fullmatch(r"[a-z]+-[a-z]+-\d+", value):  # a generated run name
                return "<generated>"
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

    def raw(self, label, method, path, params=None, headers=None, data=None):
        status, hdrs, body = self.c.request(method, path, params=params, headers=headers, data=data)
        kept = {k: v for k, v in hdrs.items() if k in HEADERS}
        if "content-length" in kept:
            kept["content-length"] = "= body" if int(kept["content-length"]) == len(body) else "wrong"
        if "allow" in kept:
            kept["allow"] = sorted(kept["allow"].split(", "))
        kept["etag?"] = "etag" in hdrs
        kept["last-modified?"] = "last-modified" in hdrs
        self.out[label] = {"status": status, "headers": self.norm(kept),
                           "body": self.norm(body.decode("utf-8", "replace"))}


def scenario(r, mode, root):
    """The same requests on either server; `root` is this server's direct artifact root."""
    c, A = r.c, "/api/2.0/mlflow-artifacts/artifacts"
    r.call("health", "GET", "/health")
    r.call("exp.search.no-max", "GET", "experiments/search")
    r.call("exp.search.max-big", "GET", "experiments/search", {"max_results": 50001})
    r.call("exp.search.max-str", "GET", "experiments/search", {"max_results": "abc"})
    eids = []
    for i, extra in enumerate([{}, {"tags": [{"key": "k", "value": "v"}]}, {"artifact_location": "s3://bucket/x"}]):
        eids.append(r.call(f"exp.create.{i}", "POST", "experiments/create", body=dict(name=f"e{i}", **extra)).get("experiment_id"))
        time.sleep(0.01)
    e = eids[0]
    r.call("exp.create.dup", "POST", "experiments/create", body={"name": "e0"})
    r.call("exp.create.noname", "POST", "experiments/create", body={})
    r.call("exp.create.intname", "POST", "experiments/create", body={"name": 5})
    r.raw("exp.create.form", "POST", "/api/2.0/mlflow/experiments/create", data=b'{"name": "f"}')
    r.call("exp.get", "GET", "experiments/get", {"experiment_id": eids[1]})
    r.call("exp.get.missing", "GET", "experiments/get", {"experiment_id": "999"})
    r.call("exp.get.noid", "GET", "experiments/get")
    r.call("exp.byname", "GET", "experiments/get-by-name", {"experiment_name": "e0"})
    r.call("exp.byname.missing", "GET", "experiments/get-by-name", {"experiment_name": "zz"})
    tok, page = None, 0
    while True:
        js = r.call(f"exp.search.page{page}", "GET", "experiments/search", {"max_results": 2, "page_token": tok})
        tok, page = js.get("next_page_token"), page + 1
        if not tok or page > 5:
            break
    r.call("exp.search.post", "POST", "experiments/search", body={"max_results": 1, "view_type": "ALL"})
    r.call("exp.search.filter", "GET", "experiments/search", {"max_results": 5, "filter": "name = 'e1'"})
    r.call("exp.search.badtoken", "GET", "experiments/search", {"max_results": 5, "page_token": "zzz"})

    run_ids = []
    for i, body in enumerate([{"run_name": "r0", "start_time": 1000},
                              {"start_time": 2000},
                              {"run_name": "r2", "start_time": 3000, "user_id": "bob",
                               "tags": [{"key": "mlflow.user", "value": "bob"}]},
                              {"run_name": "r3", "start_time": 4000}]):
        js = r.call(f"run.create.{i}", "POST", "runs/create", body=dict(experiment_id=e, **body))
        run_ids.append(js.get("run", {}).get("info", {}).get("run_id"))
    run, uri = run_ids[0], c.get_run(run_ids[0])["info"]["artifact_uri"]
    r.call("run.create.intexp", "POST", "runs/create", body={"experiment_id": int(e), "run_name": "ri"})
    r.call("run.create.missingexp", "POST", "runs/create", body={"experiment_id": "77"})
    r.call("run.create.conflict", "POST", "runs/create", body={"experiment_id": e, "run_name": "x", "tags": [{"key": "mlflow.runName", "value": "y"}]})
    r.call("run.update", "POST", "runs/update", body={"run_id": run, "status": "FINISHED", "end_time": 5000})
    r.call("run.update.nostatus", "POST", "runs/update", body={"run_id": run_ids[1], "end_time": 6000})
    r.call("run.update.missing", "POST", "runs/update", body={"run_id": "abc", "status": "FAILED"})
    r.call("run.get", "GET", "runs/get", {"run_id": run})
    r.call("run.get.missing", "GET", "runs/get", {"run_id": "deadbeef"})
    r.call("run.get.noid", "GET", "runs/get")
    tok, page = None, 0
    while True:
        js = r.call(f"run.search.page{page}", "POST", "runs/search", body={"experiment_ids": [e], "max_results": 2, "page_token": tok})
        tok, page = js.get("next_page_token"), page + 1
        if not tok or page > 5:
            break
    r.call("run.search.default", "POST", "runs/search", body={"experiment_ids": [e, "0"]})
    r.call("run.search.strmax", "POST", "runs/search", body={"experiment_ids": [int(e)], "max_results": "1"})
    r.call("run.search.max0", "POST", "runs/search", body={"experiment_ids": [e], "max_results": 0})
    r.call("run.search.maxbig", "POST", "runs/search", body={"experiment_ids": [e], "max_results": 50001})
    r.call("run.search.noids", "POST", "runs/search", body={})
    r.call("run.search.token0", "POST", "runs/search", body={"experiment_ids": [e], "page_token": "eyJvZmZzZXQiOiAwfQ=="})
    r.call("run.search.get", "GET", "runs/search", {"experiment_ids": e})

    r.call("art.list.empty", "GET", "artifacts/list", {"run_id": run})
    for rel, data in [("outputs/model.pth", b"x" * 100), ("a.txt", b"hello"), ("z.bin", b""), ("d/MLmodel", b"m")]:
        c.upload_artifact(uri, rel, data)
    r.call("art.list", "GET", "artifacts/list", {"run_id": run})
    r.call("art.list.sub", "GET", "artifacts/list", {"run_id": run, "path": "outputs"})
    r.call("art.list.slash", "GET", "artifacts/list", {"run_id": run, "path": "outputs/"})
    r.call("art.list.file", "GET", "artifacts/list", {"run_id": run, "path": "a.txt"})
    r.call("art.list.missing", "GET", "artifacts/list", {"run_id": run, "path": "nope"})
    r.call("art.list.dotdot", "GET", "artifacts/list", {"run_id": run, "path": "../x"})
    r.call("art.list.norun", "GET", "artifacts/list", {"run_id": "abc"})
    s3run = r.call("run.create.s3", "POST", "runs/create", body={"experiment_id": eids[2], "run_name": "s3"})
    r.call("art.list.s3", "GET", "artifacts/list", {"run_id": s3run.get("run", {}).get("info", {}).get("run_id")})
    base = f"{e}/{run}/artifacts"
    r.call("proxy.list", "GET", A, {"path": base})
    r.call("proxy.list.missing", "GET", A, {"path": "nope"})
    r.raw("proxy.get", "GET", f"{A}/{base}/a.txt")
    r.raw("proxy.get.range", "GET", f"{A}/{base}/outputs/model.pth", headers={"Range": "bytes=10-19"})
    r.raw("proxy.get.empty", "GET", f"{A}/{base}/z.bin")
    r.raw("proxy.get.mlmodel", "GET", f"{A}/{base}/d/MLmodel")
    r.raw("proxy.get.missing", "GET", f"{A}/{base}/missing.bin")
    r.raw("proxy.get.dir", "GET", f"{A}/{base}/outputs")
    r.raw("proxy.put", "PUT", f"{A}/{base}/put/b.bin", data=b"abc", headers={"Content-Type": "application/octet-stream"})

    r.call("rm.create", "POST", "registered-models/create", body={"name": "m1"})
    r.call("rm.create.dup", "POST", "registered-models/create", body={"name": "m1"})
    r.call("rm.get.missing", "GET", "registered-models/get", {"name": "zz"})
    sources = [uri + "/outputs", f"runs:/{run}/outputs", "s3://b/k", "s3://b/k2/"]
    for i, src in enumerate(sources):
        r.call(f"mv.create.{i}", "POST", "model-versions/create", body={"name": "m1", "source": src, "run_id": run if i < 2 else None})
        time.sleep(0.01)
    r.call("mv.create.local-norun", "POST", "model-versions/create", body={"name": "m1", "source": root.rstrip("/") + "/x"})
    r.call("mv.create.local-outside", "POST", "model-versions/create", body={"name": "m1", "source": "/etc", "run_id": run})
    r.call("mv.create.relative", "POST", "model-versions/create", body={"name": "m1", "source": "s3://b/x/../y"})
    r.call("mv.create.bucket", "POST", "model-versions/create", body={"name": "m1", "source": "s3://b"})
    r.call("mv.create.nomodel", "POST", "model-versions/create", body={"name": "zz", "source": "s3://b/k"})
    r.call("mv.create.nosource", "POST", "model-versions/create", body={"name": "m1"})
    r.call("mv.get", "GET", "model-versions/get", {"name": "m1", "version": "1"})
    r.call("mv.get.missing", "GET", "model-versions/get", {"name": "m1", "version": "9"})
    r.call("mv.get.bad", "GET", "model-versions/get", {"name": "m1", "version": "x"})
    r.call("mv.uri.0", "GET", "model-versions/get-download-uri", {"name": "m1", "version": "1"})
    r.call("mv.uri.1", "GET", "model-versions/get-download-uri", {"name": "m1", "version": "2"})
    r.call("mv.uri.missing", "GET", "model-versions/get-download-uri", {"name": "m1", "version": "9"})
    r.call("mv.stage", "POST", "model-versions/transition-stage", body={"name": "m1", "version": "1", "stage": "production", "archive_existing_versions": False})
    time.sleep(0.01)
    r.call("mv.stage.archive", "POST", "model-versions/transition-stage", body={"name": "m1", "version": "2", "stage": "Production", "archive_existing_versions": True})
    r.call("mv.stage.int", "POST", "model-versions/transition-stage", body={"name": "m1", "version": 2, "stage": "Staging"})
    r.call("mv.stage.bad", "POST", "model-versions/transition-stage", body={"name": "m1", "version": "2", "stage": "Bogus"})
    for alias, version in [("champ", "2"), ("b", "2"), ("a", "4"), ("gone", "3")]:
        r.call(f"alias.set.{alias}", "POST", "registered-models/alias", body={"name": "m1", "alias": alias, "version": version})
    r.call("alias.set.int", "POST", "registered-models/alias", body={"name": "m1", "alias": "c", "version": 3})
    r.call("alias.set.latest", "POST", "registered-models/alias", body={"name": "m1", "alias": "Latest", "version": "1"})
    r.call("alias.set.v1", "POST", "registered-models/alias", body={"name": "m1", "alias": "v1", "version": "1"})
    r.call("alias.set.chars", "POST", "registered-models/alias", body={"name": "m1", "alias": "a.b", "version": "1"})
    r.call("alias.set.missing", "POST", "registered-models/alias", body={"name": "m1", "alias": "x", "version": "9"})
    r.call("alias.get", "GET", "registered-models/alias", {"name": "m1", "alias": "champ"})
    r.call("alias.get.missing", "GET", "registered-models/alias", {"name": "m1", "alias": "nope"})
    r.call("alias.get.nomodel", "GET", "registered-models/alias", {"name": "zz", "alias": "nope"})
    r.call("mv.get.aliased", "GET", "model-versions/get", {"name": "m1", "version": "2"})
    r.call("rm.get", "GET", "registered-models/get", {"name": "m1"})
    r.call("mv.search", "GET", "model-versions/search", {"filter": "name='m1'"})
    tok, page = None, 0
    while True:
        js = r.call(f"mv.search.page{page}", "GET", "model-versions/search", {"filter": "name = \"m1\"", "max_results": 3, "page_token": tok})
        tok, page = js.get("next_page_token"), page + 1
        if not tok or page > 5:
            break
    r.call("mv.search.run", "GET", "model-versions/search", {"filter": f"run_id = '{run}'"})
    r.call("mv.search.none", "GET", "model-versions/search", {"filter": "name='nothing'"})
    r.call("mv.search.bad", "GET", "model-versions/search", {"filter": "bogus"})
    r.call("mv.search.max0", "GET", "model-versions/search", {"max_results": 0})
    r.call("mv.search.maxbig", "GET", "model-versions/search", {"max_results": 200001})
    r.call("alias.del.query", "DELETE", "registered-models/alias", params={"name": "m1", "alias": "b"})
    r.call("alias.del", "DELETE", "registered-models/alias", body={"name": "m1", "alias": "b"})
    r.call("alias.del.again", "DELETE", "registered-models/alias", body={"name": "m1", "alias": "b"})
    r.call("alias.del.nomodel", "DELETE", "registered-models/alias", body={"name": "zz", "alias": "b"})
    r.call("mv.delete.int", "DELETE", "model-versions/delete", body={"name": "m1", "version": 3})
    r.call("mv.delete", "DELETE", "model-versions/delete", body={"name": "m1", "version": "3"})
    r.call("mv.delete.again", "DELETE", "model-versions/delete", body={"name": "m1", "version": "3"})
    r.call("alias.get.deleted", "GET", "registered-models/alias", {"name": "m1", "alias": "gone"})
    r.call("mv.create.afterdelete", "POST", "model-versions/create", body={"name": "m1", "source": "s3://b/k5"})
    r.call("rm.get.afterdelete", "GET", "registered-models/get", {"name": "m1"})
    for name in ("m2", "m3", "n1"):
        r.call(f"rm.create.{name}", "POST", "registered-models/create", body={"name": name})
    tok, page = None, 0
    while True:
        js = r.call(f"rm.search.page{page}", "GET", "registered-models/search", {"max_results": 2, "page_token": tok})
        tok, page = js.get("next_page_token"), page + 1
        if not tok or page > 5:
            break
    r.call("rm.search.none", "GET", "registered-models/search", {"filter": "name='nothing'"})
    r.call("rm.search.max0", "GET", "registered-models/search", {"max_results": 0})
    r.call("rm.search.maxbig", "GET", "registered-models/search", {"max_results": 1001})
    r.call("rm.delete", "DELETE", "registered-models/delete", body={"name": "m3"})
    r.call("rm.delete.again", "DELETE", "registered-models/delete", body={"name": "m3"})
    r.raw("route.unknown", "GET", "/api/2.0/mlflow/nope")
    r.raw("route.method", "GET", "/api/2.0/mlflow/runs/create")


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


def start_test_server(args):
    proc = subprocess.Popen([sys.executable, SERVER, "--port", "0", *args], stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


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


def run_mode(mode, src, tmp, show):
    roots = {who: f"file://{tmp}/{mode}-{who}-root" for who in ("real", "test")}
    extra = ["--artifact-root", roots["real"]] if mode == "direct" else []
    env = dict(os.environ, MLFLOW_SRC=src)
    url, pid, folder = subprocess.run([START, *extra], env=env, check=True, capture_output=True,
                                      text=True).stdout.split()
    dest = f"{tmp}/{mode}-test-dest"
    proc, turl = start_test_server(["--default-artifact-root", roots["test"]] if mode == "direct"
                                   else ["--artifacts-destination", dest])
    results = {}
    try:
        for who, u, paths in (("real", url, [(folder + "/artifacts", "<DEST>"), (roots["real"][7:], "<ROOT>")]),
                              ("test", turl, [(dest, "<DEST>"), (roots["test"][7:], "<ROOT>")])):
            rec = Recorder(MlflowClient(u), paths)
            scenario(rec, mode, roots[who])
            results[who] = rec.out
    finally:
        os.killpg(int(pid), signal.SIGTERM)
        proc.terminate()
        proc.wait()
    return compare(results["real"], results["test"], f"{mode} mode", show)


def run_auth(src, tmp):
    """MLflow's basic-auth app (as `mlflow server --app-name basic-auth` runs it) against
    the test server's --auth basic:USER:PASS, plus the test server's bearer mode."""
    with open(f"{tmp}/auth.ini", "w") as f:
        f.write(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{tmp}/auth.db\n"
                "admin_username = admin\nadmin_password = password1234\nauthorization_function"
                " = mlflow.server.auth:authenticate_request_basic_auth\n")
    port = subprocess.run(["/usr/bin/python3", "-c", "import socket;s=socket.socket();"
                           "s.bind(('127.0.0.1',0));print(s.getsockname()[1])"],
                          capture_output=True, text=True).stdout.strip()
    env = dict(os.environ, PYTHONPATH=src, MLFLOW_AUTH_CONFIG_PATH=f"{tmp}/auth.ini",
               _MLFLOW_SERVER_FILE_STORE=f"sqlite:///{tmp}/auth-db.sqlite",
               _MLFLOW_SERVER_REGISTRY_STORE=f"sqlite:///{tmp}/auth-db.sqlite",
               _MLFLOW_SERVER_ARTIFACT_ROOT="mlflow-artifacts:/",
               _MLFLOW_SERVER_ARTIFACT_DESTINATION=f"{tmp}/auth-art", _MLFLOW_SERVER_SERVE_ARTIFACTS="true")
    real = subprocess.Popen(["/usr/bin/python3", "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "1",
                             "mlflow.server.auth:create_app()"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    test, turl = start_test_server(["--auth", "basic:admin:password1234"])
    bearer, burl = start_test_server(["--auth", "bearer:s3cret"])
    results = {}
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            if _ready(url):
                break
            time.sleep(0.25)
        for who, u in (("real", url), ("test", turl)):
            rec = Recorder(MlflowClient(u), [])
            rec.raw("health", "GET", "/health")
            rec.raw("none", "GET", "/api/2.0/mlflow/experiments/search", {"max_results": 1})
            rec.raw("none.unknown-route", "GET", "/api/2.0/mlflow/nope")
            rec.raw("none.get-artifact", "GET", "/get-artifact", {"path": "x", "run_id": "y"})
            rec.c = MlflowClient(u, auth="basic:admin:wrong")
            rec.raw("wrong", "GET", "/api/2.0/mlflow/experiments/search", {"max_results": 1})
            rec.c = MlflowClient(u, auth="bearer:s3cret")
            rec.raw("bearer", "GET", "/api/2.0/mlflow/experiments/search", {"max_results": 1})
            rec.c = MlflowClient(u, auth="basic:admin:password1234")
            rec.call("right", "GET", "experiments/search", {"max_results": 1})
            results[who] = rec.out
        problems = compare(results["real"], results["test"], "basic auth")
        ok = [MlflowClient(burl, auth=a).request("GET", "/api/2.0/mlflow/experiments/search",
                                                 {"max_results": 1})[0] for a in (None, "bearer:nope", "bearer:s3cret")]
        print(f"bearer mode (test server only): no token {ok[0]}, wrong token {ok[1]}, right token {ok[2]}")
        return problems + (ok != [401, 401, 200])
    finally:
        os.killpg(real.pid, signal.SIGTERM)
        for p in (test, bearer):
            p.terminate()
            p.wait()


def _ready(url):
    try:
        return MlflowClient(url, timeout=2).request("GET", "/health")[0] == 200
    except OSError:
        return False


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=["proxied", "direct", "all"], default="all")
    p.add_argument("--show", metavar="PREFIX", help="print the real answers of steps so named")
    o = p.parse_args()
    src = os.environ.get("MLFLOW_SRC")
    if not src:
        sys.exit("set MLFLOW_SRC to the folder holding mlflow/ and querystring_parser/")
    tmp = tempfile.mkdtemp(prefix="mlflow-crosscheck.")
    try:
        problems = 0
        for mode in (["proxied", "direct"] if o.mode == "all" else [o.mode]):
            problems += run_mode(mode, os.path.abspath(src), tmp, o.show)
        if o.mode == "all":
            problems += run_auth(os.path.abspath(src), tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("no differences" if not problems else f"{problems} differing steps")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
