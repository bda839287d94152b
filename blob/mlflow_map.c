/*
 * mlflow_map.c: the MLflow backend's small string map (run id to what the tree needs
 * of the run; a version to its artifact URI): chained, bounded, and when full it
 * starts afresh (what is gone is asked of the server again).
 */
#include "mlflow_store.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAP_BUCKETS 4096
#define MAP_MAX 200000

struct ml_map_entry {
	struct ml_map_entry *next;
	char *value;
	char key[];
};

struct ml_map {
	struct ml_map_entry *b[MAP_BUCKETS];
	size_t n;
};

static size_t bucket(const char *key)
{
	return blob_fnv(key, strlen(key), BLOB_FNV_INIT) % MAP_BUCKETS;
}

struct ml_map *ml_map_new(void)
{
	return calloc(1, sizeof(struct ml_map));
}

static void map_clear(struct ml_map *m)
{
	for (size_t i = 0; i < MAP_BUCKETS; i++) {
		while (m->b[i]) {
			struct ml_map_entry *e = m->b[i];
			m->b[i] = e->next;
			free(e->value);
			free(e);
		}
	}
	m->n = 0;
}

void ml_map_free(struct ml_map *m)
{
	if (m)
		map_clear(m);
	free(m);
}

char *ml_map_get(struct ml_map *m, const char *key)
{
	for (struct ml_map_entry *e = m->b[bucket(key)]; e; e = e->next)
		if (strcmp(e->key, key) == 0)
			return strdup(e->value);
	return NULL;
}

int ml_map_put(struct ml_map *m, const char *key, const char *value)
{
	struct ml_map_entry **head = &m->b[bucket(key)];
	char *v = strdup(value);

	if (!v)
		return -ENOMEM;
	for (struct ml_map_entry *e = *head; e; e = e->next)
		if (strcmp(e->key, key) == 0) {
			free(e->value);
			e->value = v;
			return 0;
		}
	if (m->n >= MAP_MAX)
		map_clear(m); /* a bound, not a cache policy: what is gone is asked again */
	struct ml_map_entry *e = malloc(sizeof(*e) + strlen(key) + 1);
	if (!e) {
		free(v);
		return -ENOMEM;
	}
	memcpy(e->key, key, strlen(key) + 1);
	e->value = v;
	e->next = *head;
	*head = e;
	m->n++;
	return 0;
}

