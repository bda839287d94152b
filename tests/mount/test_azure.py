"""Azure Blob specifics, against Azurite: paging, names that need escaping,
credentials and their errors, and that no secret leaks."""
import os
import subprocess
import time

import pytest

from conftest import AzureStore, BIN, run_cli
from azure_client import DEV_KEY

MiB = 1 << 20


@pytest.fixture
def az(azurite):
    import uuid
    return AzureStore(azurite, f"t{uuid.uuid4().hex[:16]}")


def test_listing_pages_through_next_marker(az, make_mount):
    names = [f"f{i:03d}.txt" for i in range(23)]
    for n in names:
        az.put(f"runs/e/r/{n}", n)
    for d in ["a", "b", "c"]:
        az.put(f"runs/e/r/{d}/x", d)
    paging = {"ARTIFACTFS_LIST_PAGE_SIZE": "5"}
    m = make_mount(az, env=paging)
    assert sorted(os.listdir(m / "runs/e/r")) == sorted(names + ["a", "b", "c"])
    assert (m / "runs/e/r/f017.txt").read_text() == "f017.txt"
    out = run_cli("register", az.url, "paged", "runs/e/r/", store=az, env=paging).stdout
    assert out.strip() == "1"
    assert sorted(os.listdir(m / "models/paged/1")) == sorted(names + ["a", "b", "c"])


def test_names_that_need_escaping(az, make_mount):
    keys = {"runs/e/r/with space.txt": b"1", "runs/e/r/plus+sign.txt": b"2",
            "runs/e/r/per%cent.txt": b"3", "runs/e/r/caf\u00e9.txt": b"4",
            "runs/e/r/eq=amp&.txt": b"5", "runs/e/r/sub dir/x.bin": b"6"}
    for k, v in keys.items():
        az.put(k, v)
    m = make_mount(az)
    assert sorted(os.listdir(m / "runs/e/r")) == sorted(
        ["with space.txt", "plus+sign.txt", "per%cent.txt", "caf\u00e9.txt", "eq=amp&.txt",
         "sub dir"])
    for k, v in keys.items():
        assert (m / k).read_bytes() == v, k
    assert az.register("esc", "runs/e/r/") == 1
    assert (m / "models/esc/1/sub dir/x.bin").read_bytes() == b"6"


def test_blob_and_folder_of_one_name_shows_the_folder(az, make_mount):
    az.put("runs/e/r/ckpt", b"a blob")
    az.put("runs/e/r/ckpt/part-0", b"in the folder")
    m = make_mount(az)
    m.expect_log(r"has the name of a folder")
    assert os.listdir(m / "runs/e/r") == ["ckpt"]
    assert (m / "runs/e/r/ckpt/part-0").read_bytes() == b"in the folder"


def test_account_key_credentials_and_precedence(az, make_mount):
    good_cs = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
               f"AccountKey={DEV_KEY};")
    az.put("runs/e/r/a.txt", b"a")
    # the connection string wins over a wrong account key in the other variables
    env = {"AZURE_STORAGE_CONNECTION_STRING": good_cs, "AZURE_STORAGE_ACCOUNT":
           "devstoreaccount1", "AZURE_STORAGE_KEY": "d3Jvbmc="}
    az.env = env
    m = make_mount(az)
    assert (m / "runs/e/r/a.txt").read_bytes() == b"a"
    m.stop()
    az.env = {"AZURE_STORAGE_ACCOUNT": "devstoreaccount1", "AZURE_STORAGE_KEY": DEV_KEY}
    m.start()
    assert (m / "runs/e/r/a.txt").read_bytes() == b"a"


def one_line_error(az, env):
    """register with only the given Azure variables set: must fail in one line."""
    p = subprocess.run([str(BIN), "register", az.url, "m", "runs/e/"],
                       capture_output=True, text=True, timeout=60,
                       env={**{k: v for k, v in os.environ.items()
                               if not k.startswith("AZURE_")}, **env})
    assert p.returncode == 2, p
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    return p.stderr


def test_wrong_key_is_refused_naming_the_source_not_the_secret(az):
    secret = "d3JvbmdrZXl3cm9uZ2tleXdyb25na2V5d3Jvbmc="
    err = one_line_error(az, {"AZURE_STORAGE_ACCOUNT": "devstoreaccount1",
                              "AZURE_STORAGE_KEY": secret})
    assert "refused access" in err and "AZURE_STORAGE_KEY" in err
    assert secret not in err
    err = one_line_error(az, {})
    assert "anonymous" in err


def test_unknown_container_and_unreachable_endpoint(az, azurite):
    env = {"AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"}
    p = run_cli("register", f"http://127.0.0.1:{azurite}/devstoreaccount1/nosuchcontainer",
                "m", "runs/e/", check=False, env=env)
    assert p.returncode == 2 and "nosuchcontainer" in p.stderr and "does not exist" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    from conftest import free_port
    dead = f"http://127.0.0.1:{free_port()}/devstoreaccount1/c1c1c1"
    p = run_cli("mount", dead, "/tmp", "--timeout", "5", check=False, env=env)
    assert p.returncode == 2 and "cannot reach" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    # with the default --timeout (60 s) too, a store that is not there is said in seconds
    t0 = time.monotonic()
    p = run_cli("mount", dead, "/tmp", check=False, env=env)
    assert p.returncode == 2 and "cannot reach" in p.stderr
    assert time.monotonic() - t0 < 30
    for bad in ["wasbs://noaccount/x", "https://acct.blob.core.windows.net/Bad_Container",
                "http://127.0.0.1:1/devstoreaccount1/c1c1c1?sig=SECRETSAS"]:
        p = run_cli("mount", bad, "/tmp", check=False, env=env)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert "SECRETSAS" not in p.stderr


def test_no_secret_in_logs_cache_or_argv(az, make_mount):
    az.env = {"AZURE_STORAGE_CONNECTION_STRING":
              f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY}"}
    az.put("runs/e/r/model.bin", os.urandom(3 * MiB))
    assert az.register("m", "runs/e/r/") == 1
    m = make_mount(az, "-d")
    assert len((m / "models/m/1/model.bin").read_bytes()) == 3 * MiB
    os.listdir(m / "runs/e/r")
    with open(f"/proc/{m.proc.pid}/cmdline", "rb") as f:
        assert DEV_KEY.encode() not in f.read()
    m.stop()
    assert DEV_KEY not in m.log() and "Authorization" not in m.log()
    for d, _, names in os.walk(m.cache_dir):
        for n in names:
            data = open(os.path.join(d, n), "rb").read()
            assert DEV_KEY.encode() not in data, n
            assert b"SharedKey" not in data, n
    assert os.stat(m.cache_dir).st_mode & 0o777 == 0o700
