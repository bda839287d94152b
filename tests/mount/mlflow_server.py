"""An in-memory MLflow tracking server for the tests (Python stdlib only).

It models `mlflow server` 2.12.2 with a SQL backend store, as mlflow_crosscheck.py checks
against the real one:

- Answers: JSON indented like MLflow's; int64 fields are JSON numbers, `experiment_id` and
  `version` strings; unset or empty fields are absent (`{}` for an empty search, no `files`
  in an empty listing, no `file_size` for folders and empty files, no `end_time` before it
  is set). Errors are `{"error_code", "message"}` with 400 for INVALID_PARAMETER_VALUE,
  RESOURCE_ALREADY_EXISTS and BAD_REQUEST, 404 for RESOURCE_DOES_NOT_EXIST, 500 for
  INTERNAL_ERROR; unknown routes, wrong methods and failures outside MLflow's own checks
  get Flask's HTML 404/405/500 pages. Every answer closes the connection (gunicorn sync).
- Requests: GET reads the query string; POST needs `Content-Type: application/json`;
  DELETE reads a JSON body, never the query string. String fields sent as JSON numbers are
  refused (400), except experiment ids; int fields take numbers or numeric strings.
- Paging: tokens are base64 of `{"offset": N}`. experiments/search has no default
  max_results (absent or 0 is a 400), max 50000; runs/search defaults to 1000 (max 50000)
  and hands a token whenever a page is full, so the last page may be empty;
  registered-models/search defaults to 100 (max 1000; 0 gives an empty page and an
  offset-0 token, itself refused), model-versions/search to 200000 (max 200000); those
  hand a token only when more remain. `page_max` caps every search page.
- Artifacts: proxied mode (`--artifacts-destination DIR`, the default with a temporary
  DIR) gives experiments `mlflow-artifacts:/<id>` and serves /api/2.0/mlflow-artifacts/
  from DIR. Direct mode (`--default-artifact-root URI`) gives `URI/<id>`, answers 503 on
  the proxy routes, and lists and serves file:// roots only (other schemes: HTML 500, as
  the real server without their client libraries). The proxied download ignores Range
  (200, chunked, whole file) and answers a missing file with a JSON 500 INTERNAL_ERROR;
  /get-artifact honours a single Range (206), a missing file is an HTML 500.
- Registry: versions are READY at once; model-versions/search omits `aliases`; deleting a
  version leaves its aliases behind (they then answer 404); an unknown alias is a 400
  INVALID_PARAMETER_VALUE; deleting an unknown alias succeeds.
- Auth (`--auth basic:USER:PASS` or `bearer:TOKEN`): every route but /health answers 401,
  MLflow basic-auth's text and `WWW-Authenticate: Basic realm="mlflow"`, unless the
  request's Authorization header matches.

Run: mlflow_server.py --port 0 [--host H] [--artifacts-destination DIR |
--default-artifact-root URI] [--page-max N] [--auth SPEC]; it prints `http://HOST:PORT`
once listening and serves until SIGTERM. In-process: MlflowTestServer(...).start()/.stop().
"""
import argparse
import base64
import binascii
import email.utils
import http.server
import json
import mimetypes
import os
import posixpath
import random
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
import zlib

INVALID, MISSING, EXISTS = "INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS"
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
TEXT_EXTENSIONS = {"txt", "log", "err", "cfg", "conf", "cnf", "cf", "ini", "properties", "prop",
                   "hocon", "toml", "yaml", "yml", "xml", "json", "js", "py", "py3", "csv", "tsv",
                   "md", "rst", "MLmodel", "MLproject"}
WORDS = (["able", "bold", "calm", "eager", "fancy", "gentle", "happy", "keen", "lucky", "merry"],
         ["ant", "bee", "cat", "doe", "eel", "fox", "gnu", "hare", "owl", "yak"])
NO_ORDER_BY = "order_by is not supported by the test server"


