/*
 * s3.c: the S3 backend (AWS S3 and S3-compatible stores: MinIO, Ceph, R2, s3rver).
 *
 * STORE: s3://BUCKET/PREFIX. Virtual-hosted addressing on AWS
 * (https://BUCKET.s3.REGION.amazonaws.com/KEY); path-style (ENDPOINT/BUCKET/KEY)
 * when an endpoint is given (AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL) or when the
 * bucket name holds dots. Region: AWS_REGION, AWS_DEFAULT_REGION, the profile's
 * region, else us-east-1.
 *
 * Credentials, the AWS chain in its order: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY
 * (+ AWS_SESSION_TOKEN); the shared files (AWS_SHARED_CREDENTIALS_FILE or
 * ~/.aws/credentials, AWS_CONFIG_FILE or ~/.aws/config, profile AWS_PROFILE or
 * default); the instance metadata service with IMDSv2 tokens (its address from
 * AWS_EC2_METADATA_SERVICE_ENDPOINT, off with AWS_EC2_METADATA_DISABLED=true), asked
 * at the first request and again five minutes before the credentials expire; else
 * unsigned requests (a public bucket). Every request is signed with Signature
 * Version 4. Secrets are never logged: log lines name the key and the source.
 *
 * Reads are pinned with If-Match and the answer's ETag is checked before its first
 * byte is used, so a server that ignores the condition still never mixes versions.
 * Conditional writes (create-if-absent, replace-if-unchanged) use If-None-Match: *
 * and If-Match; a server that ignores them is detected at the first create (a second
 * create of the same key must fail) and said once in the log, and from then on
 * create and replace check before and read back after writing.
 */
#include "s3.h"
#include "s3_store.h"
#include "blob_private.h"
#include "http.h"
#include "log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define S3_PAGE_MAX 1000
#define S3_LIST_BODY_MAX (64u << 20)
#define S3_IMDS_DEFAULT "http://169.254.169.254"

static struct blob_s3 *s3_of(struct blob_store *s)
{
	return (struct blob_s3 *)s;
}

/* ---- requests ---- */

struct s3_req {
	struct blob_s3 *s;
	const char *method;
	char *path;			/* encoded URI path */
	char *query;			/* encoded, or NULL */
	char range[64];
	const char *if_match;
	const char *if_none_match;
	const char *content_md5;
	const char *copy_source;	/* x-amz-copy-source: /bucket/key, encoded */
};

static int add_header(struct curl_slist **h, const char *line)
{
	struct curl_slist *n = curl_slist_append(*h, line);

	if (!n)
		return -ENOMEM;
	*h = n;
	return 0;
}

static int s3_sign(void *ctx, struct curl_slist **headers)
{
	struct s3_req *r = ctx;
	struct blob_s3 *s = r->s;
	char date[20], lines[8][BLOB_ETAG_MAX + 600];
	const char *signed_h[9];
	int n = 0, ret = 0;
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%Y%m%dT%H%M%SZ", &tm);
	/* the headers signed, in the order they are sent; NULL values are left out */
	const char *names[] = { "host", "x-amz-date", "x-amz-content-sha256", "range",
				"if-match", "if-none-match", "content-md5", "x-amz-copy-source" };
	const char *values[] = { s->host, date, "UNSIGNED-PAYLOAD", r->range[0] ? r->range : NULL,
				 r->if_match, r->if_none_match, r->content_md5, r->copy_source };
	for (size_t i = 0; i < sizeof(names) / sizeof(*names); i++) {
		if (!values[i])
			continue;
		snprintf(lines[n], sizeof(lines[n]), "%s:%s", names[i], values[i]);
		signed_h[n] = lines[n];
		n++;
	}
	pthread_mutex_lock(&s->lock);
	int anon = !s->akid || !s->secret;
	char *token = s->token && !anon ? strdup(s->token) : NULL;
	char auth[1024] = "";
	if (!anon) {
		signed_h[n] = NULL;
		char *tline = NULL;
		if (token && asprintf(&tline, "x-amz-security-token:%s", token) >= 0) {
			signed_h[n++] = tline;
			signed_h[n] = NULL;
		}
		struct s3_sign_input in = { .method = r->method, .path = r->path,
					    .query = r->query ? r->query : "", .headers = signed_h,
					    .payload_hash = "UNSIGNED-PAYLOAD", .amz_date = date,
					    .region = s->region, .service = "s3", .akid = s->akid,
					    .secret = s->secret };
		ret = s3_authorization(&in, auth, sizeof(auth));
		if (tline) {
			OPENSSL_cleanse(tline, strlen(tline));
			free(tline);
			n--;
		}
	}
	pthread_mutex_unlock(&s->lock);
	/* every signed header goes out as it was signed (curl sets Host itself, the same) */
	for (int i = 1; ret == 0 && i < n; i++) {
		char line[BLOB_ETAG_MAX + 620];
		const char *colon = strchr(signed_h[i], ':');
		snprintf(line, sizeof(line), "%.*s: %s", (int)(colon - signed_h[i]), signed_h[i],
			 colon + 1);
		ret = add_header(headers, line);
	}
	if (ret == 0 && token) {
		char *tl = NULL;
		if (asprintf(&tl, "x-amz-security-token: %s", token) < 0)
			ret = -ENOMEM;
		else
			ret = add_header(headers, tl);
		if (tl) {
			OPENSSL_cleanse(tl, strlen(tl));
			free(tl);
		}
	}
	if (ret == 0 && auth[0]) {
		char line[1100];
		snprintf(line, sizeof(line), "Authorization: %s", auth);
		ret = add_header(headers, line);
		OPENSSL_cleanse(line, sizeof(line));
	}
	OPENSSL_cleanse(auth, sizeof(auth));
	if (token) {
		OPENSSL_cleanse(token, strlen(token));
		free(token);
	}
	return ret;
}

