/*
 * azure.c: the Azure Blob backend (Azure Storage and Azurite).
 *
 * Credentials come from the environment, first found wins:
 * AZURE_STORAGE_CONNECTION_STRING (UseDevelopmentStorage=true, AccountKey or
 * SharedAccessSignature), AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY,
 * AZURE_STORAGE_SAS_TOKEN; none: anonymous (a public container). The key signs each
 * request (Shared Key); a SAS token is appended to each URL. Neither is ever logged:
 * log lines name the blob, not the URL, and the credential's source, not its value.
 *
 * Reads are pinned with If-Match to the etag the file was opened at: a changed blob
 * answers 412 and the read fails with -ESTALE, never with bytes of another version.
 */
#include "azure.h"
#include "proxy.h"
#include "blob_private.h"
#include "http.h"
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define AZURE_VERSION "2021-08-06"
#define AZURE_PAGE_MAX 5000
#define AZURE_LIST_BODY_MAX (64u << 20)

struct blob_azure {
	struct blob_store base;
	struct azure_url url;
	char *host;		/* scheme://host[:port] */
	char *path_base;	/* "" or "/account" (path-style), then "/container" */
	struct http *http;
	char *key;		/* base64 account key, secret; NULL unless Shared Key */
	char *sas;		/* SAS query, secret; NULL unless SAS */
	char source[128];	/* where the credential came from, for messages */
	unsigned page_size;
	struct blob_proxies *proxies;	/* --proxy, or NULL */
};

static struct blob_azure *az_of(struct blob_store *s)
{
	return (struct blob_azure *)s;
}

/* One request being built: what the signer needs on every attempt. */
struct az_req {
	struct blob_azure *a;
	const char *verb;
	char *path;		/* encoded URI path */
	char *query;		/* encoded query, without the SAS */
	char range[64];		/* x-ms-range value, or "" */
	const char *if_match;
	const char *if_none_match;
	const char *content_md5;	/* base64, or NULL */
	const char *copy_source;	/* x-ms-copy-source (a URL: may hold a SAS) */
	size_t content_length;
	int put_blob;
};

static int add_header(struct curl_slist **h, const char *fmt, const char *v)
{
	char line[BLOB_ETAG_MAX + 256];
	struct curl_slist *n;

	snprintf(line, sizeof(line), fmt, v);
	n = curl_slist_append(*h, line);
	if (!n)
		return -ENOMEM;
	*h = n;
	return 0;
}

static int az_sign(void *ctx, struct curl_slist **headers)
{
	struct az_req *r = ctx;
	char date[64], xdate[96], xver[64], xrange[96], clen[32] = "", sig[128];
	const char *ms[6];
	char *xcopy = NULL;
	int n = 0, ret = 0;
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	snprintf(xdate, sizeof(xdate), "x-ms-date:%s", date);
	snprintf(xver, sizeof(xver), "x-ms-version:%s", AZURE_VERSION);
	ms[n++] = xdate;
	ms[n++] = xver;
	if (r->range[0]) {
		snprintf(xrange, sizeof(xrange), "x-ms-range:%s", r->range);
		ms[n++] = xrange;
	}
	if (r->put_blob)
		ms[n++] = "x-ms-blob-type:BlockBlob";
	if (r->copy_source) {
		if (asprintf(&xcopy, "x-ms-copy-source:%s", r->copy_source) < 0)
			return -ENOMEM;
		ms[n++] = xcopy;
	}
	ms[n] = NULL;
	for (int i = 0; i < n && ret == 0; i++) {
		const char *colon = strchr(ms[i], ':');
		char *line = NULL;
		if (asprintf(&line, "%.*s: %s", (int)(colon - ms[i]), ms[i], colon + 1) < 0)
			ret = -ENOMEM;
		struct curl_slist *nl = ret == 0 ? curl_slist_append(*headers, line) : NULL;
		if (ret == 0 && !nl)
			ret = -ENOMEM;
		if (nl)
			*headers = nl;
		if (line)
			OPENSSL_cleanse(line, strlen(line));
		free(line);
	}
	if (ret == 0 && r->content_md5)
		ret = add_header(headers, "Content-MD5: %s", r->content_md5);
	if (ret == 0 && r->if_match)
		ret = add_header(headers, "If-Match: %s", r->if_match);
	if (ret == 0 && r->if_none_match)
		ret = add_header(headers, "If-None-Match: %s", r->if_none_match);
	if (r->content_length)
		snprintf(clen, sizeof(clen), "%zu", r->content_length);
	if (ret == 0 && r->a->key) {
		struct azure_sign_input in = {
			.verb = r->verb,
			.content_length = clen,
			.content_md5 = r->content_md5,
			.content_type = "",
			.if_match = r->if_match ? r->if_match : "",
			.if_none_match = r->if_none_match ? r->if_none_match : "",
			.range = "",
			.ms_headers = ms,
			.account = r->a->url.account,
			.path = r->path,
			.query = r->query,
		};
		char *sts = azure_string_to_sign(&in);
		ret = sts ? azure_signature(r->a->key, sts, sig, sizeof(sig)) : -ENOMEM;
		if (sts)
			OPENSSL_cleanse(sts, strlen(sts));
		free(sts);
		if (ret == 0) {
			char auth[256];
			snprintf(auth, sizeof(auth), "Authorization: SharedKey %s:%s",
				 r->a->url.account, sig);
			ret = add_header(headers, "%s", auth);
			OPENSSL_cleanse(auth, sizeof(auth));
		}
		OPENSSL_cleanse(sig, sizeof(sig));
	}
	if (xcopy) {
		OPENSSL_cleanse(xcopy, strlen(xcopy));
		free(xcopy);
	}
	return ret;
}

