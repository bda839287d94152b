"""An in-memory MLflow tracking server for the tests (Python stdlib only).

It answers the REST calls of the mount and of mlflow_client.py as `mlflow server` 2.12.2
with a SQL store does; mlflow_crosscheck.py compares the two. JSON is indented like MLflow's,
int64 fields are numbers, `experiment_id` and `version` strings, empty fields are absent
(`{}` for an empty search). Errors are {"error_code", "message"} with MLflow's statuses;
unknown routes, wrong methods and other failures get Flask's HTML 404/405/500. GET reads the
query string, POST wants Content-Type application/json, DELETE a JSON body. Paging: see
paginate. Registry quirks: versions are READY at once, model-versions/search leaves out
`aliases`, a deleted version's aliases stay (and answer 404), an unknown alias is a 400.
Proxied mode (--artifacts-destination DIR; a temporary DIR by default): experiments get
mlflow-artifacts:/<id>, /api/2.0/mlflow-artifacts/artifacts serves DIR; its download ignores
Range (200, chunked, whole file), a missing file is a JSON 500. Direct mode
(--default-artifact-root URI): experiments get URI/<id>, the proxy routes answer 503, and
artifacts/list reads file:// roots only (other schemes: HTML 500, as a real server without
their client libraries). /get-artifact is not modelled. POST /_test/model-versions/set-status
{name, version, status} is the tests' own (not MLflow's). --page-max N caps every search
page; --auth basic:USER:PASS or bearer:TOKEN makes every route but /health answer MLflow
basic-auth's 401 unless the Authorization header matches; --tls CERT KEY serves HTTPS.

Run: mlflow_server.py --port 0 [--host H] [--artifacts-destination DIR |
--default-artifact-root URI] [--page-max N] [--auth SPEC] [--tls CERT KEY]: prints http://HOST:PORT once
listening, serves until SIGTERM. In-process: MlflowTestServer(...).start() / .stop()."""
import argparse
import base64
import binascii
import http.server
import json
import mimetypes
import os
import posixpath
import random
import re
import signal
import ssl
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid

INVALID, MISSING = "INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"
EXISTS = "RESOURCE_ALREADY_EXISTS"
STATUS = {INVALID: 400, EXISTS: 400, "BAD_REQUEST": 400, MISSING: 404, "INTERNAL_ERROR": 500}
STAGES, DELETED = ["None", "Staging", "Production", "Archived"], "Deleted_Internal"
HTML = {404: ("404 Not Found", "The requested URL was not found on the server. If you entered"
              " the URL manually please check your spelling and try again."),
        405: ("405 Method Not Allowed", "The method is not allowed for the requested URL."),
        500: ("500 Internal Server Error", "The server encountered an internal error and was"
              " unable to complete your request. Either the server is overloaded or there is"
              " an error in the application.")}
AUTH_TEXT = ("You are not authenticated. Please see https://www.mlflow.org/docs/latest/auth/"
             "index.html#authenticating-to-mlflow on how to authenticate.")
TEXT_EXTENSIONS = set("txt log err cfg conf cnf cf ini properties prop hocon toml yaml yml xml"
                      " json js py py3 csv tsv md rst MLmodel MLproject".split())
WORDS = ("able bold calm eager fancy gentle happy keen".split(), "ant bee cat eel fox owl".split())
SEE_DOCS = " See the API docs for more information about request parameters."
PROXY = "/api/2.0/mlflow-artifacts/artifacts"


class Reply(Exception):
    """A whole answer other than a 200 JSON one, raised to end a request."""

    def __init__(self, status, body, ctype="text/html; charset=utf-8", headers=None):
        super().__init__(status)
        self.status, self.body, self.ctype, self.headers = status, body, ctype, headers or {}


def ApiError(message, code=INVALID):  # noqa: N802 (raised like an exception class)
    """MLflow's JSON error answer."""
    return Reply(STATUS[code], json.dumps({"error_code": code, "message": message}).encode(),
                 "application/json")