/* The URI path of key (relative to the store), or of the bucket (key NULL). */
static char *obj_path(struct blob_s3 *s, const char *key)
{
	char *full = NULL, *enc = NULL, *path = NULL;

	if (asprintf(&full, "%s%s", s->url.prefix, key ? key : "") < 0)
		return NULL;
	enc = key ? http_escape(full, 1) : strdup("");
	if (enc && asprintf(&path, "%s/%s", s->path_base, enc) < 0)
		path = NULL;
	free(full);
	free(enc);
	return path;
}

static int s3_run(struct s3_req *r, const char *what, struct http_request *hq,
		  struct http_response *resp)
{
	struct blob_s3 *s = r->s;
	char *url = NULL;
	int ret;

	s3_creds_ensure(s);
	if (asprintf(&url, "%s%s%s%s", s->base_url, r->path, r->query ? "?" : "",
		     r->query ? r->query : "") < 0)
		return -ENOMEM;
	hq->method = r->method;
	hq->url = url;
	hq->what = what;
	hq->sign = s3_sign;
	hq->sign_ctx = r;
	ret = http_do(s->http, hq, resp);
	if (ret == 0 && resp->status >= 400 && !resp->error_code[0])
		s3_parse_error(resp->body, resp->body_len, resp->error_code,
			       sizeof(resp->error_code));
	free(url);
	return ret;
}

static int s3_errno(struct blob_s3 *s, const struct http_response *resp, const char *what)
{
	long st = resp->status;

	if (st >= 200 && st < 300)
		return 0;
	if (st == 404)
		return strcmp(resp->error_code, "NoSuchBucket") == 0 ? -ENODEV : -ENOENT;
	if (st == 401 || st == 403) {
		pthread_mutex_lock(&s->lock);
		LOG_ERROR("%s: the store refused access (HTTP %ld %s); credentials used: %s",
			  what, st, resp->error_code[0] ? resp->error_code : "AccessDenied",
			  s->source[0] ? s->source : "none");
		pthread_mutex_unlock(&s->lock);
		return -EACCES;
	}
	if (st == 412)
		return -ESTALE;
	if (st == 409)
		return -EEXIST;
	LOG_ERROR("%s: unexpected answer HTTP %ld %s", what, st, resp->error_code);
	return -EIO;
}

static void req_free(struct s3_req *r)
{
	free(r->path);
	free(r->query);
}

/* ---- reads ---- */