/* The URI path of a blob (key relative to the store), or of the container. */
static char *blob_path(struct blob_azure *a, const char *key)
{
	char *full = NULL, *enc = NULL, *path = NULL;

	if (key && asprintf(&full, "%s%s", a->url.prefix, key) < 0)
		return NULL;
	enc = full ? http_escape(full, 1) : NULL;
	if ((key && !enc) || asprintf(&path, "%s%s%s", a->path_base, key ? "/" : "",
				     key ? enc : "") < 0)
		path = NULL;
	free(full);
	free(enc);
	return path;
}

/* Runs one request; fills resp. url = host + path + ?query[&sas]. */
static int az_run(struct az_req *r, const char *what, struct http_request *hq,
		  struct http_response *resp)
{
	struct blob_azure *a = r->a;
	char *url = NULL;
	int ret;

	const char *q = r->query && r->query[0] ? r->query : NULL;
	const char *sas = a->sas && a->sas[0] ? a->sas : NULL;
	if (asprintf(&url, "%s%s%s%s%s%s", a->host, r->path, q || sas ? "?" : "", q ? q : "",
		     q && sas ? "&" : "", sas ? sas : "") < 0)
		return -ENOMEM;
	hq->method = r->verb;
	hq->url = url;
	hq->what = what;
	hq->sign = az_sign;
	hq->sign_ctx = r;
	hq->error_header = "x-ms-error-code";
	hq->retry_ms_header = "x-ms-retry-after-ms";
	ret = http_do(a->http, hq, resp);
	if (ret == 0 && resp->status >= 400 && !resp->error_code[0])
		azure_parse_error(resp->body, resp->body_len, resp->error_code,
				  sizeof(resp->error_code));
	if (sas)
		OPENSSL_cleanse(url, strlen(url));
	free(url);
	return ret;
}

/* Maps an answer to -errno; 2xx are 0. Access refusals are logged with the source
 * of the credential (never its value). */
static int az_errno(struct blob_azure *a, const struct http_response *resp, const char *what)
{
	long st = resp->status;

	if (st >= 200 && st < 300)
		return 0;
	if (st == 404)
		return strcmp(resp->error_code, "ContainerNotFound") == 0 ? -ENODEV : -ENOENT;
	if (st == 401 || st == 403) {
		LOG_ERROR("%s: the store refused access (HTTP %ld %s); credentials used: %s",
			  what, st, resp->error_code, a->source);
		return -EACCES;
	}
	if (st == 412)
		return -ESTALE;
	if (st == 409)
		return -EEXIST;
	LOG_ERROR("%s: unexpected answer HTTP %ld %s", what, st, resp->error_code);
	return -EIO;
}

static void req_free(struct az_req *r)
{
	free(r->path);
	free(r->query);
}