def html_error(status, headers=None):
    title, text = HTML[status]
    page = f"<!doctype html>\n<html lang=en>\n<title>{title}</title>\n<h1>{title[4:]}</h1>\n"
    return Reply(status, f"{page}<p>{text}</p>\n".encode(), headers=headers)


def now_ms():
    return int(time.time() * 1000)


def mime_type(path):
    """The Content-Type MLflow gives an artifact of that name."""
    base = posixpath.basename(path)
    if (os.path.splitext(base)[1].lstrip(".") or base) in TEXT_EXTENSIONS:
        return "text/plain"
    return mimetypes.guess_type(base)[0] or "application/octet-stream"


def safe_path(path):
    """MLflow's validate_path_is_safe: decoded, no '#', backslash, '..' or absolute path."""
    while (decoded := urllib.parse.unquote(path)) != path:
        path = decoded
    if "#" in path or "\\" in path or ".." in path.split("/") or path.startswith("/"):
        raise ApiError("Invalid path")
    return path


def parse_token(token):
    """The offset in a page token, with MLflow's checks and messages."""
    if not token:
        return 0
    try:
        decoded = base64.b64decode(token)
    except (TypeError, binascii.Error):
        raise ApiError("Invalid page token, could not base64-decode")
    try:
        parsed = json.loads(decoded)
    except ValueError:
        raise ApiError(f"Invalid page token, decoded value={decoded}")
    offset = parsed.get("offset") if isinstance(parsed, dict) else None
    if not offset:
        raise ApiError(f"Invalid page token, parsed value={parsed}")
    try:
        return int(offset)
    except ValueError:
        raise ApiError(f"Invalid page token, not stringable {offset}")


def paginate(key, items, token, n, render, token_when_full=False):
    """One page as MLflow answers it. By default the token comes only when more items
    remain; with token_when_full (runs/search) whenever the page is full, so the last page
    may be empty. max_results: experiments/search has no default (absent or 0: a 400) and
    a maximum of 50000; runs/search 1000 and 50000; registered-models/search 100 and 1000
    (0: an empty page and an offset-0 token, itself refused); model-versions/search 200000
    and 200000."""
    offset, want = parse_token(token), n if token_when_full else n + 1
    page = items[offset:offset + max(want, 0)]
    out = {key: [render(x) for x in page[:max(n, 0)]]} if page[:max(n, 0)] else {}
    if len(page) == want:
        out["next_page_token"] = base64.b64encode(b'{"offset": %d}' % (offset + n)).decode()
    return out


CLAUSE = re.compile(r"""^\s*`?([\w.]+)`?\s*(!?=)\s*(?:'([^']*)'|"([^"]*)")\s*$""")


def matcher(text, keys):
    """A test of items against a filter of `key = 'value'` or `key != 'value'` clauses
    joined by AND, the keys mapped to item fields by `keys`."""
    clauses = []
    for part in re.split(r"\s+AND\s+", text.strip(), flags=re.I) if text else []:
        m = CLAUSE.match(part)
        if not m or m.group(1) not in keys:
            raise ApiError(f"Invalid clause(s) in filter string: {text}")
        clauses.append((keys[m.group(1)], m.group(2) == "=", m.group(3) or m.group(4) or ""))
    return lambda item: all((item.get(k) == v) == eq for k, eq, v in clauses)