static int s3_list(struct blob_store *bs, const char *prefix, struct blob_list *out)
{
	struct blob_s3 *s = s3_of(bs);
	char *full = NULL, *token = NULL;
	size_t before = out->count;
	int ret = 0, pages = 0;

	if (asprintf(&full, "%s%s", s->url.prefix, prefix) < 0)
		return -ENOMEM;
	do {
		struct s3_req r = { .s = s, .method = "GET" };
		struct http_request hq = { .body_max = S3_LIST_BODY_MAX };
		struct http_response resp;
		char *pre = http_escape(full, 0), *tok = token ? http_escape(token, 0) : NULL;
		char *next = NULL;
		r.path = obj_path(s, NULL);
		if (!pre || (token && !tok) || !r.path ||
		    asprintf(&r.query, "%s%s%sdelimiter=%%2F&encoding-type=url&list-type=2&"
			     "max-keys=%u&prefix=%s", tok ? "continuation-token=" : "",
			     tok ? tok : "", tok ? "&" : "", S3_PAGE_MAX, pre) < 0) {
			r.query = NULL;
			ret = -ENOMEM;
		}
		free(pre);
		free(tok);
		if (ret == 0)
			ret = s3_run(&r, full[0] ? full : "(bucket)", &hq, &resp);
		else
			memset(&resp, 0, sizeof(resp));
		if (ret == 0)
			ret = s3_errno(s, &resp, full[0] ? full : "(bucket)");
		if (ret == 0) {
			ret = s3_parse_list(resp.body ? resp.body : "", resp.body_len, full, out,
					    &next);
			if (ret == -EBADMSG)
				LOG_ERROR("listing of '%s': the store's answer is not valid XML",
					  full);
		}
		http_response_release(&resp);
		req_free(&r);
		free(token);
		token = next;
		if (ret < 0)
			break;
		if (++pages > 1000000) {
			ret = -EIO;
			break;
		}
	} while (token && token[0]);
	free(token);
	if (ret == 0 && out->count == before && prefix[0])
		ret = -ENOENT; /* a folder is a prefix with something under it */
	if (ret == -ENOENT && !prefix[0])
		ret = 0;
	if (ret == -ENODEV)
		ret = -ENOENT;
	free(full);
	return ret;
}

static void stat_from(const struct http_response *resp, struct blob_stat *out)
{
	memset(out, 0, sizeof(*out));
	out->size = resp->content_length;
	out->mtime.tv_sec = (time_t)s3_parse_time(resp->last_modified);
	if (resp->etag[0] == '"')
		snprintf(out->etag, sizeof(out->etag), "%s", resp->etag);
	else
		snprintf(out->etag, sizeof(out->etag), "\"%.*s\"", BLOB_ETAG_MAX - 3, resp->etag);
}

static int s3_stat(struct blob_store *bs, const char *key, struct blob_stat *out)
{
	struct blob_s3 *s = s3_of(bs);
	struct s3_req r = { .s = s, .method = "HEAD" };
	struct http_request hq = { 0 };
	struct http_response resp;
	int ret;

	if (key[0] == '\0' || key[strlen(key) - 1] == '/')
		return -ENOENT; /* a folder marker is not a file */
	r.path = obj_path(s, key);
	if (!r.path)
		return -ENOMEM;
	ret = s3_run(&r, key, &hq, &resp);
	if (ret == 0)
		ret = s3_errno(s, &resp, key);
	if (ret == 0) {
		stat_from(&resp, out);
		if (!resp.has_length || !resp.etag[0])
			ret = -EIO;
	}
	if (ret == -ENODEV)
		ret = -ENOENT;
	http_response_release(&resp);
	req_free(&r);
	return ret;
}

static ssize_t s3_read_to(struct blob_store *bs, const char *key, const char *etag,
			  uint64_t off, size_t len, blob_sink_fn sink, void *ctx)
{
	struct blob_s3 *s = s3_of(bs);
	struct s3_req r = { .s = s, .method = "GET" };
	struct http_request hq = { 0 };
	struct http_response resp;
	ssize_t ret;

	if (len == 0)
		return 0;
	r.path = obj_path(s, key);
	if (!r.path)
		return -ENOMEM;
	snprintf(r.range, sizeof(r.range), "bytes=%" PRIu64 "-%" PRIu64, off, off + len - 1);
	r.if_match = etag && etag[0] ? etag : NULL;
	hq.sink = sink;
	hq.sink_ctx = ctx;
	hq.sink_max = len;
	hq.check_range = 1;
	hq.range_start = off;
	hq.expect_etag = r.if_match;
	ret = s3_run(&r, key, &hq, &resp);
	if (ret == 0) {
		if (resp.status == 416) {
			ret = 0;
		} else if (resp.status == 206 || (resp.status == 200 && off == 0)) {
			ret = (ssize_t)resp.received;
		} else {
			ret = s3_errno(s, &resp, key);
			if (ret == 0)
				ret = -EIO;
			if ((ret == -ENOENT || ret == -ENODEV) && r.if_match)
				ret = -ESTALE;
		}
	}
	http_response_release(&resp);
	req_free(&r);
	return ret;
}

