"""What only S3 has: the AWS credential chain (environment, shared files, IMDSv2 on
loopback, none), s3rver's verification of every signature, folder markers, and a
server that ignores conditional requests (s3rver), against which reads must still
never mix versions."""
import errno
import http.server
import json
import os
import subprocess
import threading
import uuid

import pytest

from conftest import S3Store, run_cli, wait_for

NO_CREDS = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_PROFILE": "",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture
def s3(s3rver):
    st = S3Store(s3rver, f"t{uuid.uuid4().hex[:16]}")
    st.put("runs/e/r/model.pth", b"weights" * 1000)
    return st


def with_env(store, **env):
    store.env = {**store.env, **env}
    return store


def test_signed_with_the_environment_and_refused_with_a_wrong_secret(s3, make_mount):
    m = make_mount(s3)
    assert (m / "runs/e/r/model.pth").read_bytes() == b"weights" * 1000
    # s3rver checks the key id (not the secret: it took a wrong one for its own key)
    (m.path.parent / "bad").mkdir()
    bad = run_cli("mount", s3.url, m.path.parent / "bad", "--cache-dir",
                  m.path.parent / "badcache", check=False, store=s3,
                  env={"AWS_ACCESS_KEY_ID": "NOTAKEY", "AWS_SECRET_ACCESS_KEY": "a-secret"})
    assert bad.returncode == 2
    line = bad.stderr.strip()
    assert "refused access" in line and "AWS_ACCESS_KEY_ID" in line and "NOTAKEY" in line
    assert "a-secret" not in line and len(line.splitlines()) == 1


def test_shared_files_and_profile(s3, make_mount, tmp_path):
    creds = tmp_path / "credentials"
    creds.write_text("[default]\naws_access_key_id = NOPE\naws_secret_access_key = n0pe\n"
                     "[ml]\naws_access_key_id = S3RVER\naws_secret_access_key = S3RVER\n")
    conf = tmp_path / "config"
    conf.write_text("[profile ml]\nregion = us-east-1\n")
    with_env(s3, **{**NO_CREDS, "AWS_SHARED_CREDENTIALS_FILE": str(creds),
                    "AWS_CONFIG_FILE": str(conf), "AWS_PROFILE": "ml"})
    m = make_mount(s3)
    assert (m / "runs/e/r/model.pth").read_bytes() == b"weights" * 1000
    with_env(s3, AWS_PROFILE="default")
    (tmp_path / "bad").mkdir()
    bad = run_cli("mount", s3.url, tmp_path / "bad", "--cache-dir", tmp_path / "badcache",
                  check=False, store=s3)
    assert bad.returncode == 2 and str(creds) in bad.stderr and "NOPE" in bad.stderr
    assert "n0pe" not in bad.stderr