class ApiError(Exception):
    """An MLflow error answer: {"error_code", "message"}."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


class Reply(Exception):
    """A complete non-JSON answer, raised to end a request."""

    def __init__(self, status, body=b"", ctype="text/html; charset=utf-8", headers=None):
        super().__init__(status)
        self.status, self.body, self.ctype, self.headers = status, body, ctype, headers or {}


def html_error(status, headers=None):
    title, text = HTML[status]
    page = f"<!doctype html>\n<html lang=en>\n<title>{title}</title>\n<h1>{title[4:]}</h1>\n<p>{text}</p>\n"
    return Reply(status, page.encode(), headers=headers)


def now_ms():
    return int(time.time() * 1000)


def mime_type(path):
    """The Content-Type MLflow gives an artifact of that name."""
    base = posixpath.basename(path)
    ext = os.path.splitext(base)[1].lstrip(".") or base
    return "text/plain" if ext in TEXT_EXTENSIONS else mimetypes.guess_type(base)[0] or "application/octet-stream"


def safe_path(path):
    """MLflow's validate_path_is_safe: decoded, no '#', backslash, '..' or absolute path."""
    for _ in range(10):
        decoded = urllib.parse.urlunparse(urllib.parse.urlparse(urllib.parse.unquote(path)))
        if decoded == path:
            break
        path = decoded
    if "#" in path or "\\" in path or ".." in path.split("/") or path.startswith("/"):
        raise ApiError(INVALID, "Invalid path")
    return path


def parse_token(token):
    """The offset in a page token, with MLflow's checks and messages."""
    if not token:
        return 0
    try:
        decoded = base64.b64decode(token)
    except (TypeError, binascii.Error):
        raise ApiError(INVALID, "Invalid page token, could not base64-decode")
    try:
        parsed = json.loads(decoded)
    except ValueError:
        raise ApiError(INVALID, f"Invalid page token, decoded value={decoded}")
    offset = parsed.get("offset") if isinstance(parsed, dict) else None
    if not offset:
        raise ApiError(INVALID, f"Invalid page token, parsed value={parsed}")
    try:
        return int(offset)
    except ValueError:
        raise ApiError(INVALID, f"Invalid page token, not stringable {offset}")


def paginate(key, items, token, n, token_when_full=False):
    """One page as MLflow answers it. By default the token comes only when more items
    remain; with token_when_full (runs/search) whenever the page is full."""
    offset = parse_token(token)
    if token_when_full:
        page = items[offset:offset + max(n, 0)]
        more = len(page) == n
    else:
        page = items[offset:offset + max(n + 1, 0)]
        more, page = len(page) == n + 1, page[:max(n, 0)]
    out = {key: page} if page else {}
    if more:
        out["next_page_token"] = base64.b64encode(json.dumps({"offset": offset + n}).encode()).decode()
    return out


CLAUSE = re.compile(r"""^\s*([\w.`]+)\s*(=|!=|LIKE|ILIKE)\s*(?:'([^']*)'|"([^"]*)")\s*$""", re.I)


def parse_filter(text, keys):
    """[(field, op, value)] of `key op 'value' [AND ...]`; `keys` maps accepted keys to
    fields, and "tags" in it accepts tags.<name>."""
    clauses = []
    for part in re.split(r"\s+AND\s+", text.strip(), flags=re.I) if text else []:
        m = CLAUSE.match(part)
        key = m and m.group(1).strip("`")
        if not m or (key not in keys and not (key.startswith("tags.") and "tags" in keys)):
            raise ApiError(INVALID, f"Invalid clause(s) in filter string: {text}")
        clauses.append((keys.get(key, key), m.group(2).upper(), m.group(3) if m.group(3) is not None else m.group(4)))
    return clauses


def matches(clauses, get):
    for key, op, value in clauses:
        have = get(key)
        if op in ("LIKE", "ILIKE"):
            pattern = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in value)
            ok = have is not None and re.fullmatch(pattern, have, re.I if op == "ILIKE" else 0)
        else:
            ok = (have == value) == (op == "=")
        if not ok:
            return False
    return True


class Args:
    """Request parameters with MLflow's required/type checks and messages."""

    def __init__(self, data):
        self.data = data if isinstance(data, dict) else {}

    @staticmethod
    def bad(name, value):
        return ApiError(INVALID, f"Invalid value {value} for parameter '{name}' supplied. Hint: Value was of"
                        f" type '{type(value).__name__}'. See the API docs for more information about"
                        " request parameters.")

    def _get(self, name, required):
        value = self.data.get(name)
        if required and (value is None or value == ""):
            raise ApiError(INVALID, f"Missing value for required parameter '{name}'. See the API docs"
                           " for more information about request parameters.")
        return value

    def str(self, name, required=False):
        value = self._get(name, required)
        if value is not None and not isinstance(value, str):
            raise self.bad(name, value)
        return value or ""

    def int(self, name, default=None, maximum=None):
        value = self._get(name, False)
        if value is None:
            return default
        try:
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise ValueError
            number = int(value)
        except ValueError:
            raise self.bad(name, value)
        if maximum is not None and number > maximum:
            raise self.bad(name, value)
        return number

    def run_id(self):
        return self.str("run_id") or self.str("run_uuid") or self.str("run_id", True)

    def list(self, name):
        value = self.data.get(name) or []
        return value if isinstance(value, list) else [value]

    def tags(self):
        return [{"key": t.get("key"), "value": t.get("value")} for t in self.list("tags") if isinstance(t, dict)]