/* ---- writes ---- */

/* PUT of a whole object; if_match / if_none_match as given. */
static int put_object(struct blob_s3 *s, const char *key, const void *data, size_t len,
		      const char *if_match, const char *if_none_match, struct blob_stat *out)
{
	struct s3_req r = { .s = s, .method = "PUT", .if_match = if_match,
			    .if_none_match = if_none_match };
	struct http_request hq = { .body = data, .body_len = len, .must_try = 1 };
	struct http_response resp;
	char md5[32];
	int ret;

	r.path = obj_path(s, key);
	if (!r.path)
		return -ENOMEM;
	blob_md5_b64(data, len, md5);
	r.content_md5 = md5;
	ret = s3_run(&r, key, &hq, &resp);
	if (ret == 0)
		ret = s3_errno(s, &resp, key);
	if (ret == 0 && out) {
		stat_from(&resp, out);
		out->size = len;
		if (!out->mtime.tv_sec)
			out->mtime.tv_sec = time(NULL);
	}
	http_response_release(&resp);
	req_free(&r);
	return ret;
}

/* The probes of s3_conditions_learn: an empty create-if-absent (etag NULL), or an
 * empty replace of version etag. */
static int probe_put(struct blob_s3 *s, const char *key, const char *etag)
{
	int ret = put_object(s, key, "", 0, etag, etag ? NULL : "*", NULL);

	return ret == -ESTALE && !etag ? -EEXIST : ret == -EEXIST && etag ? -ESTALE : ret;
}

/* Create-if-absent (etag NULL; -EEXIST when the key is there) or replace-if-unchanged
 * (-ESTALE when the key's version is not etag): with If-None-Match or If-Match, or,
 * on a server that ignores them, under a claim on the key. */
static int conditional_put(struct blob_s3 *s, const char *key, const void *data, size_t len,
			   const char *etag, struct blob_stat *out)
{
	struct blob_stat st;
	char claim[128];
	uint64_t since;
	int lost = etag ? -ESTALE : -EEXIST;
	int known, ret = s3_conditions_learn(s, probe_put, probe_put, &known);

	if (ret < 0)
		return ret;
	if (known >= 0) {
		ret = put_object(s, key, data, len, etag, etag ? NULL : "*", out);
		return ret == -ESTALE || ret == -EEXIST ? lost : ret;
	}
	ret = s3_claim(s, key, claim, sizeof(claim), &since);
	if (ret < 0)
		return ret;
	ret = s3_stat(&s->base, key, &st);
	if (etag)
		ret = ret == 0 && strcmp(st.etag, etag) != 0 ? -ESTALE : ret;
	else
		ret = ret == 0 ? -EEXIST : ret == -ENOENT ? 0 : ret;
	if (ret == 0)
		ret = s3_claim_fresh(s, key, since);
	if (ret == 0)
		ret = put_object(s, key, data, len, NULL, NULL, out);
	if (ret == 0) {
		int same = s3_holds(s, key, data, len);
		ret = same < 0 ? same : same ? 0 : lost;
	}
	s3_unclaim(s, claim);
	return ret;
}

static int s3_create(struct blob_store *bs, const char *key, const void *data, size_t len)
{
	return conditional_put(s3_of(bs), key, data, len, NULL, NULL);
}

static int s3_replace(struct blob_store *bs, const char *key, const char *etag,
		      const void *data, size_t len)
{
	return conditional_put(s3_of(bs), key, data, len, etag, NULL);
}

static int s3_put(struct blob_store *bs, const char *key, const void *data, size_t len,
		  int excl, struct blob_stat *out)
{
	struct blob_s3 *s = s3_of(bs);

	if (excl)
		return conditional_put(s, key, data, len, NULL, out);
	return put_object(s, key, data, len, NULL, NULL, out);
}

/* A multipart upload: the parts' ETags, kept for the completion. */
struct blob_upload {
	pthread_mutex_t lock;
	char *id;			/* UploadId */
	char (*etags)[BLOB_ETAG_MAX];
	unsigned cap;
	char key[];
};

