/*
 * azure_xml.c: the XML answers of Azure Blob, read with expat: List Blobs pages and
 * error bodies. Elements are matched by their full path in the document (a <Name>
 * counts only as the child of <Blob> or <BlobPrefix>), so user metadata that happens
 * to use the same element names cannot inject entries. The parsed document never
 * leaves this file.
 */
#include "azure.h"
#include "blob_private.h"

#include <ctype.h>
#include <errno.h>
#include <expat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XML_PATH_MAX 512
#define XML_TEXT_MAX (64u << 10)

#define P_BLOB "EnumerationResults/Blobs/Blob"
#define P_PREFIX "EnumerationResults/Blobs/BlobPrefix"

struct xml_state {
	char path[XML_PATH_MAX];	/* open elements joined by '/' */
	size_t plen;
	size_t overflow;		/* elements not in path (too deep) */
	char *text;			/* characters of the innermost element */
	size_t tlen;
	int encoded;			/* the innermost element has Encoded="true" */
	int failed;
	/* List Blobs */
	const char *prefix;
	size_t prefix_len;
	struct blob_list *out;
	char *next;
	char *name;
	int name_encoded;
	unsigned long long size;
	long long mtime;
	char etag[BLOB_ETAG_MAX];
	/* errors */
	char code[64];
};

static void on_start(void *ud, const XML_Char *el, const XML_Char **attrs)
{
	struct xml_state *x = ud;
	size_t n = strlen(el);

	if (x->overflow || x->plen + n + 2 > sizeof(x->path)) {
		x->overflow++;
		return;
	}
	if (x->plen)
		x->path[x->plen++] = '/';
	memcpy(x->path + x->plen, el, n + 1);
	x->plen += n;
	x->tlen = 0;
	x->encoded = 0;
	for (int i = 0; attrs[i]; i += 2)
		if (strcmp(attrs[i], "Encoded") == 0 && strcmp(attrs[i + 1], "true") == 0)
			x->encoded = 1;
	if (strcmp(x->path, P_BLOB) == 0 || strcmp(x->path, P_PREFIX) == 0) {
		free(x->name);
		x->name = NULL;
		x->size = 0;
		x->mtime = 0;
		x->etag[0] = '\0';
	}
}

static void on_text(void *ud, const XML_Char *s, int len)
{
	struct xml_state *x = ud;

	if (x->overflow || x->failed)
		return;
	if (x->tlen + (size_t)len + 1 > XML_TEXT_MAX) {
		x->failed = 1;
		return;
	}
	char *nt = realloc(x->text, x->tlen + (size_t)len + 1);
	if (!nt) {
		x->failed = 1;
		return;
	}
	memcpy(nt + x->tlen, s, (size_t)len);
	x->text = nt;
	x->tlen += (size_t)len;
	x->text[x->tlen] = '\0';
}

/* Adds the entry just read, named relative to the listing's prefix. */
static void emit(struct xml_state *x, int is_dir)
{
	struct blob_entry e = { 0 };
	char *name = x->name;

	if (!name || !x->out)
		return; /* not a listing (an error body may look like one) */
	if (x->name_encoded)
		blob_pct_decode(name, 0);
	if (strncmp(name, x->prefix, x->prefix_len) != 0)
		return; /* not under the prefix asked for: never shown */
	name += x->prefix_len;
	size_t n = strlen(name);
	if (is_dir && n > 0 && name[n - 1] == '/')
		name[--n] = '\0';
	if (!is_dir && n == 0)
		return; /* a blob named like the folder itself ("runs/") */
	e.name = name;
	e.is_dir = is_dir;
	if (!is_dir) {
		e.size = x->size;
		e.mtime.tv_sec = (time_t)x->mtime;
		/* listings give the etag bare, headers quoted: keep them quoted */
		if (x->etag[0] == '"')
			snprintf(e.etag, sizeof(e.etag), "%s", x->etag);
		else
			snprintf(e.etag, sizeof(e.etag), "\"%.*s\"", BLOB_ETAG_MAX - 3, x->etag);
	}
	if (blob_list_add(x->out, &e) < 0)
		x->failed = 1;
}

static void on_end(void *ud, const XML_Char *el)
{
	struct xml_state *x = ud;
	const char *t = x->text && x->tlen ? x->text : "";

	(void)el;
	if (x->overflow) {
		x->overflow--;
		return;
	}
	if (strcmp(x->path, P_BLOB "/Name") == 0 || strcmp(x->path, P_PREFIX "/Name") == 0) {
		free(x->name);
		x->name = strdup(t);
		x->name_encoded = x->encoded;
		if (!x->name)
			x->failed = 1;
	} else if (strcmp(x->path, P_BLOB "/Properties/Content-Length") == 0) {
		x->size = strtoull(t, NULL, 10);
	} else if (strcmp(x->path, P_BLOB "/Properties/Last-Modified") == 0) {
		x->mtime = azure_parse_date(t);
	} else if (strcmp(x->path, P_BLOB "/Properties/Etag") == 0) {
		snprintf(x->etag, sizeof(x->etag), "%s", t);
	} else if (strcmp(x->path, P_BLOB) == 0) {
		emit(x, 0);
	} else if (strcmp(x->path, P_PREFIX) == 0) {
		emit(x, 1);
	} else if (strcmp(x->path, "EnumerationResults/NextMarker") == 0) {
		free(x->next);
		x->next = strdup(t);
		if (!x->next)
			x->failed = 1;
	} else if (strcmp(x->path, "Error/Code") == 0) {
		snprintf(x->code, sizeof(x->code), "%s", t);
	}
	char *slash = strrchr(x->path, '/');
	x->plen = slash ? (size_t)(slash - x->path) : 0;
	x->path[x->plen] = '\0';
	x->tlen = 0;
}

static int xml_run(struct xml_state *x, const char *xml, size_t len)
{
	XML_Parser p = XML_ParserCreate("UTF-8");
	int ret = 0;

	if (!p)
		return -ENOMEM;
	XML_SetUserData(p, x);
	XML_SetElementHandler(p, on_start, on_end);
	XML_SetCharacterDataHandler(p, on_text);
	if (XML_Parse(p, xml, (int)len, 1) != XML_STATUS_OK || x->failed)
		ret = -EBADMSG;
	XML_ParserFree(p);
	free(x->text);
	free(x->name);
	x->text = x->name = NULL;
	return ret;
}

int azure_parse_list(const char *xml, size_t len, const char *prefix, struct blob_list *out,
		     char **next)
{
	struct xml_state x = { .prefix = prefix, .prefix_len = strlen(prefix), .out = out };
	int ret;

	*next = NULL;
	if (len > INT32_MAX)
		return -EBADMSG;
	ret = xml_run(&x, xml, len);
	if (ret == 0 && !x.next && !(x.next = strdup("")))
		ret = -ENOMEM;
	if (ret < 0) {
		free(x.next);
		return ret;
	}
	*next = x.next;
	return 0;
}

void azure_parse_error(const char *xml, size_t len, char *code, size_t size)
{
	struct xml_state x = { .prefix = "" };

	code[0] = '\0';
	if (!xml || len == 0 || len > INT32_MAX)
		return;
	if (xml_run(&x, xml, len) == 0)
		snprintf(code, size, "%s", x.code);
	free(x.next);
}