def validate_source(source, run_id, run_of):
    """MLflow's checks on a model version source: a local path must lie inside the
    artifact folder of the given run; any other URI needs a plain absolute path."""
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme == "" or parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        if run_id:
            local = os.path.realpath(urllib.parse.unquote(parsed.path))
            root = urllib.parse.urlparse(run_of(run_id)["artifact_uri"])
            base = os.path.realpath(urllib.parse.unquote(root.path))
            if root.scheme in ("", "file") and (local == base or local.startswith(base + "/")):
                return
            source = local
        raise ApiError(INVALID, f"Invalid model version source: '{source}'. To use a local path as a model"
                       " version source, the run_id request parameter has to be specified and the local"
                       " path has to be contained within the artifact directory of the run specified by"
                       " the run_id.")
    plain = source
    while (unquoted := urllib.parse.unquote_plus(plain)) != plain:
        plain = unquoted
    path = re.sub(r"/+", "/", urllib.parse.urlparse(plain).path.rstrip("/"))
    if "\x00" in path or not path.startswith("/") or posixpath.normpath(path) != path:
        raise ApiError(INVALID, f"Invalid model version source: '{source}'. If supplying a source as an"
                       " http, https, local file path, ftp, objectstore, or mlflow-artifacts uri, an"
                       " absolute path must be provided without relative path references present."
                       " Please provide an absolute path.")


def list_local(base, rel):
    """Sorted (path from base, is_dir, size) of one folder level, as MLflow's local
    artifact repository lists it; [] when rel is not a folder."""
    folder = os.path.join(base, os.path.normpath(rel)) if rel else base
    if not os.path.isdir(folder):
        return []
    out = []
    for name in os.listdir(folder):
        full = os.path.join(folder, name)
        is_dir = os.path.isdir(full)
        out.append((os.path.relpath(full, base), is_dir, None if is_dir else os.path.getsize(full)))
    return sorted(out)


def file_info(path, is_dir, size):
    return dict({"path": path, "is_dir": is_dir}, **({"file_size": size} if size else {}))