static int s3_upload_begin(struct blob_store *bs, const char *key, struct blob_upload **out)
{
	struct blob_s3 *s = s3_of(bs);
	struct s3_req r = { .s = s, .method = "POST" };
	struct http_request hq = { .body = "", .body_len = 0, .must_try = 1 };
	struct http_response resp;
	struct blob_upload *u = calloc(1, sizeof(*u) + strlen(key) + 1);
	int ret;

	if (!u)
		return -ENOMEM;
	memcpy(u->key, key, strlen(key) + 1);
	pthread_mutex_init(&u->lock, NULL);
	r.path = obj_path(s, key);
	r.query = strdup("uploads=");
	if (!r.path || !r.query) {
		req_free(&r);
		free(u);
		return -ENOMEM;
	}
	ret = s3_run(&r, key, &hq, &resp);
	if (ret == 0)
		ret = s3_errno(s, &resp, key);
	if (ret == 0) {
		u->id = s3_parse_field(resp.body, resp.body_len, "UploadId");
		if (!u->id || !u->id[0]) {
			LOG_ERROR("%s: the store started an upload without an UploadId", key);
			ret = -EIO;
		}
	}
	http_response_release(&resp);
	req_free(&r);
	if (ret < 0) {
		free(u->id);
		pthread_mutex_destroy(&u->lock);
		free(u);
		return ret;
	}
	*out = u;
	return 0;
}

static int s3_upload_part(struct blob_store *bs, struct blob_upload *u, unsigned index,
			  uint64_t off, const void *data, size_t len)
{
	struct blob_s3 *s = s3_of(bs);
	struct s3_req r = { .s = s, .method = "PUT" };
	struct http_request hq = { .body = data, .body_len = len, .must_try = 1 };
	struct http_response resp;
	char md5[32], *id = http_escape(u->id, 0);
	int ret;

	(void)off;
	if (index >= BLOB_PARTS_MAX) {
		free(id);
		return -EFBIG;
	}
	r.path = obj_path(s, u->key);
	if (!id || !r.path || asprintf(&r.query, "partNumber=%u&uploadId=%s", index + 1, id) < 0) {
		r.query = NULL;
		free(id);
		req_free(&r);
		return -ENOMEM;
	}
	free(id);
	blob_md5_b64(data, len, md5);
	r.content_md5 = md5;
	ret = s3_run(&r, u->key, &hq, &resp);
	if (ret == 0)
		ret = s3_errno(s, &resp, u->key);
	if (ret == 0 && !resp.etag[0]) {
		LOG_ERROR("%s: the store took part %u without an ETag", u->key, index + 1);
		ret = -EIO;
	}
	if (ret == 0) {
		pthread_mutex_lock(&u->lock);
		if (index >= u->cap) {
			unsigned cap = u->cap ? u->cap : 64;
			while (cap <= index)
				cap *= 2;
			void *ne = realloc(u->etags, cap * sizeof(*u->etags));
			if (!ne) {
				ret = -ENOMEM;
			} else {
				u->etags = ne;
				memset(u->etags + u->cap, 0, (cap - u->cap) * sizeof(*u->etags));
				u->cap = cap;
			}
		}
		if (ret == 0)
			snprintf(u->etags[index], BLOB_ETAG_MAX, "%s", resp.etag);
		pthread_mutex_unlock(&u->lock);
	}
	http_response_release(&resp);
	req_free(&r);
	return ret;
}

static void upload_free(struct blob_upload *u)
{
	free(u->id);
	free(u->etags);
	pthread_mutex_destroy(&u->lock);
	free(u);
}

static void s3_upload_abort(struct blob_store *bs, struct blob_upload *u)
{
	struct blob_s3 *s = s3_of(bs);
	struct s3_req r = { .s = s, .method = "DELETE" };
	struct http_request hq = { .must_try = 1, .quiet = 1 };
	struct http_response resp;
	char *id = http_escape(u->id, 0);

	r.path = obj_path(s, u->key);
	if (id && r.path && asprintf(&r.query, "uploadId=%s", id) >= 0) {
		if (s3_run(&r, u->key, &hq, &resp) == 0 && (resp.status < 200 || resp.status >= 300) &&
		    resp.status != 404)
			LOG_WARN("%s: the store did not drop the parts of a failed upload (HTTP %ld)",
				 u->key, resp.status);
		http_response_release(&resp);
	} else {
		r.query = NULL;
	}
	free(id);
	req_free(&r);
	upload_free(u);
}

