"""A small Azure Blob client for the tests: it lays out test data in Azurite.

It signs with Shared Key from Python's standard library, independently of the C
code under test, so a signing bug in artifactfs cannot hide behind the same bug here.
"""
import base64
import hashlib
import hmac
import http.client
import urllib.parse
from email.utils import formatdate

DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
           "K1SZFPTOtr/KBHBeksoGMGw==")


class AzureClient:
    def __init__(self, host, port, account=DEV_ACCOUNT, key=DEV_KEY, ssl_context=None):
        self.host, self.port, self.account, self.key = host, port, account, key
        self.ssl_context = ssl_context  # set: HTTPS, trusting what it trusts

    def _request(self, method, path, query=None, body=b"", headers=None):
        headers = dict(headers or {})
        headers["x-ms-date"] = formatdate(usegmt=True)
        headers["x-ms-version"] = "2021-08-06"
        qs = urllib.parse.urlencode(sorted((query or {}).items()), quote_via=urllib.parse.quote,
                                    safe="")
        epath = "/" + self.account + urllib.parse.quote(path)
        clen = str(len(body)) if body else ""
        canon_headers = "".join(f"{k.lower()}:{v}\n" for k, v in
                                sorted(headers.items(), key=lambda kv: kv[0].lower())
                                if k.lower().startswith("x-ms-"))
        canon_res = f"/{self.account}{epath}" + "".join(
            f"\n{k.lower()}:{v}" for k, v in sorted((query or {}).items()))
        sts = "\n".join([method, "", "", clen, "", headers.get("Content-Type", ""), "", "",
                         headers.get("If-Match", ""), headers.get("If-None-Match", ""), "",
                         ""]) + "\n" + canon_headers + canon_res
        sig = base64.b64encode(hmac.new(base64.b64decode(self.key), sts.encode(),
                                        hashlib.sha256).digest()).decode()
        headers["Authorization"] = f"SharedKey {self.account}:{sig}"
        if body:
            headers["Content-Length"] = clen
        conn = (http.client.HTTPSConnection(self.host, self.port, timeout=30,
                                            context=self.ssl_context)
                if self.ssl_context else http.client.HTTPConnection(self.host, self.port,
                                                                    timeout=30))
        try:
            conn.request(method, epath + (f"?{qs}" if qs else ""), body=body or None,
                         headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, dict(resp.getheaders()), data
        finally:
            conn.close()

    def container_sas(self, container, permissions="r"):
        """A service SAS of the container (no '?'), signed as the 2020-12-06
        string-to-sign says."""
        sv, se = "2020-12-06", "2099-01-01T00:00:00Z"
        canon = f"/blob/{self.account}/{container}"
        sts = "\n".join([permissions, "", se, canon, "", "", "", sv, "c", "", "", "", "", "",
                         "", ""])
        sig = base64.b64encode(hmac.new(base64.b64decode(self.key), sts.encode(),
                                        hashlib.sha256).digest()).decode()
        return urllib.parse.urlencode({"sv": sv, "sp": permissions, "se": se, "sr": "c",
                                       "sig": sig})

    def create_container(self, container):
        st, _, body = self._request("PUT", f"/{container}", {"restype": "container"})
        assert st in (201, 409), (st, body)

    def put(self, container, key, data):
        st, h, body = self._request("PUT", f"/{container}/{key}", body=data,
                                    headers={"x-ms-blob-type": "BlockBlob"})
        assert st == 201, (st, body)
        return h.get("etag")

    def get(self, container, key):
        st, _, body = self._request("GET", f"/{container}/{key}")
        assert st == 200, (st, body[:200])
        return body

    def etag(self, container, key):
        st, h, _ = self._request("HEAD", f"/{container}/{key}")
        assert st == 200, st
        return h.get("etag")

    def delete(self, container, key):
        st, _, body = self._request("DELETE", f"/{container}/{key}")
        assert st in (202, 404), (st, body)