class Imds(http.server.BaseHTTPRequestHandler):
    """The EC2 instance metadata service, IMDSv2 only: no token, no answer."""
    tokens = set()
    puts = 0
    creds = {"AccessKeyId": "S3RVER", "SecretAccessKey": "S3RVER", "Token": "session-token",
             "Expiration": "2099-01-01T00:00:00Z"}

    def log_message(self, *args):
        pass

    def do_PUT(self):
        if self.path != "/latest/api/token" or \
                not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            self.send_error(400)
            return
        tok = uuid.uuid4().hex
        Imds.tokens.add(tok)
        Imds.puts += 1
        self._send(tok)

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") not in Imds.tokens:
            self.send_error(401)
            return
        base = "/latest/meta-data/iam/security-credentials/"
        if self.path == base:
            self._send("ml-role\n")
        elif self.path == base + "ml-role":
            self._send(json.dumps(Imds.creds))
        else:
            self.send_error(404)

    def _send(self, text):
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def imds():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Imds)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_instance_metadata_with_imdsv2_tokens(s3, make_mount, imds):
    Imds.puts = 0
    with_env(s3, **{**NO_CREDS, "AWS_EC2_METADATA_DISABLED": "",
                    "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds})
    m = make_mount(s3)
    assert (m / "runs/e/r/model.pth").read_bytes() == b"weights" * 1000
    assert Imds.puts >= 1  # a token was asked for before the credentials
    assert "instance metadata (role ml-role" in m.log()
    assert "session-token" not in m.log()


def test_instance_metadata_credentials_are_renewed_before_they_expire(s3, make_mount, imds):
    import datetime
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=120)
    Imds.creds = {**Imds.creds, "Expiration": soon.strftime("%Y-%m-%dT%H:%M:%SZ")}
    Imds.puts = 0
    try:
        with_env(s3, **{**NO_CREDS, "AWS_EC2_METADATA_DISABLED": "",
                        "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds})
        m = make_mount(s3, "--ttl", "1")
        assert (m / "runs/e/r/model.pth").read_bytes() == b"weights" * 1000
        first = Imds.puts
        import time
        time.sleep(1.2)
        assert os.listdir(m / "runs/e/r") == ["model.pth"]  # a new request
        assert Imds.puts > first  # within five minutes of expiry: asked again
    finally:
        Imds.creds = {**Imds.creds, "Expiration": "2099-01-01T00:00:00Z"}


def test_no_credentials_means_unsigned_requests(s3, make_mount):
    with_env(s3, **NO_CREDS)
    m = make_mount(s3)
    assert (m / "runs/e/r/model.pth").read_bytes() == b"weights" * 1000
    assert "unsigned" in m.log()


def test_folder_markers_are_folders_not_files(s3, make_mount):
    s3.client.marker(s3.bucket, "runs/e/r/empty/")
    s3.client.marker(s3.bucket, "runs/e/r/sub/")
    s3.put("runs/e/r/sub/x.txt", b"x")
    m = make_mount(s3)
    assert sorted(os.listdir(m / "runs/e/r")) == ["empty", "model.pth", "sub"]
    assert (m / "runs/e/r/empty").is_dir() and os.listdir(m / "runs/e/r/empty") == []
    assert os.listdir(m / "runs/e/r/sub") == ["x.txt"]


def test_reads_never_mix_versions_on_a_server_that_ignores_if_match(s3, make_mount):
    data = os.urandom(24 << 20)
    s3.put("runs/e/r/w.bin", data)
    m = make_mount(s3, "--chunk-size", "1M", "--ttl", "1")
    m.expect_log(r"changed|etag")
    with open(m / "runs/e/r/w.bin", "rb", buffering=0) as f:
        assert f.read(4096) == data[:4096]
        s3.put("runs/e/r/w.bin", os.urandom(24 << 20))  # replaced while open
        f.seek(20 << 20)
        with pytest.raises(OSError) as e:
            f.read(1 << 20)
        assert e.value.errno == errno.EIO
    wait_for(lambda: (m / "runs/e/r/w.bin").read_bytes() != data, 20, "the new version")


def test_register_detects_a_server_that_ignores_conditions(s3):
    p = run_cli("register", s3.url, "m", "runs/e/r/", store=s3)
    assert p.stdout.strip() == "1"
    assert "ignores conditional writes" in p.stderr
    assert run_cli("register", s3.url, "m", "runs/e/r/", store=s3).stdout.strip() == "2"


@pytest.fixture
def s3proxy(s3rver):
    from faultproxy import FaultProxy
    p = FaultProxy(s3rver, style="s3").start()
    yield p
    p.stop()


def through(store, proxy):
    return with_env(store, AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}")


def test_reads_and_writes_survive_s3_shaped_faults(s3, s3proxy, make_mount):
    data = os.urandom(20 << 20)
    s3.put("runs/e/r/big.bin", data)
    through(s3, s3proxy)
    m = make_mount(s3, "--writable", "--chunk-size", "4M")
    rules = [s3proxy.fail_next(1, "status", method="GET", path="/runs/e/r/big.bin", status=503,
                               retry_after=1),
             s3proxy.fail_next(1, "reset", method="GET", path="/runs/e/r/big.bin"),
             s3proxy.fail_next(1, "truncate", method="GET", path="/runs/e/r/big.bin"),
             s3proxy.fail_next(1, "status", method="GET", path="list-type=2", status=500)]
    assert (m / "runs/e/r/big.bin").read_bytes() == data
    os.listdir(m / "runs/e/r")
    up = [s3proxy.fail_next(1, "status", method="PUT", path="partNumber=", status=503),
          s3proxy.fail_next(1, "reset", method="PUT", path="partNumber="),
          s3proxy.fail_next(1, "status", method="POST", path="uploadId=", status=500),
          s3proxy.fail_next(1, "status", method="POST", path="uploads", status=503)]
    new = os.urandom(30 << 20)
    (m / "runs/e/r/new.bin").write_bytes(new)
    assert s3.get("runs/e/r/new.bin") == new
    assert [r.injected for r in rules + up] == [1] * (len(rules) + len(up))


def test_access_denied_is_eacces_naming_the_source(s3, s3proxy, make_mount):
    through(s3, s3proxy)
    m = make_mount(s3)
    m.expect_log(r"refused access \(HTTP 403 AccessDenied\); credentials used: "
                 r"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY \(key S3RVER\)")
    m.expect_log(r"refused access")
    deny = s3proxy.fail_always("status", path="/runs/e/r/model.pth", status=403)
    with pytest.raises(OSError) as e:
        (m / "runs/e/r/model.pth").read_bytes()
    assert e.value.errno == errno.EACCES
    assert deny.injected >= 1
    assert "S3RVER" in m.log() and "AWS_SECRET" not in m.log().replace(
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY", "")


def make_ca_and_cert(d):
    """A private CA and a certificate it signs for 127.0.0.1, with openssl(1)."""
    def ossl(*args):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d / "ca.key", "-out",
         d / "ca.pem", "-days", "2", "-subj", "/CN=artifactfs test CA")
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", d / "srv.key", "-out",
         d / "srv.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ossl("x509", "-req", "-in", d / "srv.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
         "-CAcreateserial", "-out", d / "srv.pem", "-days", "2", "-extfile", d / "ext")


def test_a_private_ca_from_aws_ca_bundle_is_trusted(tmp_path, make_mount):
    from conftest import installed, running_server
    make_ca_and_cert(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    s3rver_bin = installed("install-s3rver")
    with running_server("s3rver-tls", tmp_path, lambda port: [
            s3rver_bin, "-d", str(data), "-a", "127.0.0.1", "-p", str(port), "--silent",
            "--key", str(tmp_path / "srv.key"), "--cert", str(tmp_path / "srv.pem")],
            env={**os.environ, "NODE_OPTIONS": "--openssl-legacy-provider"}) as port:
        st = S3Store.__new__(S3Store)
        st.bucket, st.url, st.markers = "tls-bucket", "s3://tls-bucket/", set()
        st.env = {"AWS_ENDPOINT_URL": f"https://127.0.0.1:{port}",
                  "AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER",
                  "AWS_EC2_METADATA_DISABLED": "true", "AWS_REGION": "us-east-1",
                  "AWS_CA_BUNDLE": str(tmp_path / "ca.pem")}
        import http.client
        import ssl
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
        c.request("PUT", "/tls-bucket")
        assert c.getresponse().status == 200
        for k, body in (("runs/", b""), ("runs/e/", b""), ("runs/e/r/", b""),
                        ("runs/e/r/m.bin", b"over TLS")):
            c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
            c.request("PUT", f"/tls-bucket/{k}", body=body,
                      headers={"Content-Length": str(len(body))})
            assert c.getresponse().status == 200
        m = make_mount(st)
        assert (m / "runs/e/r/m.bin").read_bytes() == b"over TLS"
        # without the bundle the server's certificate is not trusted
        (tmp_path / "bad").mkdir()
        bad = run_cli("mount", st.url, tmp_path / "bad", "--cache-dir", tmp_path / "badcache",
                      "--timeout", "5", check=False, store=st,
                      env={"AWS_CA_BUNDLE": "", "CURL_CA_BUNDLE": "", "SSL_CERT_FILE": ""})
        assert bad.returncode == 2 and "cannot reach the store" in bad.stderr