static int s3_upload_commit(struct blob_store *bs, struct blob_upload *u, unsigned nparts,
			    uint64_t size, int excl, struct blob_stat *out)
{
	struct blob_s3 *s = s3_of(bs);
	struct s3_req r = { .s = s, .method = "POST" };
	struct http_request hq = { .must_try = 1 };
	struct http_response resp;
	size_t cap = 128 + (size_t)nparts * (BLOB_ETAG_MAX + 64), len = 0;
	char *body = malloc(cap), *id = http_escape(u->id, 0);
	int ret = -ENOMEM;

	memset(&resp, 0, sizeof(resp));
	if (!body || !id)
		goto out;
	if (excl && s3_conditions_state(s) < 0) {
		struct blob_stat st;
		ret = s3_stat(bs, u->key, &st);
		if (ret == 0) {
			ret = -EEXIST;
			goto out;
		}
		if (ret != -ENOENT)
			goto out;
	}
	len = (size_t)snprintf(body, cap, "<CompleteMultipartUpload>");
	for (unsigned i = 0; i < nparts; i++) {
		if (i >= u->cap || !u->etags[i][0]) {
			ret = -EIO; /* a part never sent */
			goto out;
		}
		len += (size_t)snprintf(body + len, cap - len,
					"<Part><PartNumber>%u</PartNumber><ETag>%s</ETag></Part>",
					i + 1, u->etags[i]);
	}
	len += (size_t)snprintf(body + len, cap - len, "</CompleteMultipartUpload>");
	r.path = obj_path(s, u->key);
	if (!r.path || asprintf(&r.query, "uploadId=%s", id) < 0) {
		r.query = NULL;
		ret = -ENOMEM;
		goto out;
	}
	if (excl)
		r.if_none_match = "*";
	hq.body = body;
	hq.body_len = len;
	ret = s3_run(&r, u->key, &hq, &resp);
	if (ret == 0)
		ret = s3_errno(s, &resp, u->key);
	/* a 200 may still carry an error in its body */
	if (ret == 0 && resp.body && strstr(resp.body, "<Error>")) {
		char code[64];
		s3_parse_error(resp.body, resp.body_len, code, sizeof(code));
		LOG_ERROR("%s: completing the upload failed: %s", u->key, code);
		ret = -EIO;
	}
	if (ret == -ESTALE && excl)
		ret = -EEXIST;
	if (ret == 0) {
		if (s3_stat(bs, u->key, out ? out : &(struct blob_stat){ 0 }) < 0 && out) {
			memset(out, 0, sizeof(*out));
			out->size = size;
		}
	}
out:
	http_response_release(&resp);
	free(body);
	free(id);
	req_free(&r);
	if (ret < 0)
		s3_upload_abort(bs, u); /* no part is left behind */
	else
		upload_free(u);
	return ret;
}

static int s3_remove(struct blob_store *bs, const char *key)
{
	struct blob_s3 *s = s3_of(bs);
	struct blob_stat st;
	struct s3_req r = { .s = s, .method = "DELETE" };
	struct http_request hq = { .must_try = 1 };
	struct http_response resp;
	int ret;

	/* S3 answers 204 for a key that is not there: ask first */
	ret = s3_stat(bs, key, &st);
	if (ret < 0)
		return ret;
	r.path = obj_path(s, key);
	if (!r.path)
		return -ENOMEM;
	ret = s3_run(&r, key, &hq, &resp);
	if (ret == 0)
		ret = s3_errno(s, &resp, key);
	if (ret == -ENODEV)
		ret = -ENOENT;
	http_response_release(&resp);
	req_free(&r);
	return ret;
}

static int s3_move(struct blob_store *bs, const char *src, const char *dst,
		   struct blob_stat *out)
{
	struct blob_s3 *s = s3_of(bs);
	struct s3_req r = { .s = s, .method = "PUT" };
	struct http_request hq = { .body = "", .body_len = 0, .must_try = 1 };
	struct http_response resp;
	char *full = NULL, *enc = NULL, *source = NULL;
	int ret = -ENOMEM;