class Mlflow:
    """The server's state and its endpoints. Each endpoint takes (Args, route tail) and
    returns the JSON object of a 200 answer, or raises ApiError / Reply."""

    def __init__(self, destination, artifact_root, page_max):
        self.dest, self.page_max, self.lock = destination, page_max, threading.RLock()
        self.root = "mlflow-artifacts:" if destination else artifact_root.rstrip("/")
        self.experiments, self.runs, self.models = {}, {}, {}
        self.new_experiment("Default", "", [])

    def cap(self, n):
        return min(n, self.page_max) if self.page_max else n

    # -- tracking ------------------------------------------------------------------

    def new_experiment(self, name, location, tags):
        if any(e["name"] == name for e in self.experiments.values()):
            raise ApiError(EXISTS, f"Experiment(name={name}) already exists.")
        eid, t = str(len(self.experiments)), now_ms()
        self.experiments[eid] = {"experiment_id": eid, "name": name,
                                 "artifact_location": location or f"{self.root}/{eid}",
                                 "lifecycle_stage": "active", "last_update_time": t, "creation_time": t}
        if tags:
            self.experiments[eid]["tags"] = tags
        return eid

    def experiment(self, eid):
        if eid not in self.experiments:
            raise ApiError(MISSING, f"No Experiment with id={eid} exists")
        return self.experiments[eid]

    def run(self, run_id):
        if run_id not in self.runs:
            raise ApiError(MISSING, f"Run with id={run_id} not found")
        return self.runs[run_id]

    @staticmethod
    def run_info(run):
        return {k: v for k, v in run.items() if k != "tags" and v is not None}

    def run_json(self, run, inputs=True):
        out = {"info": self.run_info(run), "data": {"tags": run["tags"]} if run["tags"] else {}}
        return dict(out, inputs={}) if inputs else out

    def experiments_search(self, a, _):
        n, token, view = a.int("max_results", 0), a.str("page_token"), str(a.data.get("view_type", "1"))
        clauses = parse_filter(a.str("filter"), {k: "name" for k in ("name", "attribute.name", "attributes.name")})
        if a.list("order_by"):
            raise ApiError(INVALID, NO_ORDER_BY)
        if n < 1:
            raise ApiError(INVALID, f"Invalid value for max_results. It must be a positive integer, but got {n}")
        if n > 50000:
            raise ApiError(INVALID, f"Invalid value for max_results. It must be at most 50000, but got {n}")
        items = [e for e in self.experiments.values()
                 if view.upper() in ("1", "3", "ACTIVE_ONLY", "ALL") and matches(clauses, e.get)]
        items.sort(key=lambda e: (-e["creation_time"], int(e["experiment_id"])))
        return paginate("experiments", items, token, self.cap(n))

    def experiments_get(self, a, _):
        return {"experiment": self.experiment(str(a._get("experiment_id", True)))}

    def experiments_get_by_name(self, a, _):
        name = a.str("experiment_name", True)
        for e in self.experiments.values():
            if e["name"] == name:
                return {"experiment": e}
        raise ApiError(MISSING, f"Could not find experiment with name '{name}'")

    def experiments_create(self, a, _):
        name, location = a.str("name", True), a.str("artifact_location")
        if location.startswith("runs:"):
            raise ApiError(INVALID, f"Artifact location cannot be a runs:/ URI. Given: '{location}'")
        return {"experiment_id": self.new_experiment(name, location, a.tags())}

    def runs_create(self, a, _):
        eid = str(a.data.get("experiment_id") or "")
        name, user, start, tags = a.str("run_name"), a.str("user_id"), a.int("start_time", 0), a.tags()
        if not eid:
            raise ApiError("BAD_REQUEST", "(sqlite3.IntegrityError) FOREIGN KEY constraint failed")
        location = self.experiment(eid)["artifact_location"]
        tagged = next((t["value"] for t in tags if t["key"] == "mlflow.runName"), None)
        if name and tagged and name != tagged:
            raise ApiError(INVALID, "Both 'run_name' argument and 'mlflow.runName' tag are specified, but"
                           f" with different values (run_name='{name}', mlflow.runName='{tagged}').")
        name = name or tagged or "%s-%s-%d" % (random.choice(WORDS[0]), random.choice(WORDS[1]), random.randrange(1000))
        if not tagged:
            tags.append({"key": "mlflow.runName", "value": name})
        rid = uuid.uuid4().hex
        self.runs[rid] = {"run_uuid": rid, "experiment_id": eid, "run_name": name, "user_id": user,
                          "status": "RUNNING", "start_time": start, "end_time": None,
                          "artifact_uri": f"{location.rstrip('/')}/{rid}/artifacts",
                          "lifecycle_stage": "active", "run_id": rid, "tags": tags}
        return {"run": self.run_json(self.runs[rid], inputs=False)}

    def runs_update(self, a, _):
        run = self.run(a.run_id())
        status, end, name = a.str("status"), a.int("end_time"), a.str("run_name")
        if status in ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"):
            run["status"] = status
        if end is not None:
            run["end_time"] = end
        if name:
            run["run_name"] = name
            run["tags"] = [t for t in run["tags"] if t["key"] != "mlflow.runName"]
            run["tags"].append({"key": "mlflow.runName", "value": name})
        return {"run_info": self.run_info(run)}

    def runs_get(self, a, _):
        return {"run": self.run_json(self.run(a.run_id()))}

    def runs_search(self, a, _):
        ids = [str(i) for i in a.list("experiment_ids")]
        n, token = a.int("max_results", 1000, 50000), a.str("page_token")
        keys = {p + f: f for f in ("run_name", "status", "run_id") for p in ("", "attribute.", "attributes.")}
        clauses = parse_filter(a.str("filter"), dict(keys, tags="tags"))
        if a.list("order_by"):
            raise ApiError(INVALID, NO_ORDER_BY)

        def field(run, key):
            if key.startswith("tags."):
                return next((t["value"] for t in run["tags"] if t["key"] == key[5:]), None)
            return run[key]
        items = [r for r in self.runs.values() if r["experiment_id"] in ids and matches(clauses, lambda k, r=r: field(r, k))]
        items.sort(key=lambda r: (-r["start_time"], r["run_uuid"]))
        out = paginate("runs", items, token, self.cap(n), token_when_full=True)
        return dict(out, runs=[self.run_json(r) for r in out["runs"]]) if "runs" in out else out

    # -- artifacts -----------------------------------------------------------------

    def local_root(self, artifact_uri):
        """The folder holding a run's artifacts, or an HTML 500 (no such client here)."""
        root = urllib.parse.urlparse(artifact_uri)
        if root.scheme == "mlflow-artifacts" and self.dest:
            return os.path.join(self.dest, root.path.lstrip("/"))
        if root.scheme in ("", "file"):
            return urllib.parse.unquote(root.path)
        raise html_error(500)

    def artifacts_list(self, a, _):
        path = safe_path(a.str("path")) if a.data.get("path") is not None else None
        run = self.run(a.run_id())
        files = list_local(self.local_root(run["artifact_uri"]), path)
        if run["artifact_uri"].startswith("mlflow-artifacts:"):  # proxied: named under the asked path
            files = [(posixpath.join(path, posixpath.basename(p)) if path else posixpath.basename(p), d, s)
                     for p, d, s in files]
        return dict({"root_uri": run["artifact_uri"]}, **({"files": [file_info(*f) for f in files]} if files else {}))

    def proxy_list(self, a, _):
        path = safe_path(a.str("path")) if a.data.get("path") is not None else None
        files = [file_info(posixpath.basename(p), d, s) for p, d, s in list_local(self.dest, path)]
        return {"files": files} if files else {}

    def proxy_download(self, _, tail):
        path = safe_path(tail)
        full = os.path.join(self.dest, path)
        if not os.path.exists(full):
            raise ApiError("INTERNAL_ERROR", "The following failures occurred while downloading one or more"
                           f" artifacts from {self.dest}:\n##### File {path} #####\n[Errno 2] No such file"
                           f" or directory: '{full}'")
        if os.path.isdir(full):
            raise html_error(500)
        with open(full, "rb") as f:
            data = f.read()
        raise Reply(200, data, mime_type(path), {
            "Transfer-Encoding": "chunked", "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f"attachment; filename={posixpath.basename(path)}"})

    def proxy_upload(self, a, tail):
        full = os.path.join(self.dest, safe_path(tail))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(a.data["_body"])
        return {}

    def get_artifact(self, a, _):
        """GET /get-artifact: Flask's send_file, which honours a single Range."""
        if "path" not in a.data:
            raise html_error(500)
        path = safe_path(a.str("path"))
        full = os.path.join(self.local_root(self.run(a.str("run_id") or a.str("run_uuid"))["artifact_uri"]), path)
        if not os.path.isfile(full):
            raise html_error(500)
        st = os.stat(full)
        with open(full, "rb") as f:
            data = f.read()
        ctype, size = mime_type(path), len(data)
        hdrs = {"Content-Disposition": f"attachment; filename={posixpath.basename(path)}",
                "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True), "Cache-Control": "no-cache",
                "ETag": '"%s-%d-%d"' % (st.st_mtime, st.st_size, zlib.adler32(full.encode())),
                "X-Content-Type-Options": "nosniff"}
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", a.data["_range"].strip())
        if not m or not (m.group(1) or m.group(2)):
            raise Reply(200, data, ctype, hdrs)
        first = int(m.group(1)) if m.group(1) else max(size - int(m.group(2)), 0)
        last = min(int(m.group(2)), size - 1) if m.group(1) and m.group(2) else size - 1
        if first >= size or first > last:
            raise Reply(416, b"", ctype, dict(hdrs, **{"Content-Range": f"bytes */{size}"}))
        hdrs.update({"Accept-Ranges": "bytes", "Content-Range": f"bytes {first}-{last}/{size}"})
        raise Reply(206, data[first:last + 1], ctype, hdrs)

    # -- model registry ------------------------------------------------------------

    def model(self, name):
        if name not in self.models:
            raise ApiError(MISSING, f"Registered Model with name={name} not found")
        return self.models[name]

    def version(self, name, version):
        try:
            number = int(version)
        except ValueError:
            raise ApiError(INVALID, f"Model version must be an integer, got '{version}'")
        mv = self.models.get(name, {}).get("versions", {}).get(number)
        if mv is None or mv["current_stage"] == DELETED:
            raise ApiError(MISSING, f"Model Version (name={name}, version={version}) not found")
        return mv

    def mv_json(self, mv, aliases=True):
        out = dict({k: v for k, v in mv.items() if v is not None}, version=str(mv["version"]))
        names = sorted(a for a, v in self.models[mv["name"]]["aliases"].items() if v == mv["version"])
        return dict(out, aliases=names) if aliases and names else out

    def rm_json(self, model):
        out = {k: model[k] for k in ("name", "creation_timestamp", "last_updated_timestamp")}
        latest = {}  # newest version per stage, stages in order of first appearance
        for number in sorted(model["versions"]):
            if model["versions"][number]["current_stage"] != DELETED:
                latest[model["versions"][number]["current_stage"]] = model["versions"][number]
        if latest:
            out["latest_versions"] = [self.mv_json(mv, aliases=False) for mv in latest.values()]
        if model["aliases"]:
            out["aliases"] = [{"alias": k, "version": str(v)} for k, v in sorted(model["aliases"].items())]
        return out

    def rm_create(self, a, _):
        name, t = a.str("name", True), now_ms()
        if name in self.models:
            raise ApiError(EXISTS, f"Registered Model (name={name}) already exists.")
        self.models[name] = {"name": name, "creation_timestamp": t, "last_updated_timestamp": t,
                             "versions": {}, "aliases": {}}
        return {"registered_model": self.rm_json(self.models[name])}

    def rm_get(self, a, _):
        return {"registered_model": self.rm_json(self.model(a.str("name", True)))}

    def rm_delete(self, a, _):
        del self.models[self.model(a.str("name", True))["name"]]
        return {}

    def rm_search(self, a, _):
        n, token = a.int("max_results", 100, 1000), a.str("page_token")
        clauses = parse_filter(a.str("filter"), {"name": "name"})
        if a.list("order_by"):
            raise ApiError(INVALID, NO_ORDER_BY)
        items = sorted((m for m in self.models.values() if matches(clauses, m.get)), key=lambda m: m["name"])
        out = paginate("registered_models", items, token, self.cap(n))
        return dict(out, registered_models=[self.rm_json(m) for m in out["registered_models"]]) \
            if "registered_models" in out else out

    def mv_create(self, a, _):
        name, source, run_id = a.str("name", True), a.str("source", True), a.str("run_id")
        validate_source(source, run_id, self.run)
        model, t = self.model(name), now_ms()
        number = max(model["versions"], default=0) + 1
        model["last_updated_timestamp"] = t
        model["versions"][number] = {
            "name": name, "version": number, "creation_timestamp": t, "last_updated_timestamp": t,
            "current_stage": "None", "description": a.str("description"), "source": source,
            "run_id": run_id, "status": "READY", "run_link": a.str("run_link")}
        return {"model_version": self.mv_json(model["versions"][number])}

    def mv_get(self, a, _):
        return {"model_version": self.mv_json(self.version(a.str("name", True), a.str("version", True)))}

    def mv_uri(self, a, _):
        return {"artifact_uri": self.version(a.str("name", True), a.str("version", True))["source"]}

    def mv_delete(self, a, _):
        mv, t = self.version(a.str("name", True), a.str("version", True)), now_ms()
        self.models[mv["name"]]["last_updated_timestamp"] = t
        # Its aliases stay: MLflow 2.12.2 compares their int version with the request's string.
        mv.update(current_stage=DELETED, last_updated_timestamp=t, description=None,
                  source="REDACTED-SOURCE-PATH", run_id="REDACTED-RUN-ID", run_link="REDACTED-RUN-LINK")
        return {}

    def mv_transition(self, a, _):
        name, version, stage = a.str("name", True), a.str("version", True), a.str("stage", True)
        archive = a.data.get("archive_existing_versions") in (True, "true", "True")
        canonical = next((s for s in STAGES if s.lower() == stage.lower()), None)
        if canonical is None:
            raise ApiError(INVALID, f"Invalid Model Version stage: {stage}. Value must be one of None,"
                           " Staging, Production, Archived.")
        mv, t = self.version(name, version), now_ms()
        for other in self.models[name]["versions"].values() if archive else []:
            if other is not mv and other["current_stage"] == canonical:
                other.update(current_stage="Archived", last_updated_timestamp=t)
        mv.update(current_stage=canonical, last_updated_timestamp=t)
        self.models[name]["last_updated_timestamp"] = t
        return {"model_version": self.mv_json(mv)}

    def mv_search(self, a, _):
        n, token = a.int("max_results", 200000, 200000), a.str("page_token")
        clauses = parse_filter(a.str("filter"), {"name": "name", "run_id": "run_id", "source_path": "source"})
        if a.list("order_by"):
            raise ApiError(INVALID, NO_ORDER_BY)
        if n < 1:
            raise ApiError(INVALID, f"Invalid value for max_results. It must be a positive integer, but got {n}")
        items = [mv for m in self.models.values() for mv in m["versions"].values()
                 if mv["current_stage"] != DELETED and matches(clauses, mv.get)]
        items.sort(key=lambda mv: (-mv["last_updated_timestamp"], mv["name"], -mv["version"]))
        out = paginate("model_versions", items, token, self.cap(n))
        return dict(out, model_versions=[self.mv_json(mv, aliases=False) for mv in out["model_versions"]]) \
            if "model_versions" in out else out

    @staticmethod
    def alias_name(a):
        alias = a.str("alias", True)
        if not re.fullmatch(r"[\w\-]*", alias):
            raise ApiError(INVALID, f"Invalid alias name: '{alias}'. Names may only contain alphanumerics,"
                           " underscores (_), and dashes (-).")
        if len(alias) > 255:
            raise ApiError(INVALID, f"Registered model alias name '{alias}' had length {len(alias)}, which"
                           " exceeded length limit of 255")
        if alias.lower() == "latest":
            raise ApiError(INVALID, "'latest' alias name (case insensitive) is reserved.")
        if re.fullmatch(r"[vV]\d+", alias):
            raise ApiError(INVALID, f"Version alias name '{alias}' is reserved.")
        return alias

    def alias_set(self, a, _):
        name, alias, version = a.str("name", True), self.alias_name(a), a.str("version", True)
        number = self.version(name, version)["version"]
        self.models[name]["aliases"][alias] = number
        return {}

    def alias_delete(self, a, _):
        name, alias = a.str("name", True), self.alias_name(a)
        self.model(name)["aliases"].pop(alias, None)
        return {}

    def alias_get(self, a, _):
        name, alias = a.str("name", True), self.alias_name(a)
        number = self.models.get(name, {}).get("aliases", {}).get(alias)
        if number is None:
            raise ApiError(INVALID, f"Registered model alias {alias} not found.")
        return {"model_version": self.mv_json(self.version(name, str(number)))}


API, PROXY = "/api/2.0/mlflow/", "/api/2.0/mlflow-artifacts/artifacts"
ROUTES = {API + path: methods for path, methods in {
    "experiments/search": {"GET": "experiments_search", "POST": "experiments_search"},
    "experiments/get": {"GET": "experiments_get"},
    "experiments/get-by-name": {"GET": "experiments_get_by_name"},
    "experiments/create": {"POST": "experiments_create"},
    "runs/create": {"POST": "runs_create"},
    "runs/update": {"POST": "runs_update"},
    "runs/get": {"GET": "runs_get"},
    "runs/search": {"POST": "runs_search"},
    "artifacts/list": {"GET": "artifacts_list"},
    "registered-models/create": {"POST": "rm_create"},
    "registered-models/get": {"GET": "rm_get"},
    "registered-models/delete": {"DELETE": "rm_delete"},
    "registered-models/search": {"GET": "rm_search"},
    "registered-models/alias": {"GET": "alias_get", "POST": "alias_set", "DELETE": "alias_delete"},
    "model-versions/create": {"POST": "mv_create"},
    "model-versions/get": {"GET": "mv_get"},
    "model-versions/get-download-uri": {"GET": "mv_uri"},
    "model-versions/delete": {"DELETE": "mv_delete"},
    "model-versions/transition-stage": {"POST": "mv_transition"},
    "model-versions/search": {"GET": "mv_search"}}.items()}
ROUTES.update({"/get-artifact": {"GET": "get_artifact"}, PROXY: {"GET": "proxy_list"}})


def make_handler(app, auth):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def read_body(self):
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))
            data = b""
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                data += self.rfile.read(size + 2)[:size]
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return data

        def send(self, status, body, ctype, headers):
            chunked = headers.get("Transfer-Encoding") == "chunked"
            self.send_response(status)
            self.send_header("Connection", "close")
            self.send_header("Content-Type", ctype)
            if not chunked:
                self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.close_connection = True
            if self.command != "HEAD":
                pieces = [body[i:i + 65536] for i in range(0, len(body), 65536)] + [b""]
                self.wfile.write(b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) if chunked else body)

        def route(self, path, method):
            """(endpoint name, route tail), or Flask's 404/405 or the 503 of a server
            that does not serve artifacts."""
            if path == "/health":
                if method in ("GET", "HEAD"):
                    raise Reply(200, b"OK")
                raise html_error(405, {"Allow": "GET, HEAD, OPTIONS"})
            tail, rule = "", path
            if path.startswith(PROXY + "/") and len(path) > len(PROXY) + 1:
                tail, rule = urllib.parse.unquote(path[len(PROXY) + 1:]), PROXY + "/<path:artifact_path>"
                methods = {"GET": "proxy_download", "PUT": "proxy_upload"}
            elif path not in ROUTES:
                raise html_error(404)
            else:
                methods = ROUTES[path]
            name = methods.get("GET" if method == "HEAD" else method)
            if not name:
                extra = {"HEAD", "OPTIONS"} if "GET" in methods else {"OPTIONS"}
                raise html_error(405, {"Allow": ", ".join(sorted(set(methods) | extra))})
            if path.startswith(PROXY) and not app.dest:
                raise Reply(503, (f"Endpoint: {rule} disabled due to the mlflow server running with"
                                  " `--no-serve-artifacts`. To enable artifacts server functionality, run"
                                  " `mlflow server` with `--serve-artifacts`").encode())
            return name, tail

        def args(self, method, query, body):
            if method in ("GET", "HEAD"):
                parsed = urllib.parse.parse_qs(query, keep_blank_values=True)
                return Args({k.replace("[]", ""): v[0] if len(v) == 1 and not k.endswith("[]") else v
                             for k, v in parsed.items()} | {"_range": self.headers.get("Range", "")})
            if method == "PUT":
                return Args({"_body": body})
            ctype = self.headers.get("Content-Type")
            if method == "POST" and ctype is None:
                raise ApiError(INVALID, "Bad Request. Content-Type header is missing.")
            if method == "POST" and ctype.split(";")[0].strip() != "application/json":
                raise ApiError(INVALID, "Bad Request. Content-Type must be one of ['application/json'].")
            try:
                data = json.loads(body) if body else {}
                return Args(json.loads(data) if isinstance(data, str) else data)
            except ValueError:
                return Args({})

        def handle_any(self):
            parts, body = urllib.parse.urlsplit(self.path), self.read_body()
            try:
                if auth and not parts.path.startswith(("/health", "/static", "/favicon.ico")) \
                        and self.headers.get("Authorization") != auth:
                    raise Reply(401, AUTH_TEXT.encode(), headers={"WWW-Authenticate": 'Basic realm="mlflow"'})
                name, tail = self.route(parts.path, self.command)
                args = self.args(self.command, parts.query, body)
                with app.lock:
                    result = getattr(app, name)(args, tail)
                self.send(200, json.dumps(result, indent=2).encode(), "application/json", {})
            except ApiError as e:
                error = json.dumps({"error_code": e.code, "message": e.message}).encode()
                self.send(STATUS.get(e.code, 500), error, "application/json", {})
            except Reply as r:
                self.send(r.status, r.body, r.ctype, r.headers)
            except Exception:  # an unexpected failure: Flask's 500 page
                traceback.print_exc()
                self.send(500, html_error(500).body, "text/html; charset=utf-8", {})

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = handle_any

    return Handler


