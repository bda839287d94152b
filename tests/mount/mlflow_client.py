"""A small MLflow REST client for the tests: it populates an MLflow tracking server (the
real one or tests/mount/mlflow_server.py) with experiments, runs, artifacts, registered
models, versions and aliases, sending the requests MLflow's own Python client sends:

- GET endpoints take their parameters in the query string (lists as repeated keys);
  every other method sends a JSON body with `Content-Type: application/json` (the server
  reads no query string on POST or DELETE, so `DELETE registered-models/alias` carries
  `{"name", "alias"}` in its body).
- Version numbers go out as strings: the server refuses a JSON number for `version`.
- Artifacts of a run whose `artifact_uri` is `mlflow-artifacts:/<path>` are uploaded
  through the server's proxy, `PUT /api/2.0/mlflow-artifacts/artifacts/<path>/<relpath>`;
  a `file://` artifact URI is written straight to the local folder, as MLflow's client
  does when the server hands out direct artifact roots.

Stdlib only (urllib), so it runs under /usr/bin/python3 with nothing installed."""
import base64
import json
import mimetypes
import os
import time
import urllib.error
import urllib.parse
import urllib.request

API = "/api/2.0/mlflow/"
PROXY = "/api/2.0/mlflow-artifacts/artifacts"


class MlflowError(Exception):
    """A request answered with a status other than 200."""

    def __init__(self, method, path, status, body):
        super().__init__(f"{method} {path}: {status} {body!r}"[:500])
        self.status, self.body = status, body


def auth_header(auth):
    """`Authorization` value for auth given as None, "basic:USER:PASS", "bearer:TOKEN",
    or a (user, password) pair."""
    if not auth:
        return None
    if isinstance(auth, (tuple, list)):
        auth = "basic:%s:%s" % tuple(auth)
    kind, _, rest = auth.partition(":")
    if kind == "basic":
        return "Basic " + base64.b64encode(rest.encode()).decode()
    if kind == "bearer":
        return "Bearer " + rest
    raise ValueError(f"unknown auth {auth!r}")


def mime_type(name):
    """The Content-Type MLflow's client sends when uploading a file of that name."""
    text = {"txt", "log", "err", "cfg", "conf", "cnf", "cf", "ini", "properties", "prop",
            "hocon", "toml", "yaml", "yml", "xml", "json", "js", "py", "py3", "csv", "tsv",
            "md", "rst", "MLmodel", "MLproject"}
    base = name.rsplit("/", 1)[-1]
    ext = os.path.splitext(base)[1].lstrip(".") or base
    if ext in text:
        return "text/plain"
    return mimetypes.guess_type(base)[0] or "application/octet-stream"