	memset(&resp, 0, sizeof(resp));
	if (asprintf(&full, "%s/%s%s", s->url.bucket, s->url.prefix, src) < 0) {
		full = NULL;
		goto out;
	}
	enc = http_escape(full, 1);
	if (!enc || asprintf(&source, "/%s", enc) < 0) {
		source = NULL;
		goto out;
	}
	r.path = obj_path(s, dst);
	if (!r.path)
		goto out;
	r.copy_source = source;
	ret = s3_run(&r, dst, &hq, &resp);
	if (ret == 0)
		ret = s3_errno(s, &resp, dst);
	if (ret == 0 && resp.body && strstr(resp.body, "<Error>")) {
		char code[64];
		s3_parse_error(resp.body, resp.body_len, code, sizeof(code));
		LOG_ERROR("%s: the store's copy from '%s' failed: %s", dst, src, code);
		ret = -EIO;
	}
	if (ret == 0)
		ret = s3_remove(bs, src);
	if (ret == -ENOENT)
		ret = 0; /* removed meanwhile: the move is done all the same */
	if (ret == 0 && out)
		ret = s3_stat(bs, dst, out);
out:
	http_response_release(&resp);
	free(full);
	free(enc);
	free(source);
	req_free(&r);
	return ret;
}

/* ---- life cycle ---- */

