/*
 * test_mlflow.c: the MLflow backend's pure parts: the tracking server's answers (with
 * its quirks: string versions, "files" absent when empty, page tokens) and artifact
 * URIs told apart.
 */
#include "check.h"
#include "../../blob/mlflow.h"

#include <errno.h>

#define S(x) x, strlen(x)

static void test_experiments_and_runs(void)
{
	struct ml_exp *e = NULL;
	size_t n = 0;
	char *next = NULL;

	CHECK_EQ(ml_parse_experiments(S("{\"experiments\": [{\"experiment_id\": \"0\", "
					"\"name\": \"Default\", \"artifact_location\": "
					"\"mlflow-artifacts:/0\"}, {\"experiment_id\": \"7\", "
					"\"name\": \"/Users/a@b.c/birds\"}, {\"name\": \"no id\"}, "
					"{\"experiment_id\": 9, \"name\": \"num\"}], "
					"\"next_page_token\": \"tok=1\"}"), &e, &n, &next), 0);
	CHECK_EQ(n, 3);
	CHECK(n == 3 && strcmp(e[0].id, "0") == 0 && strcmp(e[1].name, "/Users/a@b.c/birds") == 0 &&
	      strcmp(e[2].id, "9") == 0);
	CHECK(next && strcmp(next, "tok=1") == 0);
	CHECK(n == 3 && ml_exp_name_ok(e[0].name) && !ml_exp_name_ok(e[1].name));
	free(next);
	/* the last page has no token */
	CHECK_EQ(ml_parse_experiments(S("{}"), &e, &n, &next), 0);
	CHECK(next == NULL && n == 3);
	ml_exps_free(e, n);
	CHECK_EQ(ml_parse_experiments(S("[1, 2]"), &e, &n, &next), -EBADMSG);
	CHECK_EQ(ml_parse_experiments(S("{\"experiments\": "), &e, &n, &next), -EBADMSG);

	struct ml_run *r = NULL;
	size_t nr = 0;
	CHECK_EQ(ml_parse_runs(S("{\"runs\": [{\"info\": {\"run_id\": \"a1\", \"run_uuid\": \"a1\", "
				 "\"run_name\": \"brave-owl-42\", \"experiment_id\": \"7\", "
				 "\"status\": \"FINISHED\", \"start_time\": 1700000000123, "
				 "\"end_time\": 1700000100000, \"artifact_uri\": "
				 "\"mlflow-artifacts:/7/a1/artifacts\"}, \"data\": {}}, "
				 "{\"info\": {\"run_id\": \"b2\"}}, {\"data\": {}}]}"),
			       &r, &nr, &next), 0);
	CHECK_EQ(nr, 1); /* a run without an artifact_uri is of no use to the tree */
	CHECK(nr == 1 && strcmp(r[0].name, "brave-owl-42") == 0 &&
	      r[0].start_ms == 1700000000123LL && strcmp(r[0].status, "FINISHED") == 0 &&
	      strcmp(r[0].exp_id, "7") == 0);
	CHECK(next == NULL);
	ml_runs_free(r, nr);

	struct ml_run one;
	CHECK_EQ(ml_parse_run(S("{\"run\": {\"info\": {\"run_id\": \"c3\", \"experiment_id\": \"1\", "
				"\"artifact_uri\": \"file:///tmp/x/1/c3/artifacts\"}}}"), &one), 0);
	CHECK(strcmp(one.id, "c3") == 0 && one.name && one.name[0] == '\0');
	ml_run_release(&one);
	CHECK_EQ(ml_parse_run(S("{\"error_code\": \"RESOURCE_DOES_NOT_EXIST\"}"), &one), -EBADMSG);
}

