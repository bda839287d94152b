/*
 * s3_creds.c: the S3 backend's credentials, the AWS chain in its order: environment,
 * shared files (credentials and config, AWS_PROFILE), the EC2 instance metadata
 * service with IMDSv2 tokens, none. Secrets are wiped when dropped and never logged:
 * messages name the source and the key id.
 */
#include "s3_store.h"
#include "blob_private.h"
#include "log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- credentials ---- */

void s3_cred_clear(struct blob_s3 *s)
{
	char **v[] = { &s->akid, &s->secret, &s->token };
	for (int i = 0; i < 3; i++) {
		if (*v[i]) {
			OPENSSL_cleanse(*v[i], strlen(*v[i]));
			free(*v[i]);
			*v[i] = NULL;
		}
	}
}

static int imds_sign(void *ctx, struct curl_slist **headers)
{
	const char *h = ctx;
	struct curl_slist *n = curl_slist_append(*headers, h);

	if (!n)
		return -ENOMEM;
	*headers = n;
	return 0;
}

/* One request to the metadata service; its body (heap) or NULL. */
static char *imds_get(struct blob_s3 *s, const char *method, const char *path,
		      const char *header)
{
	struct http_request hq = { .method = method, .what = "instance metadata", .quiet = 1,
				   .sign = imds_sign, .sign_ctx = (void *)header,
				   .body = "", .body_len = 0, .body_max = 64 << 10 };
	struct http_response resp;
	char *url = NULL, *body = NULL;

	if (asprintf(&url, "%s%s", s->imds, path) < 0)
		return NULL;
	hq.url = url;
	if (http_do(s->imds_http, &hq, &resp) == 0 && resp.status == 200 && resp.body)
		body = strdup(resp.body);
	if (resp.body)
		OPENSSL_cleanse(resp.body, resp.body_len);
	http_response_release(&resp);
	free(url);
	return body;
}

/* Asks the metadata service for the role's credentials (IMDSv2). Lock held. */
static int imds_fetch(struct blob_s3 *s)
{
	char hdr[1200], path[512];
	char *token = imds_get(s, "PUT", "/latest/api/token",
			       "X-aws-ec2-metadata-token-ttl-seconds: 21600");
	char *roles = NULL, *doc = NULL;
	int ret = -ENOENT;

	if (!token)
		return -ENOENT;
	snprintf(hdr, sizeof(hdr), "X-aws-ec2-metadata-token: %s", token);
	roles = imds_get(s, "GET", "/latest/meta-data/iam/security-credentials/", hdr);
	if (roles) {
		roles[strcspn(roles, "\r\n")] = '\0';
		if (roles[0] && !strchr(roles, '/') && strlen(roles) < 256) {
			snprintf(path, sizeof(path), "/latest/meta-data/iam/security-credentials/%s",
				 roles);
			doc = imds_get(s, "GET", path, hdr);
		}
	}
	cJSON *j = doc ? cJSON_Parse(doc) : NULL;
	const cJSON *ak = cJSON_GetObjectItemCaseSensitive(j, "AccessKeyId");
	const cJSON *sk = cJSON_GetObjectItemCaseSensitive(j, "SecretAccessKey");
	const cJSON *tk = cJSON_GetObjectItemCaseSensitive(j, "Token");
	const cJSON *ex = cJSON_GetObjectItemCaseSensitive(j, "Expiration");
	if (cJSON_IsString(ak) && cJSON_IsString(sk)) {
		s3_cred_clear(s);
		s->akid = strdup(ak->valuestring);
		s->secret = strdup(sk->valuestring);
		s->token = cJSON_IsString(tk) ? strdup(tk->valuestring) : NULL;
		s->expires = cJSON_IsString(ex) ? (time_t)s3_parse_time(ex->valuestring) : 0;
		if (!s->expires)
			s->expires = time(NULL) + 3600;
		s->kind = CRED_IMDS;
		snprintf(s->source, sizeof(s->source), "instance metadata (role %.64s, key %.24s)",
			 roles, s->akid ? s->akid : "");
		ret = s->akid && s->secret ? 0 : -ENOMEM;
	}
	if (j) {
		char *p = cJSON_PrintUnformatted(j);
		if (p)
			OPENSSL_cleanse(p, strlen(p));
		free(p);
		cJSON_Delete(j);
	}
	if (doc)
		OPENSSL_cleanse(doc, strlen(doc));
	OPENSSL_cleanse(token, strlen(token));
	OPENSSL_cleanse(hdr, sizeof(hdr));
	free(token);
	free(roles);
	free(doc);
	return ret;
}