/* One List Blobs page. */
static int list_page(struct blob_azure *a, const char *full, const char *marker,
		     unsigned max, struct http_request *hq, struct http_response *resp)
{
	struct az_req r = { .a = a, .verb = "GET" };
	char *pre = http_escape(full, 0), *mk = marker ? http_escape(marker, 0) : NULL;
	int ret = -ENOMEM;

	r.path = blob_path(a, NULL);
	if (!pre || (marker && !mk) || !r.path)
		goto out;
	if (asprintf(&r.query, "comp=list&delimiter=%%2F%s%s&maxresults=%u%s%s&restype=container",
		     mk ? "&marker=" : "", mk ? mk : "", max, full[0] ? "&prefix=" : "",
		     full[0] ? pre : "") < 0) {
		r.query = NULL;
		goto out;
	}
	hq->body_max = AZURE_LIST_BODY_MAX;
	ret = az_run(&r, full[0] ? full : "(container)", hq, resp);
out:
	free(pre);
	free(mk);
	req_free(&r);
	return ret;
}

static int az_list(struct blob_store *s, const char *prefix, struct blob_list *out)
{
	struct blob_azure *a = az_of(s);
	char *full = NULL, *marker = NULL;
	size_t before = out->count;
	int ret, pages = 0;

	if (asprintf(&full, "%s%s", a->url.prefix, prefix) < 0)
		return -ENOMEM;
	do {
		struct http_request hq = { 0 };
		struct http_response resp;
		char *next = NULL;
		ret = list_page(a, full, marker, a->page_size, &hq, &resp);
		if (ret == 0)
			ret = az_errno(a, &resp, full);
		if (ret == 0) {
			ret = azure_parse_list(resp.body ? resp.body : "", resp.body_len, full, out,
					       &next);
			if (ret == -EBADMSG)
				LOG_ERROR("listing of '%s': the store's answer is not valid XML",
					  full);
		}
		http_response_release(&resp);
		free(marker);
		marker = next;
		if (ret < 0)
			break;
		if (++pages > 1000000) {
			ret = -EIO;
			break;
		}
	} while (marker && marker[0]);
	free(marker);
	if (ret == 0 && out->count == before && prefix[0])
		ret = -ENOENT; /* a folder is a prefix with something under it */
	if (ret == -ENOENT && !prefix[0])
		ret = 0;
	free(full);
	return ret;
}

static int az_stat(struct blob_store *s, const char *key, struct blob_stat *out)
{
	struct blob_azure *a = az_of(s);
	struct az_req r = { .a = a, .verb = "HEAD" };
	struct http_request hq = { 0 };
	struct http_response resp;
	int ret;

	r.path = blob_path(a, key);
	if (!r.path)
		return -ENOMEM;
	ret = az_run(&r, key, &hq, &resp);
	if (ret == 0)
		ret = az_errno(a, &resp, key);
	if (ret == 0) {
		memset(out, 0, sizeof(*out));
		out->size = resp.content_length;
		out->mtime.tv_sec = (time_t)azure_parse_date(resp.last_modified);
		snprintf(out->etag, sizeof(out->etag), "%s", resp.etag);
		if (!resp.has_length || !resp.etag[0])
			ret = -EIO;
	}
	if (ret == -ENODEV)
		ret = -ENOENT;
	http_response_release(&resp);
	req_free(&r);
	return ret;
}

static ssize_t az_read_to(struct blob_store *s, const char *key, const char *etag,
			  uint64_t off, size_t len, blob_sink_fn sink, void *ctx)
{
	struct blob_azure *a = az_of(s);
	struct az_req r = { .a = a, .verb = "GET" };
	struct http_request hq = { 0 };
	struct http_response resp;
	ssize_t ret;

	if (len == 0)
		return 0;
	r.path = blob_path(a, key);
	if (!r.path)
		return -ENOMEM;
	snprintf(r.range, sizeof(r.range), "bytes=%" PRIu64 "-%" PRIu64, off, off + len - 1);
	r.if_match = etag && etag[0] ? etag : NULL;
	if (a->proxies && r.if_match) {
		/* a version's bytes: through the proxies, which a whole fleet shares */
		static const char *const hdrs[] = { "x-ms-version: " AZURE_VERSION, NULL };
		struct proxy_read pr = { .path = r.path, .etag = etag, .off = off, .len = len,
					 .headers = hdrs, .what = key, .sink = sink,
					 .sink_ctx = ctx };
		ret = blob_proxies_read(a->proxies, &pr);
		if (ret != -EAGAIN) {
			req_free(&r);
			return ret;
		}
	}
	hq.sink = sink;
	hq.sink_ctx = ctx;
	hq.sink_max = len;
	hq.check_range = 1;
	hq.range_start = off;
	ret = az_run(&r, key, &hq, &resp);
	if (ret == 0) {
		if (resp.status == 416) {
			ret = 0; /* the range starts at or past the end */
		} else if (resp.status == 206 || (resp.status == 200 && off == 0)) {
			ret = (ssize_t)resp.received;
		} else {
			ret = az_errno(a, &resp, key);
			if (ret == 0)
				ret = -EIO;
			/* a pinned read of a deleted blob: the version is gone */
			if ((ret == -ENOENT || ret == -ENODEV) && r.if_match)
				ret = -ESTALE;
		}
	}
	http_response_release(&resp);
	req_free(&r);
	return ret;
}