static void test_files_models_versions(void)
{
	struct ml_file *f = NULL;
	size_t n = 0;
	char *next = NULL;

	/* "files" is absent from an empty listing */
	CHECK_EQ(ml_parse_files(S("{\"root_uri\": \"mlflow-artifacts:/1/r/artifacts\"}"), &f, &n,
				&next), 0);
	CHECK_EQ(n, 0);
	CHECK_EQ(ml_parse_files(S("{\"files\": [{\"path\": \"outputs/model.pth\", \"is_dir\": false, "
				  "\"file_size\": 46827}, {\"path\": \"outputs/ck\", \"is_dir\": true},"
				  " {\"path\": \"outputs/..\", \"is_dir\": true}, {\"path\": "
				  "\"big\", \"file_size\": \"5000000000\"}, {\"is_dir\": false}]}"),
				&f, &n, &next), 0);
	CHECK_EQ(n, 3);
	CHECK(n == 3 && strcmp(f[0].name, "model.pth") == 0 && f[0].size == 46827 && !f[0].is_dir);
	CHECK(n == 3 && strcmp(f[1].name, "ck") == 0 && f[1].is_dir);
	CHECK(n == 3 && f[2].size == 5000000000ULL);
	ml_files_free(f, n);

	char **names = NULL;
	n = 0;
	CHECK_EQ(ml_parse_models(S("{\"registered_models\": [{\"name\": \"pt-dnn\", \"aliases\": "
				   "[{\"alias\": \"champion\", \"version\": \"3\"}]}, {\"name\": \"\"}], "
				   "\"next_page_token\": \"eyJvZmZzZXQiOiAxMDB9\"}"),
				 &names, &n, &next), 0);
	CHECK(n == 1 && strcmp(names[0], "pt-dnn") == 0);
	CHECK(next && strcmp(next, "eyJvZmZzZXQiOiAxMDB9") == 0);
	free(next);
	ml_names_free(names, n);

	struct ml_version *v = NULL;
	n = 0;
	CHECK_EQ(ml_parse_versions(S("{\"model_versions\": [{\"name\": \"m\", \"version\": \"3\", "
				     "\"creation_timestamp\": 1700000000000, \"current_stage\": "
				     "\"Production\", \"source\": \"mlflow-artifacts:/1/r/artifacts/"
				     "model\", \"run_id\": \"r\", \"status\": \"READY\"}, {\"name\": "
				     "\"m\", \"version\": \"03\", \"source\": \"x\"}, {\"name\": \"m\", "
				     "\"version\": 4, \"source\": \"s3://b/p\", \"status\": "
				     "\"PENDING_REGISTRATION\"}]}"), &v, &n, &next), 0);
	CHECK_EQ(n, 2); /* "03" is not a version number */
	CHECK(n == 2 && v[0].version == 3 && strcmp(v[0].stage, "Production") == 0 &&
	      strcmp(v[0].status, "READY") == 0 && v[0].created_ms == 1700000000000LL);
	CHECK(n == 2 && v[1].version == 4 && v[1].run_id[0] == '\0');
	ml_versions_free(v, n);

	struct ml_alias *a = NULL;
	n = 0;
	CHECK_EQ(ml_parse_aliases(S("{\"registered_model\": {\"name\": \"m\", \"aliases\": [{\"alias\":"
				    " \"champion\", \"version\": \"3\"}, {\"alias\": \"x\"}]}}"), &a, &n), 0);
	CHECK(n == 1 && strcmp(a[0].name, "champion") == 0 && a[0].version == 3);
	free(a);

	char *uri = NULL;
	CHECK_EQ(ml_parse_download_uri(S("{\"artifact_uri\": \"runs:/r/model\"}"), &uri), 0);
	CHECK(uri && strcmp(uri, "runs:/r/model") == 0);
	free(uri);
	int ver = 0;
	CHECK_EQ(ml_parse_created_version(S("{\"model_version\": {\"version\": \"12\"}}"), &ver), 0);
	CHECK_EQ(ver, 12);
	char code[64];
	ml_parse_error(S("{\"error_code\": \"RESOURCE_DOES_NOT_EXIST\", \"message\": \"x\"}"), code,
		       sizeof(code));
	CHECK(strcmp(code, "RESOURCE_DOES_NOT_EXIST") == 0);
	ml_parse_error(S("<html>500</html>"), code, sizeof(code));
	CHECK(code[0] == '\0');
}