class MlflowClient:
    def __init__(self, url, auth=None, timeout=30, context=None):
        self.url = url.rstrip("/")
        self.auth = auth_header(auth)
        self.timeout = timeout
        self.context = context  # an ssl.SSLContext for https://

    # -- raw requests --------------------------------------------------------------

    def request(self, method, path, params=None, body=None, data=None, headers=None):
        """Send one request; return (status, lower-cased headers, body bytes). `path` is
        absolute ("/health") or relative to /api/2.0/mlflow/ ("experiments/search");
        `body` is sent as JSON, `data` as raw bytes."""
        if not path.startswith("/"):
            path = API + path
        url = self.url + urllib.parse.quote(path, safe="/:@!$&'()*+,;=-._~")
        if params:
            url += "?" + urllib.parse.urlencode(
                {k: v for k, v in params.items() if v is not None}, doseq=True)
        hdrs = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        if self.auth:
            hdrs.setdefault("Authorization", self.auth)
        req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as resp:
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        except urllib.error.HTTPError as e:
            with e:
                return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()

    def call(self, method, path, params=None, body=None):
        """(status, decoded JSON, or the text when the answer is not JSON)."""
        status, _, raw = self.request(method, path, params=params, body=body)
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def get(self, route, /, **params):
        """GET route?params; `path` may be one of the params (artifacts/list)."""
        return self.call("GET", route, params=params)

    def post(self, path, body=None):
        return self.call("POST", path, body=body if body is not None else {})

    def delete(self, path, body=None):
        return self.call("DELETE", path, body=body if body is not None else {})

    def _ok(self, method, path, params=None, body=None):
        status, js = self.call(method, path, params=params, body=body)
        if status != 200:
            raise MlflowError(method, path, status, js)
        return js

    # -- tracking ------------------------------------------------------------------

    def create_experiment(self, name, artifact_location=None):
        body = {"name": name}
        if artifact_location:
            body["artifact_location"] = artifact_location
        return self._ok("POST", "experiments/create", body=body)["experiment_id"]

    def create_run(self, experiment_id, run_name=None, start_time=None):
        """Start a run (at start_time, in ms, now by default, as MLflow's client does);
        return (run_id, artifact_uri)."""
        body = {"experiment_id": str(experiment_id),
                "start_time": int(time.time() * 1000 if start_time is None else start_time)}
        if run_name:
            body["run_name"] = run_name
        info = self._ok("POST", "runs/create", body=body)["run"]["info"]
        return info["run_id"], info["artifact_uri"]

    def finish_run(self, run_id, status="FINISHED", end_time=None):
        body = {"run_id": run_id, "run_uuid": run_id, "status": status,
                "end_time": int(time.time() * 1000 if end_time is None else end_time)}
        return self._ok("POST", "runs/update", body=body)["run_info"]

    def get_run(self, run_id):
        return self._ok("GET", "runs/get", params={"run_id": run_id})["run"]

    def upload_artifact(self, artifact_uri_or_run, relpath, data):
        """Store `data` as `relpath` under a run's artifact root, given the root URI or
        the run id."""
        root = artifact_uri_or_run
        if ":" not in root:
            root = self.get_run(root)["info"]["artifact_uri"]
        relpath = relpath.strip("/")
        parsed = urllib.parse.urlparse(root)
        if parsed.scheme == "mlflow-artifacts":
            path = f"{PROXY}/{parsed.path.strip('/')}/{relpath}"
            status, _, raw = self.request("PUT", path, data=bytes(data),
                                          headers={"Content-Type": mime_type(relpath)})
            if status != 200:
                raise MlflowError("PUT", path, status, raw[:300])
        elif parsed.scheme == "file":
            dest = os.path.join(urllib.parse.unquote(parsed.path), relpath)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as f:
                f.write(data)
        else:
            raise ValueError(f"cannot upload to {root!r}")

    def download_artifact(self, path):
        """(status, headers, bytes) of a proxied download, path relative to the
        artifacts destination ("<experiment_id>/<run_id>/artifacts/<relpath>")."""
        return self.request("GET", f"{PROXY}/{path.lstrip('/')}")

    # -- model registry ------------------------------------------------------------

    def create_registered_model(self, name):
        return self._ok("POST", "registered-models/create",
                        body={"name": name})["registered_model"]

    def create_model_version(self, name, source, run_id=None):
        """Register a version; return its number, a string ("1")."""
        body = {"name": name, "source": source}
        if run_id:
            body["run_id"] = run_id
        return self._ok("POST", "model-versions/create", body=body)["model_version"]["version"]

    def transition_stage(self, name, version, stage, archive_existing_versions=False):
        body = {"name": name, "version": str(version), "stage": stage,
                "archive_existing_versions": archive_existing_versions}
        return self._ok("POST", "model-versions/transition-stage", body=body)["model_version"]

    def set_alias(self, name, alias, version):
        self._ok("POST", "registered-models/alias",
                 body={"name": name, "alias": alias, "version": str(version)})

    def delete_alias(self, name, alias):
        self._ok("DELETE", "registered-models/alias", body={"name": name, "alias": alias})

    def delete_model_version(self, name, version):
        self._ok("DELETE", "model-versions/delete", body={"name": name, "version": str(version)})

    def delete_registered_model(self, name):
        self._ok("DELETE", "registered-models/delete", body={"name": name})

    # -- paging --------------------------------------------------------------------

    def search_all(self, path, key, method="GET", **params):
        """Every item of a paged search, following next_page_token to the end."""
        items, token = [], None
        while True:
            args = dict(params, page_token=token) if token else dict(params)
            js = (self._ok("GET", path, params=args) if method == "GET"
                  else self._ok("POST", path, body=args))
            items += js.get(key, [])
            token = js.get("next_page_token")
            if not token:
                return items