/* The stat of the version a write made, from its answer. */
static void written_stat(const struct http_response *resp, uint64_t size, struct blob_stat *out)
{
	if (!out)
		return;
	memset(out, 0, sizeof(*out));
	out->size = size;
	out->mtime.tv_sec = (time_t)azure_parse_date(resp->last_modified);
	snprintf(out->etag, sizeof(out->etag), "%s", resp->etag);
}

/* Put Blob: if_match set, only over that version; else with excl only if absent. */
static int az_put(struct blob_azure *a, const char *key, const char *if_match, int excl,
		  const void *data, size_t len, struct blob_stat *out)
{
	struct az_req r = { .a = a, .verb = "PUT", .put_blob = 1, .content_length = len };
	struct http_request hq = { .body = data, .body_len = len, .must_try = 1 };
	struct http_response resp;
	char md5[32];
	int ret;

	r.path = blob_path(a, key);
	if (!r.path)
		return -ENOMEM;
	blob_md5_b64(data, len, md5);
	r.content_md5 = md5;
	if (if_match)
		r.if_match = if_match;
	else if (excl)
		r.if_none_match = "*";
	ret = az_run(&r, key, &hq, &resp);
	if (ret == 0)
		ret = az_errno(a, &resp, key);
	/* create-only answers 409 BlobAlreadyExists (Azure) or 412 (some servers) */
	if (!if_match && ret == -ESTALE)
		ret = -EEXIST;
	if (ret == 0)
		written_stat(&resp, len, out);
	http_response_release(&resp);
	req_free(&r);
	return ret;
}

static int az_create(struct blob_store *s, const char *key, const void *data, size_t len)
{
	return az_put(az_of(s), key, NULL, 1, data, len, NULL);
}

static int az_replace(struct blob_store *s, const char *key, const char *etag,
		      const void *data, size_t len)
{
	int ret = az_put(az_of(s), key, etag, 0, data, len, NULL);

	return ret == -EEXIST ? -ESTALE : ret;
}

static int az_put_whole(struct blob_store *s, const char *key, const void *data, size_t len,
			int excl, struct blob_stat *out)
{
	return az_put(az_of(s), key, NULL, excl, data, len, out);
}

/* An upload is a set of uncommitted blocks, named by this upload's random id and the
 * part's index, so that two writers of one blob never mix their blocks: Put Block
 * List commits one upload's, and blocks never committed are dropped by the store. */
struct blob_upload {
	char id[17];
	char key[];
};

/* The url-encoded base64 block id of part index: every id of a blob has one length. */
static void block_id(const struct blob_upload *u, unsigned index, char *out, size_t size,
		     int encoded)
{
	char raw[32];
	unsigned char b64[48];

	snprintf(raw, sizeof(raw), "%s%06u", u->id, index);
	EVP_EncodeBlock(b64, (const unsigned char *)raw, (int)strlen(raw));
	if (!encoded) {
		snprintf(out, size, "%s", (char *)b64);
		return;
	}
	size_t o = 0;
	for (const unsigned char *p = b64; *p && o + 4 < size; p++) {
		if (*p == '+' || *p == '/' || *p == '=')
			o += (size_t)snprintf(out + o, size - o, "%%%02X", *p);
		else
			out[o++] = (char)*p;
	}
	out[o] = '\0';
}

static int az_upload_begin(struct blob_store *s, const char *key, struct blob_upload **out)
{
	unsigned char rnd[8];
	struct blob_upload *u;

	(void)s;
	if (getentropy(rnd, sizeof(rnd)) < 0)
		return -EIO;
	u = calloc(1, sizeof(*u) + strlen(key) + 1);
	if (!u)
		return -ENOMEM;
	for (int i = 0; i < 8; i++)
		snprintf(u->id + 2 * i, 3, "%02x", rnd[i]);
	memcpy(u->key, key, strlen(key) + 1);
	*out = u;
	return 0;
}