static void loc_is(const char *uri, enum ml_loc_kind kind, const char *root, const char *prefix)
{
	struct ml_loc l;
	int ret = ml_loc_parse(uri, &l);

	CHECK_EQ(ret, 0);
	if (ret < 0) {
		fprintf(stderr, "  for %s\n", uri);
		return;
	}
	CHECK_EQ(l.kind, kind);
	if (root)
		CHECK(l.root && strcmp(l.root, root) == 0);
	if (prefix)
		CHECK(l.prefix && strcmp(l.prefix, prefix) == 0);
	if ((root && (!l.root || strcmp(l.root, root))) || (prefix && strcmp(l.prefix, prefix)))
		fprintf(stderr, "  for %s: root %s prefix %s\n", uri, l.root ? l.root : "-",
			l.prefix ? l.prefix : "-");
	ml_loc_release(&l);
}

static void test_artifact_locations(void)
{
	loc_is("mlflow-artifacts:/1/abc/artifacts", ML_LOC_PROXIED, NULL, "1/abc/artifacts/");
	loc_is("mlflow-artifacts://srv:5000/1/abc/artifacts/", ML_LOC_PROXIED, NULL,
	       "1/abc/artifacts/");
	loc_is("file:///tmp/mlruns/1/abc/artifacts", ML_LOC_DIRECT, "file:///",
	       "tmp/mlruns/1/abc/artifacts/");
	loc_is("/srv/mlruns/1/abc/artifacts", ML_LOC_DIRECT, "file:///", "srv/mlruns/1/abc/artifacts/");
	loc_is("wasbs://art@acct.blob.core.windows.net/mlflow/1/abc/artifacts", ML_LOC_DIRECT,
	       "wasbs://art@acct.blob.core.windows.net/", "mlflow/1/abc/artifacts/");
	loc_is("https://acct.blob.core.windows.net/art/mlflow/1", ML_LOC_DIRECT,
	       "https://acct.blob.core.windows.net/art/", "mlflow/1/");
	loc_is("http://127.0.0.1:10000/devstoreaccount1/art/mlflow/1", ML_LOC_DIRECT,
	       "http://127.0.0.1:10000/devstoreaccount1/art/", "mlflow/1/");
	loc_is("s3://bucket/mlflow/1/abc/artifacts", ML_LOC_DIRECT, "s3://bucket/",
	       "mlflow/1/abc/artifacts/");
	loc_is("s3://bucket", ML_LOC_DIRECT, "s3://bucket/", "");
	struct ml_loc l;
	CHECK_EQ(ml_loc_parse("runs:/0123abcd/model/data", &l), 0);
	CHECK(l.kind == ML_LOC_RUN && strcmp(l.run_id, "0123abcd") == 0 &&
	      strcmp(l.prefix, "model/data/") == 0);
	ml_loc_release(&l);
	loc_is("dbfs:/databricks/mlflow/1", ML_LOC_OTHER, NULL, NULL);
	loc_is("gs://bucket/x", ML_LOC_OTHER, NULL, NULL);
	/* never a path out of the location, never a query (a SAS) */
	CHECK_EQ(ml_loc_parse("mlflow-artifacts:/1/../../etc", &l), -EINVAL);
	CHECK_EQ(ml_loc_parse("file:///tmp/./x", &l), -EINVAL);
	CHECK_EQ(ml_loc_parse("https://acct.blob.core.windows.net/c/p?sig=x", &l), -EINVAL);
	CHECK_EQ(ml_loc_parse("file://host/share", &l), -EINVAL);
	CHECK_EQ(ml_loc_parse("http://127.0.0.1:10000/devstoreaccount1", &l), -EINVAL);
	CHECK_EQ(ml_loc_parse("relative/path", &l), -EINVAL);
	CHECK_EQ(ml_loc_parse("runs:/", &l), -EINVAL);
}

int main(void)
{
	RUN(test_experiments_and_runs);
	RUN(test_files_models_versions);
	RUN(test_artifact_locations);
	CHECK_DONE();
}
