"""A small S3 client for the tests: it lays out test data in s3rver.

s3rver takes unsigned requests, so this client signs nothing: it is independent of
the C code's Signature Version 4 (checked against AWS's published examples in the
unit tests, and by s3rver itself, which verifies every signed request)."""
import http.client
import urllib.parse


class S3Client:
    def __init__(self, host, port):
        self.host, self.port = host, port

    def _request(self, method, path, query=None, body=b"", headers=None):
        qs = urllib.parse.urlencode(sorted((query or {}).items()), quote_via=urllib.parse.quote,
                                    safe="")
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, urllib.parse.quote(path) + (f"?{qs}" if qs else ""),
                         body=body or None, headers=dict(headers or {}))
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def create_bucket(self, bucket):
        st, _, body = self._request("PUT", f"/{bucket}")
        assert st in (200, 409), (st, body)

    def put(self, bucket, key, data):
        st, _, body = self._request("PUT", f"/{bucket}/{key}", body=data,
                                    headers={"Content-Length": str(len(data))})
        assert st == 200, (st, body)

    def marker(self, bucket, prefix):
        """A zero-byte folder marker, as consoles make (s3rver lists a folder more than
        one level above its first key only with one)."""
        st, _, body = self._request("PUT", f"/{bucket}/{prefix}", body=b"",
                                    headers={"Content-Length": "0",
                                             "Content-Type": "application/x-directory"})
        assert st == 200, (st, body)

    def get(self, bucket, key):
        st, _, body = self._request("GET", f"/{bucket}/{key}")
        assert st == 200, (st, body[:200])
        return body

    def head(self, bucket, key):
        return self._request("HEAD", f"/{bucket}/{key}")

    def delete(self, bucket, key):
        st, _, body = self._request("DELETE", f"/{bucket}/{key}")
        assert st in (200, 204), (st, body)