static int az_upload_part(struct blob_store *s, struct blob_upload *u, unsigned index,
			  uint64_t off, const void *data, size_t len)
{
	struct blob_azure *a = az_of(s);
	struct az_req r = { .a = a, .verb = "PUT", .content_length = len };
	struct http_request hq = { .body = data, .body_len = len, .must_try = 1 };
	struct http_response resp;
	char id[96], md5[32];
	int ret;

	(void)off;
	block_id(u, index, id, sizeof(id), 1);
	r.path = blob_path(a, u->key);
	if (!r.path || asprintf(&r.query, "blockid=%s&comp=block", id) < 0) {
		r.query = NULL;
		req_free(&r);
		return -ENOMEM;
	}
	blob_md5_b64(data, len, md5);
	r.content_md5 = md5;
	ret = az_run(&r, u->key, &hq, &resp);
	if (ret == 0)
		ret = az_errno(a, &resp, u->key);
	http_response_release(&resp);
	req_free(&r);
	return ret;
}

static int az_upload_commit(struct blob_store *s, struct blob_upload *u, unsigned nparts,
			    uint64_t size, int excl, struct blob_stat *out)
{
	struct blob_azure *a = az_of(s);
	struct az_req r = { .a = a, .verb = "PUT" };
	struct http_request hq = { .must_try = 1 };
	struct http_response resp;
	char *body = NULL, id[64];
	size_t len = 0, cap = 128 + (size_t)nparts * 64;
	int ret = -ENOMEM;

	body = malloc(cap);
	if (!body)
		goto out;
	len = (size_t)snprintf(body, cap, "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
	for (unsigned i = 0; i < nparts; i++) {
		block_id(u, i, id, sizeof(id), 0);
		len += (size_t)snprintf(body + len, cap - len, "<Latest>%s</Latest>", id);
	}
	len += (size_t)snprintf(body + len, cap - len, "</BlockList>");
	r.path = blob_path(a, u->key);
	r.query = strdup("comp=blocklist");
	if (!r.path || !r.query)
		goto out;
	r.content_length = len;
	if (excl)
		r.if_none_match = "*";
	hq.body = body;
	hq.body_len = len;
	ret = az_run(&r, u->key, &hq, &resp);
	if (ret == 0)
		ret = az_errno(a, &resp, u->key);
	if (ret == -ESTALE && excl)
		ret = -EEXIST;
	if (ret == 0)
		written_stat(&resp, size, out);
	http_response_release(&resp);
out:
	free(body);
	req_free(&r);
	free(u);
	return ret;
}

static void az_upload_abort(struct blob_store *s, struct blob_upload *u)
{
	(void)s;
	free(u); /* the store drops blocks never committed */
}

static int az_remove(struct blob_store *s, const char *key)
{
	struct blob_azure *a = az_of(s);
	struct az_req r = { .a = a, .verb = "DELETE" };
	struct http_request hq = { .must_try = 1 };
	struct http_response resp;
	int ret;

	r.path = blob_path(a, key);
	if (!r.path)
		return -ENOMEM;
	ret = az_run(&r, key, &hq, &resp);
	if (ret == 0)
		ret = az_errno(a, &resp, key);
	if (ret == -ENODEV)
		ret = -ENOENT;
	http_response_release(&resp);
	req_free(&r);
	return ret;
}

/* Longest wait for a copy the store finishes in the background. */
#define AZURE_COPY_WAIT_MS (600u * 1000u)

/* Copy Blob inside the account, then waits until the copy is done. */
static int az_copy(struct blob_azure *a, const char *src, const char *dst, struct blob_stat *out)
{
	struct az_req r = { .a = a, .verb = "PUT" };
	struct http_request hq = { .capture = "x-ms-copy-status", .must_try = 1 };
	struct http_response resp;
	char *spath = blob_path(a, src), *surl = NULL;
	int ret = -ENOMEM;

	r.path = blob_path(a, dst);
	if (!spath || !r.path ||
	    asprintf(&surl, "%s%s%s%s", a->host, spath, a->sas ? "?" : "", a->sas ? a->sas : "") < 0) {
		surl = NULL;
		goto out;
	}
	r.copy_source = surl;
	ret = az_run(&r, dst, &hq, &resp);
	if (ret == 0)
		ret = az_errno(a, &resp, dst);
	if (ret == -ENODEV)
		ret = -ENOENT;
	if (ret == 0 && strcmp(resp.captured, "success") != 0) {
		/* pending: the store copies in the background */
		uint64_t waited = 0;
		unsigned step = 100;
		for (;;) {
			struct az_req h = { .a = a, .verb = "HEAD" };
			struct http_request hh = { .capture = "x-ms-copy-status", .must_try = 1 };
			struct http_response hr;
			char status[sizeof(hr.captured)];
			h.path = blob_path(a, dst);
			if (!h.path) {
				ret = -ENOMEM;
				break;
			}
			ret = az_run(&h, dst, &hh, &hr);
			if (ret == 0)
				ret = az_errno(a, &hr, dst);
			snprintf(status, sizeof(status), "%s", hr.captured);
			http_response_release(&hr);
			req_free(&h);
			if (ret < 0 || strcmp(status, "pending") != 0) {
				if (ret == 0 && strcmp(status, "success") != 0 && status[0]) {
					LOG_ERROR("%s: the store's copy from '%s' ended '%s'", dst,
						  src, status);
					ret = -EIO;
				}
				break;
			}
			if (waited > AZURE_COPY_WAIT_MS) {
				LOG_ERROR("%s: the store's copy from '%s' still pending after %u s",
					  dst, src, AZURE_COPY_WAIT_MS / 1000);
				ret = -EIO;
				break;
			}
			struct timespec ts = { step / 1000, (long)(step % 1000) * 1000000L };
			nanosleep(&ts, NULL);
			waited += step;
			step = step < 2000 ? step * 2 : 2000;
		}
	}
	http_response_release(&resp);
	if (ret == 0 && out)
		ret = az_stat(&a->base, dst, out);
out:
	if (surl)
		OPENSSL_cleanse(surl, strlen(surl));
	free(surl);
	free(spath);
	req_free(&r);
	return ret;
}

static int az_move(struct blob_store *s, const char *src, const char *dst,
		   struct blob_stat *out)
{
	struct blob_azure *a = az_of(s);
	int ret = az_copy(a, src, dst, out);

	if (ret == 0) {
		ret = az_remove(s, src);
		if (ret == -ENOENT)
			ret = 0; /* removed meanwhile: the move is done all the same */
	}
	return ret;
}

static int az_check(struct blob_store *s, unsigned deadline_s, char *err, size_t errlen)
{
	struct blob_azure *a = az_of(s);
	/* by default the whole --timeout: a busy store is slow */
	struct http_request hq = { .quiet = 1, .deadline_ms = deadline_s * 1000u };
	struct http_response resp;
	char why[160] = "";
	int ret;

	hq.errbuf = why;
	hq.errlen = sizeof(why);
	/* Get Container Properties first: cheap for any store (a listing, even of one
	 * entry, can be slow on a large container); a listing where it is not allowed
	 * (anonymous access to a container that is public only blob by blob) */
	struct az_req r = { .a = a, .verb = "HEAD" };
	r.path = blob_path(a, NULL);
	r.query = strdup("restype=container");
	ret = r.path && r.query ? az_run(&r, "(container)", &hq, &resp) : -ENOMEM;
	req_free(&r);
	if (ret == 0 && resp.status != 404 && (resp.status < 200 || resp.status >= 300)) {
		http_response_release(&resp);
		ret = list_page(a, a->url.prefix, NULL, 1, &hq, &resp);
	}
	if (ret < 0) {
		snprintf(err, errlen, "cannot reach the store at %s: %s", a->host, why);
		return ret;
	}
	long st = resp.status;
	if (st == 404 && strcmp(resp.error_code, "ContainerNotFound") == 0) {
		snprintf(err, errlen, "container '%s' does not exist in account '%s' at %s",
			 a->url.container, a->url.account, a->host);
		ret = -ENOENT;
	} else if (st == 401 || st == 403) {
		snprintf(err, errlen, "the store refused access (HTTP %ld %s); credentials "
			 "used: %s", st, resp.error_code, a->source);
		ret = -EACCES;
	} else if (st < 200 || st >= 300) {
		snprintf(err, errlen, "the store at %s answered HTTP %ld %s", a->host, st,
			 resp.error_code);
		ret = -EIO;
	}
	http_response_release(&resp);
	return ret;
}

static void az_destroy(struct blob_store *s)
{
	struct blob_azure *a = az_of(s);

	http_destroy(a->http);
	blob_proxies_free(a->proxies);
	azure_url_release(&a->url);
	if (a->key) {
		OPENSSL_cleanse(a->key, strlen(a->key));
		free(a->key);
	}
	if (a->sas) {
		OPENSSL_cleanse(a->sas, strlen(a->sas));
		free(a->sas);
	}
	free(a->host);
	free(a->path_base);
	free(a->base.id);
	free(a);
}

static int az_down(struct blob_store *s)
{
	return http_down(az_of(s)->http);
}

static void az_stats(struct blob_store *s, struct blob_stats *out)
{
	http_add_stats(az_of(s)->http, out);
	if (az_of(s)->proxies)
		http_add_stats(az_of(s)->proxies->http, out);
}

static void az_stop(struct blob_store *s)
{
	http_stop(az_of(s)->http);
	if (az_of(s)->proxies)
		http_stop(az_of(s)->proxies->http);
}

static const struct blob_ops azure_ops = {
	.name = "azure",
	.flags = BLOB_PINNED_READS, /* If-Match */
	.destroy = az_destroy,
	.list = az_list,
	.stat = az_stat,
	.read_to = az_read_to,
	.create = az_create,
	.replace = az_replace,
	.check = az_check,
	.down = az_down,
	.stop = az_stop,
	.stats = az_stats,
	.put = az_put_whole,
	.upload_begin = az_upload_begin,
	.upload_part = az_upload_part,
	.upload_commit = az_upload_commit,
	.upload_abort = az_upload_abort,
	.remove = az_remove,
	.move = az_move,
};

/* A connection string's BlobEndpoint (an emulator, a private endpoint) is where the
 * account it names is reached: a STORE of the form wasbs://C@ACCOUNT.blob.../ (what
 * MLflow keeps) goes there, as Azure's own SDKs do. */
static int az_blob_endpoint(struct blob_azure *a, const struct azure_conn *c, char *err,
			    size_t errlen)
{
	const char *acct = c->dev ? AZURE_DEV_ACCOUNT : c->account;
	const char *host = strstr(a->url.endpoint, "://");
	size_t alen = strlen(a->url.account);

	if (!host || strcmp(acct, a->url.account) != 0 || strncmp(host + 3, a->url.account, alen) != 0 ||
	    strncmp(host + 3 + alen, ".blob.", 6) != 0)
		return 0; /* the URL names its own endpoint */
	if (strncmp(c->blob_endpoint, "http://", 7) != 0 &&
	    strncmp(c->blob_endpoint, "https://", 8) != 0) {
		snprintf(err, errlen, "AZURE_STORAGE_CONNECTION_STRING: BlobEndpoint is not an "
			 "http(s) URL");
		return -EINVAL;
	}
	char *ep = strdup(c->blob_endpoint);
	if (!ep) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	size_t n = strlen(ep);
	while (n > 0 && ep[n - 1] == '/')
		ep[--n] = '\0';
	free(a->url.endpoint);
	a->url.endpoint = ep;
	return 0;
}

/* Chooses the credential: the first source found in the environment wins. */
static int az_credentials(struct blob_azure *a, char *err, size_t errlen)
{
	const char *cs = getenv("AZURE_STORAGE_CONNECTION_STRING");
	const char *acct = getenv("AZURE_STORAGE_ACCOUNT"), *key = getenv("AZURE_STORAGE_KEY");
	const char *sas = getenv("AZURE_STORAGE_SAS_TOKEN");
	const char *want = NULL; /* the account the key is for */
	int ret = 0, nomem = 0;

	if (cs && cs[0]) {
		struct azure_conn c;
		ret = azure_conn_parse(cs, &c, err, errlen);
		if (ret < 0)
			return ret;
		if (c.dev) {
			a->key = strdup(AZURE_DEV_KEY);
			nomem = !a->key;
			want = AZURE_DEV_ACCOUNT;
			snprintf(a->source, sizeof(a->source),
				 "AZURE_STORAGE_CONNECTION_STRING (UseDevelopmentStorage)");
		} else if (c.key[0]) {
			a->key = strdup(c.key);
			nomem = !a->key;
			snprintf(a->source, sizeof(a->source),
				 "AZURE_STORAGE_CONNECTION_STRING (AccountKey of %.40s)", c.account);
			if (c.account[0] && strcmp(c.account, a->url.account) != 0) {
				snprintf(err, errlen, "AZURE_STORAGE_CONNECTION_STRING is for account "
					 "'%.40s' but STORE names account '%.40s'", c.account,
					 a->url.account);
				ret = -EINVAL;
			}
			if (!c.account[0]) {
				snprintf(err, errlen, "AZURE_STORAGE_CONNECTION_STRING has an "
					 "AccountKey but no AccountName");
				ret = -EINVAL;
			}
		} else if (c.sas[0]) {
			a->sas = strdup(c.sas);
			nomem = !a->sas;
			snprintf(a->source, sizeof(a->source),
				 "AZURE_STORAGE_CONNECTION_STRING (SharedAccessSignature)");
		} else {
			snprintf(a->source, sizeof(a->source),
				 "AZURE_STORAGE_CONNECTION_STRING (no key or SAS: anonymous)");
		}
		if (ret == 0 && c.blob_endpoint[0])
			ret = az_blob_endpoint(a, &c, err, errlen);
		azure_conn_release(&c);
	} else if ((acct && acct[0]) || (key && key[0])) {
		if (!acct || !acct[0] || !key || !key[0]) {
			snprintf(err, errlen, "AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY go "
				 "together: set both");
			return -EINVAL;
		}
		a->key = strdup(key);
		nomem = !a->key;
		want = acct;
		snprintf(a->source, sizeof(a->source), "AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY");
	} else if (sas && sas[0]) {
		a->sas = strdup(sas[0] == '?' ? sas + 1 : sas);
		nomem = !a->sas;
		snprintf(a->source, sizeof(a->source), "AZURE_STORAGE_SAS_TOKEN");
	} else {
		snprintf(a->source, sizeof(a->source), "none (anonymous access)");
	}
	if (ret == 0 && nomem) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (ret == 0 && want && strcmp(want, a->url.account) != 0) {
		snprintf(err, errlen, "the credentials are for account '%.40s' but STORE names "
			 "account '%.40s'", want, a->url.account);
		ret = -EINVAL;
	}
	if (ret == 0 && a->key) {
		char sig[128];
		if (azure_signature(a->key, "check", sig, sizeof(sig)) < 0) {
			snprintf(err, errlen, "the account key from %s is not valid base64",
				 a->source);
			ret = -EINVAL;
		}
	}
	return ret;
}

int blob_azure_open(const char *url, const struct blob_options *opt, struct blob_store **out,
		    char *err, size_t errlen)
{
	struct blob_azure *a = calloc(1, sizeof(*a));
	struct http_config hc = { 0 };
	int ret;

	*out = NULL;
	if (!a) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	a->base.ops = &azure_ops;
	ret = azure_url_parse(url, &a->url, err, errlen);
	if (ret < 0)
		goto fail;
	ret = az_credentials(a, err, errlen);
	if (ret < 0)
		goto fail;
	/* host = scheme://host[:port]; path_base = what follows it, then /container */
	const char *hs = strstr(a->url.endpoint, "://") + 3, *slash = strchr(hs, '/');
	size_t hlen = slash ? (size_t)(slash - a->url.endpoint) : strlen(a->url.endpoint);
	a->host = strndup(a->url.endpoint, hlen);
	if (!a->host || asprintf(&a->path_base, "%s/%s", a->url.endpoint + hlen,
				 a->url.container) < 0 ||
	    asprintf(&a->base.id, "%s/%s/%s", a->url.endpoint, a->url.container,
		     a->url.prefix) < 0) {
		snprintf(err, errlen, "out of memory");
		ret = -ENOMEM;
		goto fail;
	}
	a->page_size = AZURE_PAGE_MAX;
	const char *ps = getenv("ARTIFACTFS_LIST_PAGE_SIZE"); /* for tests of paging */
	unsigned long page = ps ? strtoul(ps, NULL, 10) : 0;
	if (page > 0 && page <= AZURE_PAGE_MAX)
		a->page_size = (unsigned)page;
	hc.deadline_ms = (opt->timeout_s ? opt->timeout_s : 60) * 1000u;
	hc.connect_timeout_ms = 10000;
	hc.stall_ms = 15000;
	hc.insecure = opt->insecure;
	hc.ca_file = blob_ca_file(opt, NULL, &hc.ca_source);
	if (opt->insecure && strncmp(a->host, "https", 5) == 0)
		LOG_WARN("TLS certificates of %s are not verified (--insecure)", a->host);
	ret = http_create(&hc, &a->http);
	if (ret < 0) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (opt->proxy && opt->proxy[0]) {
		ret = blob_proxies_parse(opt->proxy, opt, &a->proxies, err, errlen);
		if (ret < 0)
			goto fail;
	}
	*out = &a->base;
	return 0;
fail:
	az_destroy(&a->base);
	return ret;
}
