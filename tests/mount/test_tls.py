"""A store behind a private CA (Azurite over TLS with a certificate a test CA signs):
refused with the system's trust store, trusted through each of CURL_CA_BUNDLE,
SSL_CERT_FILE and --ca-file, for the mount and for register and alias."""
import os
import ssl
import subprocess

import conftest
from conftest import running_azurite, run_cli
from test_s3 import make_ca_and_cert

SYSTEM = "/etc/ssl/certs/ca-certificates.crt"


def test_a_private_ca_is_trusted_only_when_named(tmp_path, make_mount):
    from azure_client import AzureClient
    make_ca_and_cert(tmp_path)
    ca = str(tmp_path / "ca.pem")
    data = tmp_path / "azurite-tls"
    data.mkdir()
    with running_azurite(tmp_path, "--location", str(data), "--cert",
                         str(tmp_path / "srv.pem"), "--key", str(tmp_path / "srv.key")) as port:
        az = AzureClient("127.0.0.1", port, ssl_context=ssl.create_default_context(cafile=ca))
        az.create_container("tls")
        az.put("tls", "runs/e/r/m.bin", b"over TLS")
        store = conftest.Store()
        store.kind = "azure"
        store.url = f"https://127.0.0.1:{port}/devstoreaccount1/tls"
        base = {"AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"}

        def mount_fails(env, *args):
            (tmp_path / "bad").mkdir(exist_ok=True)
            p = run_cli("mount", store.url, tmp_path / "bad", "--cache-dir",
                        tmp_path / "badcache", "--timeout", "5", *args, check=False,
                        env={**base, **env})
            return p
        # the system's trust store, named by the usual variables: refused, and said
        p = mount_fails({"CURL_CA_BUNDLE": SYSTEM, "SSL_CERT_FILE": SYSTEM})
        assert p.returncode == 2, p.stderr
        assert p.stderr.count("\n") == 1 and "trusted CAs: CURL_CA_BUNDLE" in p.stderr, p.stderr
        p = mount_fails({"CURL_CA_BUNDLE": "", "SSL_CERT_FILE": ""})
        assert p.returncode == 2 and "trusted CAs: the system's" in p.stderr, p.stderr
        # trusted through each way of naming the CA
        for i, (env, args) in enumerate((({"CURL_CA_BUNDLE": ca, "SSL_CERT_FILE": ""}, ()),
                                         ({"CURL_CA_BUNDLE": "", "SSL_CERT_FILE": ca}, ()),
                                         ({"CURL_CA_BUNDLE": SYSTEM, "SSL_CERT_FILE": SYSTEM},
                                          ("--ca-file", ca)))):
            store.env = {**base, **env}
            m = make_mount(store, *args, name=f"m{i}", cache_dir=tmp_path / f"c{i}")
            assert (m / "runs/e/r/m.bin").read_bytes() == b"over TLS"
        # register and alias take --ca-file too
        store.env = {**base, "CURL_CA_BUNDLE": SYSTEM, "SSL_CERT_FILE": SYSTEM}
        assert store.register("m", "runs/e/r/", "--ca-file", ca) == 1
        run_cli("alias", store.url, "m", "production", "1", "--ca-file", ca, store=store)
        p = run_cli("alias", store.url, "m", "staging", "1", store=store, check=False)
        assert p.returncode != 0


def test_mlflow_over_tls(tmp_path, make_mount):
    """A tracking server behind a private CA: trusted through
    MLFLOW_TRACKING_SERVER_CERT_PATH, or unchecked (and said) with
    MLFLOW_TRACKING_INSECURE_TLS; refused otherwise."""
    from mlflow_client import MlflowClient
    from mlflow_server import MlflowTestServer
    make_ca_and_cert(tmp_path)
    ca = str(tmp_path / "ca.pem")
    srv = MlflowTestServer(artifacts_destination=str(tmp_path / "art"),
                           tls=(str(tmp_path / "srv.pem"), str(tmp_path / "srv.key")))
    url = srv.start()
    try:
        assert url.startswith("https://")
        c = MlflowClient(url, context=ssl.create_default_context(cafile=ca))
        e = c.create_experiment("tls")
        rid, uri = c.create_run(e, run_name="r")
        c.upload_artifact(uri, "m.bin", b"over TLS")
        c.finish_run(rid)
        store = conftest.Store()
        store.kind = "mlflow"
        store.url = "mlflow+" + url
        none = {"CURL_CA_BUNDLE": SYSTEM, "SSL_CERT_FILE": SYSTEM,
                "MLFLOW_TRACKING_SERVER_CERT_PATH": "", "MLFLOW_TRACKING_INSECURE_TLS": ""}
        (tmp_path / "bad").mkdir()
        p = run_cli("mount", store.url, tmp_path / "bad", "--cache-dir", tmp_path / "badcache",
                    "--timeout", "5", check=False, env=none)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
        assert "trusted CAs: CURL_CA_BUNDLE" in p.stderr, p.stderr
        store.env = {**none, "MLFLOW_TRACKING_SERVER_CERT_PATH": ca}
        m = make_mount(store, name="m1", cache_dir=tmp_path / "c1")
        assert (m / f"runs/tls/{rid}/m.bin").read_bytes() == b"over TLS"
        store.env = {**none, "MLFLOW_TRACKING_INSECURE_TLS": "true"}
        m = make_mount(store, name="m2", cache_dir=tmp_path / "c2")
        m.expect_log(r"TLS certificates of .* are not verified \(MLFLOW_TRACKING_INSECURE_TLS\)")
        assert (m / "runs/tls/r/m.bin").read_bytes() == b"over TLS"
        assert "MLFLOW_TRACKING_INSECURE_TLS" in m.log()
    finally:
        srv.stop()