class MlflowTestServer:
    def __init__(self, host="127.0.0.1", port=0, artifacts_destination=None,
                 default_artifact_root=None, page_max=None, auth=None):
        if not artifacts_destination and not default_artifact_root:
            artifacts_destination = tempfile.mkdtemp(prefix="mlflow-artifacts.")
        if artifacts_destination:
            artifacts_destination = os.path.abspath(artifacts_destination)
            os.makedirs(artifacts_destination, exist_ok=True)
        self.app = Mlflow(artifacts_destination, default_artifact_root, page_max)
        header = None
        if auth:
            kind, _, rest = auth.partition(":")
            header = {"basic": "Basic " + base64.b64encode(rest.encode()).decode(), "bearer": "Bearer " + rest}.get(kind)
            if header is None:
                raise ValueError(f"auth: expected basic:USER:PASS or bearer:TOKEN, got {auth!r}")
        self.httpd = http.server.ThreadingHTTPServer((host, port), make_handler(self.app, header))
        self.httpd.daemon_threads = True
        self.url = "http://%s:%d" % (host, self.httpd.server_address[1])
        self.thread = None

    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self.url

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.thread:
            self.thread.join()


def main():
    p = argparse.ArgumentParser(description="In-memory MLflow 2.12.2 tracking server for the tests")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--artifacts-destination", metavar="DIR", help="serve proxied artifacts from DIR")
    where.add_argument("--default-artifact-root", metavar="URI", help="hand out direct artifact URIs under URI")
    p.add_argument("--page-max", type=int, metavar="N", help="cap every search page at N items")
    p.add_argument("--auth", metavar="SPEC", help="basic:USER:PASS or bearer:TOKEN")
    o = p.parse_args()
    server = MlflowTestServer(o.host, o.port, o.artifacts_destination, o.default_artifact_root, o.page_max, o.auth)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(server.start(), flush=True)
    while not stop.wait(1):
        pass
    server.stop()


if __name__ == "__main__":
    sys.exit(main())