class Args:
    """Request parameters with MLflow's required/type checks and messages."""

    def __init__(self, data):
        self.data = data if isinstance(data, dict) else {}

    @staticmethod
    def bad(name, value):
        return ApiError(f"Invalid value {value} for parameter '{name}' supplied. Hint: Value was"
                        f" of type '{type(value).__name__}'.{SEE_DOCS}")

    def get(self, name, required=False):
        value = self.data.get(name)
        if required and (value is None or value == ""):
            raise ApiError(f"Missing value for required parameter '{name}'.{SEE_DOCS}")
        return value

    def str(self, name, required=False):
        value = self.get(name, required)
        if value is not None and not isinstance(value, str):
            raise self.bad(name, value)
        return value or ""

    def int(self, name, default=None, maximum=None):
        value = self.get(name)
        if value is None:
            return default
        ok = isinstance(value, int) and not isinstance(value, bool) or \
            isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value)
        if not ok or maximum is not None and int(value) > maximum:
            raise self.bad(name, value)
        return int(value)

    def run_id(self):
        return self.str("run_id") or self.str("run_uuid") or self.str("run_id", True)

    def list(self, name):
        value = self.data.get(name) or []
        return value if isinstance(value, list) else [value]

    def path(self):
        return safe_path(self.str("path")) if self.get("path") is not None else None


def validate_source(source, run_id, run_of):
    """MLflow's checks on a model version source: a local path must lie inside the
    artifact folder of the given run; any other URI needs a plain absolute path."""
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme == "" or parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        if run_id:
            local = os.path.realpath(urllib.parse.unquote(parsed.path))
            root = urllib.parse.urlparse(run_of(run_id)["artifact_uri"])
            base = os.path.realpath(urllib.parse.unquote(root.path))
            if root.scheme in ("", "file") and (local + "/").startswith(base + "/"):
                return
            source = local
        raise ApiError(f"Invalid model version source: '{source}'. To use a local path as a model"
                       " version source, the run_id request parameter has to be specified and the"
                       " local path has to be contained within the artifact directory of the run"
                       " specified by the run_id.")
    plain = source
    while (unquoted := urllib.parse.unquote_plus(plain)) != plain:
        plain = unquoted
    path = re.sub(r"/+", "/", urllib.parse.urlparse(plain).path.rstrip("/"))
    if "\x00" in path or not path.startswith("/") or posixpath.normpath(path) != path:
        raise ApiError(f"Invalid model version source: '{source}'. If supplying a source as an"
                       " http, https, local file path, ftp, objectstore, or mlflow-artifacts uri,"
                       " an absolute path must be provided without relative path references"
                       " present. Please provide an absolute path.")


def list_local(base, rel):
    """Sorted {"path" (from base), "is_dir", "file_size"?} of one folder level, as MLflow's
    local artifact repository lists it; [] when rel is not a folder."""
    folder = os.path.join(base, os.path.normpath(rel)) if rel else base
    out = []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        full = os.path.join(folder, name)
        out.append({"path": os.path.relpath(full, base), "is_dir": os.path.isdir(full)})
        if not out[-1]["is_dir"] and os.path.getsize(full):
            out[-1]["file_size"] = os.path.getsize(full)
    return sorted(out, key=lambda f: f["path"])