/* Makes sure the credentials are current before a request: the metadata service is
 * asked at the first request, and again before its credentials expire. */
void s3_creds_ensure(struct blob_s3 *s)
{
	pthread_mutex_lock(&s->lock);
	time_t now = time(NULL);
	if (s->kind == CRED_IMDS_PENDING && now >= s->imds_next) {
		if (imds_fetch(s) == 0) {
			LOG_INFO("S3 credentials from %s", s->source);
		} else {
			/* no role here: unsigned requests, and the service asked again later */
			s->imds_next = now + 60;
			if (!s->source[0] || strncmp(s->source, "none", 4) != 0)
				LOG_INFO("no S3 credentials found (environment, shared files, "
					 "instance metadata): requests go unsigned");
			snprintf(s->source, sizeof(s->source), "none (unsigned requests)");
		}
	} else if (s->kind == CRED_IMDS && s->expires - now < S3_REFRESH_BEFORE) {
		if (imds_fetch(s) < 0)
			LOG_WARN("S3 credentials from instance metadata could not be renewed; "
				 "the current ones expire in %lld s", (long long)(s->expires - now));
	}
	pthread_mutex_unlock(&s->lock);
}

/* Chooses the credentials at open: environment, then shared files; else the
 * metadata service at the first request (no network here). */
int s3_creds_choose(struct blob_s3 *s, char *err, size_t errlen)
{
	const char *ak = getenv("AWS_ACCESS_KEY_ID"), *sk = getenv("AWS_SECRET_ACCESS_KEY");
	const char *home = getenv("HOME");
	const char *profile = getenv("AWS_PROFILE");
	char cred_path[PATH_MAX], conf_path[PATH_MAX];

	if (!profile || !*profile)
		profile = "default";
	if (getenv("AWS_SHARED_CREDENTIALS_FILE"))
		snprintf(cred_path, sizeof(cred_path), "%s", getenv("AWS_SHARED_CREDENTIALS_FILE"));
	else
		snprintf(cred_path, sizeof(cred_path), "%s/.aws/credentials", home ? home : "/");
	if (getenv("AWS_CONFIG_FILE"))
		snprintf(conf_path, sizeof(conf_path), "%s", getenv("AWS_CONFIG_FILE"));
	else
		snprintf(conf_path, sizeof(conf_path), "%s/.aws/config", home ? home : "/");

	if (ak && *ak && sk && *sk) {
		s->akid = strdup(ak);
		s->secret = strdup(sk);
		const char *tk = getenv("AWS_SESSION_TOKEN");
		s->token = tk && *tk ? strdup(tk) : NULL;
		s->kind = CRED_STATIC;
		snprintf(s->source, sizeof(s->source),
			 "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (key %.24s)", ak);
	} else if ((ak && *ak) != (sk && *sk)) {
		snprintf(err, errlen, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set "
			 "together");
		return -EINVAL;
	} else {
		const char *paths[] = { cred_path, conf_path };
		for (int i = 0; i < 2 && s->kind != CRED_STATIC; i++) {
			char *fak = s3_ini_get(paths[i], profile, i, "aws_access_key_id");
			char *fsk = s3_ini_get(paths[i], profile, i, "aws_secret_access_key");
			if (fak && fsk) {
				s->akid = fak;
				s->secret = fsk;
				s->token = s3_ini_get(paths[i], profile, i, "aws_session_token");
				s->kind = CRED_STATIC;
				snprintf(s->source, sizeof(s->source), "%.120s, profile %.32s (key %.24s)",
					 paths[i], profile, fak);
				fak = fsk = NULL;
			}
			if (fsk)
				OPENSSL_cleanse(fsk, strlen(fsk));
			free(fak);
			free(fsk);
		}
		if (s->kind != CRED_STATIC) {
			const char *off = getenv("AWS_EC2_METADATA_DISABLED");
			if (off && strcasecmp(off, "true") == 0) {
				s->kind = CRED_ANON;
				snprintf(s->source, sizeof(s->source), "none (unsigned requests)");
				LOG_INFO("no S3 credentials in the environment or the shared files: "
					 "requests go unsigned");
			} else {
				s->kind = CRED_IMDS_PENDING;
			}
		}
	}
	if (s->kind == CRED_STATIC && (!s->akid || !s->secret)) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	/* the region: environment, then the profile's */
	const char *r = getenv("AWS_REGION");
	if (!r || !*r)
		r = getenv("AWS_DEFAULT_REGION");
	if (r && *r)
		s->region = strdup(r);
	else if (!(s->region = s3_ini_get(conf_path, profile, 1, "region")))
		s->region = strdup("us-east-1");
	return s->region ? 0 : -ENOMEM;
}