static int s3_check(struct blob_store *bs, unsigned deadline_s, char *err, size_t errlen)
{
	struct blob_s3 *s = s3_of(bs);
	struct http_request hq = { .quiet = 1, .deadline_ms = deadline_s * 1000u,
				   .body_max = S3_LIST_BODY_MAX };
	struct http_response resp;
	struct s3_req r = { .s = s, .method = "GET" };
	char why[160] = "", *pre = http_escape(s->url.prefix, 0);
	int ret;

	hq.errbuf = why;
	hq.errlen = sizeof(why);
	r.path = obj_path(s, NULL);
	if (!pre || !r.path || asprintf(&r.query, "delimiter=%%2F&list-type=2&max-keys=1&prefix=%s",
					pre) < 0) {
		r.query = NULL;
		free(pre);
		req_free(&r);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	free(pre);
	ret = s3_run(&r, "(bucket)", &hq, &resp);
	req_free(&r);
	if (ret < 0) {
		snprintf(err, errlen, "cannot reach the store at %s: %s", s->base_url, why);
		return ret;
	}
	long st = resp.status;
	pthread_mutex_lock(&s->lock);
	if (st == 404) {
		snprintf(err, errlen, "bucket '%s' does not exist at %s", s->url.bucket, s->base_url);
		ret = -ENOENT;
	} else if (st == 401 || st == 403) {
		snprintf(err, errlen, "the store refused access (HTTP %ld %s); credentials used: %s",
			 st, resp.error_code, s->source[0] ? s->source : "none");
		ret = -EACCES;
	} else if (st < 200 || st >= 300) {
		snprintf(err, errlen, "the store at %s answered HTTP %ld %s", s->base_url, st,
			 resp.error_code);
		ret = -EIO;
	}
	pthread_mutex_unlock(&s->lock);
	http_response_release(&resp);
	return ret;
}

static void s3_destroy(struct blob_store *bs)
{
	struct blob_s3 *s = s3_of(bs);

	http_destroy(s->http);
	http_destroy(s->imds_http);
	s3_cred_clear(s);
	s3_url_release(&s->url);
	free(s->base_url);
	free(s->host);
	free(s->path_base);
	free(s->region);
	free(s->ca_file);
	free(s->imds);
	free(s->base.id);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static int s3_down(struct blob_store *bs)
{
	return http_down(s3_of(bs)->http);
}

static void s3_stats(struct blob_store *bs, struct blob_stats *out)
{
	http_add_stats(s3_of(bs)->http, out);
}

static void s3_stop(struct blob_store *bs)
{
	http_stop(s3_of(bs)->http);
	http_stop(s3_of(bs)->imds_http);
}

static const struct blob_ops s3_ops = {
	.name = "s3",
	.flags = BLOB_PINNED_READS, /* If-Match, and the ETag checked before any byte */
	.destroy = s3_destroy,
	.list = s3_list,
	.stat = s3_stat,
	.read_to = s3_read_to,
	.create = s3_create,
	.replace = s3_replace,
	.check = s3_check,
	.down = s3_down,
	.stop = s3_stop,
	.stats = s3_stats,
	.put = s3_put,
	.upload_begin = s3_upload_begin,
	.upload_part = s3_upload_part,
	.upload_commit = s3_upload_commit,
	.upload_abort = s3_upload_abort,
	.remove = s3_remove,
	.move = s3_move,
};

/* "scheme://host[:port]" of an endpoint URL, and its Host header. */
static int endpoint_split(const char *ep, char **base, char **host)
{
	const char *p = strstr(ep, "://");

	if (!p || (strncmp(ep, "http://", 7) != 0 && strncmp(ep, "https://", 8) != 0))
		return -EINVAL;
	p += 3;
	size_t hlen = strcspn(p, "/?#");
	if (hlen == 0)
		return -EINVAL;
	*host = strndup(p, hlen);
	*base = strndup(ep, (size_t)(p - ep) + hlen);
	return *host && *base ? 0 : -ENOMEM;
}

int blob_s3_open(const char *url, const struct blob_options *opt, struct blob_store **out,
		 char *err, size_t errlen)
{
	struct blob_s3 *s = calloc(1, sizeof(*s));
	int ret;

	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&s->lock, NULL);
	s->base.ops = &s3_ops;
	ret = s3_url_parse(url, &s->url, err, errlen);
	if (ret < 0)
		goto fail;
	ret = s3_creds_choose(s, err, errlen);
	if (ret < 0)
		goto fail;
	const char *ep = getenv("AWS_ENDPOINT_URL_S3");
	if (!ep || !*ep)
		ep = getenv("AWS_ENDPOINT_URL");
	if (ep && *ep) {
		if (endpoint_split(ep, &s->base_url, &s->host) < 0) {
			snprintf(err, errlen, "bad S3 endpoint '%.200s' (expected http[s]://HOST[:PORT])",
				 ep);
			ret = -EINVAL;
			goto fail;
		}
		s->path_base = NULL;
		if (asprintf(&s->path_base, "/%s", s->url.bucket) < 0)
			s->path_base = NULL;
	} else if (strchr(s->url.bucket, '.')) {
		/* a dotted bucket cannot be a TLS host name: path-style */
		if (asprintf(&s->host, "s3.%s.amazonaws.com", s->region) < 0)
			s->host = NULL;
		if (asprintf(&s->base_url, "https://%s", s->host ? s->host : "") < 0)
			s->base_url = NULL;
		if (asprintf(&s->path_base, "/%s", s->url.bucket) < 0)
			s->path_base = NULL;
	} else {
		if (asprintf(&s->host, "%s.s3.%s.amazonaws.com", s->url.bucket, s->region) < 0)
			s->host = NULL;
		if (asprintf(&s->base_url, "https://%s", s->host ? s->host : "") < 0)
			s->base_url = NULL;
		s->path_base = strdup("");
	}
	const char *imds = getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT");
	s->imds = strdup(imds && *imds ? imds : S3_IMDS_DEFAULT);
	if (s->imds && s->imds[0] && s->imds[strlen(s->imds) - 1] == '/')
		s->imds[strlen(s->imds) - 1] = '\0';
	const char *ca_source;
	const char *ca = blob_ca_file(opt, "AWS_CA_BUNDLE", &ca_source);
	if (ca && !(s->ca_file = strdup(ca)))
		goto nomem;
	if (!s->host || !s->base_url || !s->path_base || !s->imds)
		goto nomem;
	struct http_config hc = { 0 };
	s->timeout_s = opt->timeout_s ? opt->timeout_s : 60;
	hc.deadline_ms = s->timeout_s * 1000u;
	hc.connect_timeout_ms = 10000;
	hc.stall_ms = 15000;
	hc.insecure = opt->insecure;
	hc.ca_file = s->ca_file;
	hc.ca_source = ca_source;
	if (http_create(&hc, &s->http) < 0)
		goto nomem;
	struct http_config ic = { .deadline_ms = 2000, .connect_timeout_ms = 1000,
				  .stall_ms = 2000 };
	if (http_create(&ic, &s->imds_http) < 0)
		goto nomem;
	if (asprintf(&s->base.id, "s3://%s/%s", s->url.bucket, s->url.prefix) < 0) {
		s->base.id = NULL;
		goto nomem;
	}
	if (opt->insecure)
		LOG_WARN("TLS certificates are not verified (--insecure)");
	*out = &s->base;
	return 0;
nomem:
	snprintf(err, errlen, "out of memory");
	ret = -ENOMEM;
fail:
	s3_destroy(&s->base);
	return ret;
}