class Mlflow:
    """The server's state and its endpoints. An endpoint takes (Args, route tail) and
    returns the JSON of a 200 answer, or raises a Reply."""

    def __init__(self, destination, artifact_root, page_max):
        self.dest, self.page_max, self.lock = destination, page_max, threading.RLock()
        self.root = "mlflow-artifacts:" if destination else artifact_root.rstrip("/")
        self.experiments, self.runs, self.models = {}, {}, {}
        self.new_experiment("Default", "", [])

    def page(self, key, items, a, n, render=dict, token_when_full=False):
        n = min(n, self.page_max) if self.page_max else n
        return paginate(key, items, a.str("page_token"), n, render, token_when_full)

    def new_experiment(self, name, location, tags):
        if any(e["name"] == name for e in self.experiments.values()):
            raise ApiError(f"Experiment(name={name}) already exists.", EXISTS)
        eid, t = str(len(self.experiments)), now_ms()
        self.experiments[eid] = {"experiment_id": eid, "name": name,
                                 "artifact_location": location or f"{self.root}/{eid}",
                                 "lifecycle_stage": "active", "last_update_time": t,
                                 "creation_time": t, **({"tags": tags} if tags else {})}
        return eid

    def experiment(self, eid):
        if eid not in self.experiments:
            raise ApiError(f"No Experiment with id={eid} exists", MISSING)
        return self.experiments[eid]

    def run(self, run_id):
        if run_id not in self.runs:
            raise ApiError(f"Run with id={run_id} not found", MISSING)
        return self.runs[run_id]

    @staticmethod
    def run_info(run):
        return {k: v for k, v in run.items() if k != "tags" and v is not None}

    def run_json(self, run, inputs=True):
        out = {"info": self.run_info(run), "data": {"tags": run["tags"]} if run["tags"] else {}}
        return dict(out, inputs={}) if inputs else out

    def experiments_search(self, a, _):
        n = a.int("max_results", 0)
        test = matcher(a.str("filter"), {"name": "name", "attributes.name": "name"})
        if not 0 < n <= 50000:
            raise ApiError("Invalid value for max_results. It must be "
                           + (f"at most 50000, but got {n}" if n > 0
                              else f"a positive integer, but got {n}"))
        items = sorted(filter(test, self.experiments.values()),
                       key=lambda e: (-e["creation_time"], int(e["experiment_id"])))
        return self.page("experiments", items, a, n)

    def experiments_get(self, a, _):
        return {"experiment": self.experiment(str(a.get("experiment_id", True)))}

    def experiments_get_by_name(self, a, _):
        name = a.str("experiment_name", True)
        found = next((e for e in self.experiments.values() if e["name"] == name), None)
        if found is None:
            raise ApiError(f"Could not find experiment with name '{name}'", MISSING)
        return {"experiment": found}

    def experiments_create(self, a, _):
        tags = [{"key": t.get("key"), "value": t.get("value")} for t in a.list("tags")]
        return {"experiment_id": self.new_experiment(a.str("name", True),
                                                     a.str("artifact_location"), tags)}

    def runs_create(self, a, _):
        eid, name, user = str(a.get("experiment_id") or ""), a.str("run_name"), a.str("user_id")
        tags = [{"key": t.get("key"), "value": t.get("value")} for t in a.list("tags")]
        start = a.int("start_time", 0)
        if not eid:
            raise ApiError("(sqlite3.IntegrityError) FOREIGN KEY constraint failed", "BAD_REQUEST")
        location = self.experiment(eid)["artifact_location"]
        tagged = next((t["value"] for t in tags if t["key"] == "mlflow.runName"), None)
        if name and tagged and name != tagged:
            raise ApiError("Both 'run_name' argument and 'mlflow.runName' tag are specified, but"
                           f" with different values (run_name='{name}', mlflow.runName="
                           f"'{tagged}').")
        name = name or tagged or "-".join(map(random.choice, WORDS)) + f"-{random.randrange(1000)}"
        if not tagged:
            tags.append({"key": "mlflow.runName", "value": name})
        rid = uuid.uuid4().hex
        self.runs[rid] = {"run_uuid": rid, "experiment_id": eid, "run_name": name,
                          "user_id": user, "status": "RUNNING", "start_time": start,
                          "end_time": None, "artifact_uri": f"{location}/{rid}/artifacts",
                          "lifecycle_stage": "active", "run_id": rid, "tags": tags}
        return {"run": self.run_json(self.runs[rid], inputs=False)}

    def runs_update(self, a, _):
        run, status, end = self.run(a.run_id()), a.str("status"), a.int("end_time")
        if status in ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"):
            run["status"] = status
        run["end_time"] = run["end_time"] if end is None else end
        return {"run_info": self.run_info(run)}

    def runs_get(self, a, _):
        return {"run": self.run_json(self.run(a.run_id()))}

    def runs_search(self, a, _):
        ids, n = [str(i) for i in a.list("experiment_ids")], a.int("max_results", 1000, 50000)
        test = matcher(a.str("filter"), {"run_name": "run_name", "status": "status"})
        items = sorted((r for r in self.runs.values() if r["experiment_id"] in ids and test(r)),
                       key=lambda r: (-r["start_time"], r["run_uuid"]))
        return self.page("runs", items, a, n, self.run_json, token_when_full=True)

    def artifacts_list(self, a, _):
        path, uri = a.path(), self.run(a.run_id())["artifact_uri"]
        root = urllib.parse.urlparse(uri)
        if root.scheme == "mlflow-artifacts" and self.dest:  # named under the asked path
            files = list_local(os.path.join(self.dest, root.path.lstrip("/")), path)
            for f in files:
                f["path"] = posixpath.join(path or "", posixpath.basename(f["path"]))
        elif root.scheme in ("", "file"):
            files = list_local(urllib.parse.unquote(root.path), path)
        else:
            raise html_error(500)
        return dict({"root_uri": uri}, **({"files": files} if files else {}))

    def proxy_list(self, a, _):
        files = list_local(self.dest, a.path())
        files = [dict(f, path=posixpath.basename(f["path"])) for f in files]
        return {"files": files} if files else {}

    def proxy_download(self, _, tail):
        path = safe_path(tail)
        full = os.path.join(self.dest, path)
        if not os.path.exists(full):
            raise ApiError("The following failures occurred while downloading one or more"
                           f" artifacts from {self.dest}:\n##### File {path} #####\n[Errno 2] No"
                           f" such file or directory: '{full}'", "INTERNAL_ERROR")
        if os.path.isdir(full):
            raise html_error(500)
        raise Reply(200, open(full, "rb"), mime_type(path), {  # streamed, then closed
            "Transfer-Encoding": "chunked", "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f"attachment; filename={posixpath.basename(path)}"})

    def proxy_upload(self, a, tail):
        full = os.path.join(self.dest, safe_path(tail))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(a.data["_body"])
        return {}

    def model(self, name):
        if name not in self.models:
            raise ApiError(f"Registered Model with name={name} not found", MISSING)
        return self.models[name]

    def version(self, name, version):
        if not re.fullmatch(r"\s*[-+]?\d+\s*", version):
            raise ApiError(f"Model version must be an integer, got '{version}'")
        mv = self.models.get(name, {}).get("versions", {}).get(int(version))
        if mv is None or mv["current_stage"] == DELETED:
            raise ApiError(f"Model Version (name={name}, version={version}) not found", MISSING)
        return mv

    def mv_json(self, mv, aliases=True):
        out = dict({k: v for k, v in mv.items() if v is not None}, version=str(mv["version"]))
        names = sorted(k for k, v in self.models[mv["name"]]["aliases"].items()
                       if v == mv["version"])
        return dict(out, aliases=names) if aliases and names else out

    def rm_json(self, model):
        out = {k: model[k] for k in ("name", "creation_timestamp", "last_updated_timestamp")}
        # the newest version of each stage, the stages in order of first appearance
        latest = {mv["current_stage"]: mv for _, mv in sorted(model["versions"].items())
                  if mv["current_stage"] != DELETED}
        if latest:
            out["latest_versions"] = [self.mv_json(mv, False) for mv in latest.values()]
        if model["aliases"]:
            out["aliases"] = [{"alias": k, "version": str(v)}
                              for k, v in sorted(model["aliases"].items())]
        return out

    def rm_create(self, a, _):
        name, t = a.str("name", True), now_ms()
        if name in self.models:
            raise ApiError(f"Registered Model (name={name}) already exists.", EXISTS)
        self.models[name] = {"name": name, "creation_timestamp": t, "last_updated_timestamp": t,
                             "versions": {}, "aliases": {}}
        return {"registered_model": self.rm_json(self.models[name])}

    def rm_get(self, a, _):
        return {"registered_model": self.rm_json(self.model(a.str("name", True)))}

    def rm_delete(self, a, _):
        del self.models[self.model(a.str("name", True))["name"]]
        return {}

    def rm_search(self, a, _):
        n, test = a.int("max_results", 100, 1000), matcher(a.str("filter"), {"name": "name"})
        items = sorted(filter(test, self.models.values()), key=lambda m: m["name"])
        return self.page("registered_models", items, a, n, self.rm_json)

    def mv_create(self, a, _):
        name, source, run_id = a.str("name", True), a.str("source", True), a.str("run_id")
        validate_source(source, run_id, self.run)
        model, t = self.model(name), now_ms()
        number = max(model["versions"], default=0) + 1
        model["last_updated_timestamp"] = t
        model["versions"][number] = {
            "name": name, "version": number, "creation_timestamp": t,
            "last_updated_timestamp": t, "current_stage": "None",
            "description": a.str("description"), "source": source, "run_id": run_id,
            "status": "READY", "run_link": a.str("run_link")}
        return {"model_version": self.mv_json(model["versions"][number])}

    def test_set_status(self, a, _):
        mv = self.version(a.str("name", True), a.str("version", True))
        mv["status"] = a.str("status", True)
        return {"model_version": self.mv_json(mv)}

    def mv_get(self, a, _):
        mv = self.version(a.str("name", True), a.str("version", True))
        return {"model_version": self.mv_json(mv)}

    def mv_uri(self, a, _):
        mv = self.version(a.str("name", True), a.str("version", True))
        return {"artifact_uri": mv["source"]}

    def mv_delete(self, a, _):
        mv, t = self.version(a.str("name", True), a.str("version", True)), now_ms()
        self.models[mv["name"]]["last_updated_timestamp"] = t
        # Its aliases stay: MLflow 2.12.2 compares their int version with the request's string.
        mv.update(current_stage=DELETED, last_updated_timestamp=t, description=None,
                  source="REDACTED-SOURCE-PATH", run_id="REDACTED-RUN-ID",
                  run_link="REDACTED-RUN-LINK")
        return {}

    def mv_transition(self, a, _):
        name, version, stage = a.str("name", True), a.str("version", True), a.str("stage", True)
        archive = a.get("archive_existing_versions") in (True, "true", "True")
        canonical = next((s for s in STAGES if s.lower() == stage.lower()), None)
        if canonical is None:
            raise ApiError(f"Invalid Model Version stage: {stage}. Value must be one of None,"
                           " Staging, Production, Archived.")
        mv, t = self.version(name, version), now_ms()
        for other in self.models[name]["versions"].values() if archive else []:
            if other is not mv and other["current_stage"] == canonical:
                other.update(current_stage="Archived", last_updated_timestamp=t)
        mv.update(current_stage=canonical, last_updated_timestamp=t)
        self.models[name]["last_updated_timestamp"] = t
        return {"model_version": self.mv_json(mv)}

    def mv_search(self, a, _):
        n = a.int("max_results", 200000, 200000)
        test = matcher(a.str("filter"), {"name": "name", "run_id": "run_id",
                                         "source_path": "source"})
        if n < 1:
            raise ApiError("Invalid value for max_results. It must be a positive integer, but"
                           f" got {n}")
        items = sorted((mv for m in self.models.values() for mv in m["versions"].values()
                        if mv["current_stage"] != DELETED and test(mv)),
                       key=lambda mv: (-mv["last_updated_timestamp"], mv["name"], -mv["version"]))
        return self.page("model_versions", items, a, n, lambda mv: self.mv_json(mv, False))

    @staticmethod
    def alias_name(a):
        alias = a.str("alias", True)
        if not re.fullmatch(r"[\w\-]*", alias):
            raise ApiError(f"Invalid alias name: '{alias}'. Names may only contain alphanumerics,"
                           " underscores (_), and dashes (-).")
        if alias.lower() == "latest":
            raise ApiError("'latest' alias name (case insensitive) is reserved.")
        if re.fullmatch(r"[vV]\d+", alias):
            raise ApiError(f"Version alias name '{alias}' is reserved.")
        return alias

    def alias_set(self, a, _):
        name, alias, version = a.str("name", True), self.alias_name(a), a.str("version", True)
        self.models[name]["aliases"][alias] = self.version(name, version)["version"]
        return {}

    def alias_delete(self, a, _):
        name, alias = a.str("name", True), self.alias_name(a)
        self.model(name)["aliases"].pop(alias, None)
        return {}

    def alias_get(self, a, _):
        name, alias = a.str("name", True), self.alias_name(a)
        number = self.models.get(name, {}).get("aliases", {}).get(alias)
        if number is None:
            raise ApiError(f"Registered model alias {alias} not found.")
        return {"model_version": self.mv_json(self.version(name, str(number)))}


ROUTES = {"/api/2.0/mlflow/" + path: dict(zip(methods.split(), names.split()))
          for path, methods, names in [
              ("experiments/search", "GET POST", "experiments_search experiments_search"),
              ("experiments/get", "GET", "experiments_get"),
              ("experiments/get-by-name", "GET", "experiments_get_by_name"),
              ("experiments/create", "POST", "experiments_create"),
              ("runs/create", "POST", "runs_create"), ("runs/update", "POST", "runs_update"),
              ("runs/get", "GET", "runs_get"), ("runs/search", "POST", "runs_search"),
              ("artifacts/list", "GET", "artifacts_list"), ("model-versions/get", "GET", "mv_get"),
              ("registered-models/create", "POST", "rm_create"),
              ("registered-models/get", "GET", "rm_get"),
              ("registered-models/delete", "DELETE", "rm_delete"),
              ("registered-models/search", "GET", "rm_search"),
              ("registered-models/alias", "GET POST DELETE", "alias_get alias_set alias_delete"),
              ("model-versions/create", "POST", "mv_create"),
              ("model-versions/get-download-uri", "GET", "mv_uri"),
              ("model-versions/delete", "DELETE", "mv_delete"),
              ("model-versions/transition-stage", "POST", "mv_transition"),
              ("model-versions/search", "GET", "mv_search")]}
ROUTES[PROXY] = {"GET": "proxy_list"}
# Not MLflow's: lets a test give a version another status (MLflow registers
# asynchronously on some servers; its REST API cannot make a version that is not READY).
ROUTES["/_test/model-versions/set-status"] = {"POST": "test_set_status"}


class Handler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 answers that close the connection, as gunicorn's sync workers send them.
    The server carries `app` (an Mlflow) and `auth` (the expected Authorization or None)."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body, ctype, headers):
        """Send an answer; a chunked one has an open file as its body."""
        self.send_response(status)
        self.send_header("Connection", "close")
        self.send_header("Content-Type", ctype)
        if "Transfer-Encoding" not in headers:
            self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.close_connection = True
        if "Transfer-Encoding" not in headers:
            return self.wfile.write(body)
        with body:
            while chunk := body.read(1 << 20):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")

    def route(self, path, method):
        """(endpoint, route tail), or raise Flask's 404/405 or a 503 from a server that
        does not serve artifacts."""
        if path == "/health":
            raise Reply(200, b"OK") if method == "GET" else \
                html_error(405, {"Allow": "GET, HEAD, OPTIONS"})
        tail, rule, methods = "", path, ROUTES.get(path)
        if path.startswith(PROXY + "/") and len(path) > len(PROXY) + 1:
            tail = urllib.parse.unquote(path[len(PROXY) + 1:])
            rule = PROXY + "/<path:artifact_path>"
            methods = {"GET": "proxy_download", "PUT": "proxy_upload"}
        if methods is None:
            raise html_error(404)
        if method not in methods:
            extra = {"HEAD", "OPTIONS"} if "GET" in methods else {"OPTIONS"}
            raise html_error(405, {"Allow": ", ".join(sorted(set(methods) | extra))})
        if path.startswith(PROXY) and not self.server.app.dest:
            raise Reply(503, (f"Endpoint: {rule} disabled due to the mlflow server running with"
                              " `--no-serve-artifacts`. To enable artifacts server functionality,"
                              " run `mlflow server` with `--serve-artifacts`").encode())
        return methods[method], tail

    def args(self, method, query, body):
        if method == "GET":
            parsed = urllib.parse.parse_qs(query, keep_blank_values=True)
            return Args({k.replace("[]", ""): v[0] if len(v) == 1 and not k.endswith("[]") else v
                         for k, v in parsed.items()})
        if method == "PUT":
            return Args({"_body": body})
        ctype = self.headers.get("Content-Type")
        if method == "POST" and ctype is None:
            raise ApiError("Bad Request. Content-Type header is missing.")
        if method == "POST" and ctype.split(";")[0].strip() != "application/json":
            raise ApiError("Bad Request. Content-Type must be one of ['application/json'].")
        try:
            data = json.loads(body) if body else {}
            return Args(json.loads(data) if isinstance(data, str) else data)
        except ValueError:
            return Args({})

    def handle_any(self):
        try:
            self.answer()
        except (BrokenPipeError, ConnectionResetError):  # the client went away
            self.close_connection = True

    def answer(self):
        parts = urllib.parse.urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        app, auth = self.server.app, self.server.auth
        try:
            if auth and self.headers.get("Authorization") != auth and \
                    not parts.path.startswith(("/health", "/static", "/favicon.ico")):
                raise Reply(401, AUTH_TEXT.encode(),
                            headers={"WWW-Authenticate": 'Basic realm="mlflow"'})
            name, tail = self.route(parts.path, self.command)
            args = self.args(self.command, parts.query, body)
            if args.list("order_by"):
                raise ApiError("order_by is not supported by the test server")
            with app.lock:
                result = getattr(app, name)(args, tail)
        except Reply as r:
            return self.send(r.status, r.body, r.ctype, r.headers)
        except Exception:  # an unexpected failure: Flask's 500 page
            traceback.print_exc()
            return self.send(500, html_error(500).body, "text/html; charset=utf-8", {})
        self.send(200, json.dumps(result, indent=2).encode(), "application/json", {})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any


class MlflowTestServer:
    def __init__(self, host="127.0.0.1", port=0, artifacts_destination=None,
                 default_artifact_root=None, page_max=None, auth=None, tls=None):
        if not artifacts_destination and not default_artifact_root:
            artifacts_destination = tempfile.mkdtemp(prefix="mlflow-artifacts.")
        if artifacts_destination:
            os.makedirs(artifacts_destination, exist_ok=True)
        kind, _, rest = (auth or "").partition(":")
        header = {"basic": "Basic " + base64.b64encode(rest.encode()).decode(),
                  "bearer": "Bearer " + rest}.get(kind)
        if auth and not header:
            raise ValueError(f"auth: expected basic:USER:PASS or bearer:TOKEN, not {auth!r}")
        self.httpd = http.server.ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads, self.httpd.auth = True, header
        self.httpd.app = Mlflow(artifacts_destination and os.path.abspath(artifacts_destination),
                                default_artifact_root, page_max)
        scheme = "http"
        if tls:  # (certificate file, key file): HTTPS, the handshake in each request's thread
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True,
                                                do_handshake_on_connect=False)
            scheme = "https"
        self.url = "%s://%s:%d" % (scheme, host, self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self.url

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def main():
    p = argparse.ArgumentParser(description="In-memory MLflow 2.12.2 tracking server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--artifacts-destination", metavar="DIR", help="proxied artifacts")
    where.add_argument("--default-artifact-root", metavar="URI", help="direct artifact root")
    p.add_argument("--page-max", type=int, metavar="N", help="cap every search page at N")
    p.add_argument("--auth", metavar="SPEC", help="basic:USER:PASS or bearer:TOKEN")
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS")
    o = p.parse_args()
    server = MlflowTestServer(o.host, o.port, o.artifacts_destination, o.default_artifact_root,
                              o.page_max, o.auth, o.tls)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(server.start(), flush=True)
    while not stop.wait(1):
        pass
    server.stop()


if __name__ == "__main__":
    sys.exit(main())
