/*
 * test_common.c - common/: errors, sizes, atomic writes, allocation hooks.
 */
#include <errno.h>
#include <sys/stat.h>

#include "tests/thaw_test.h"

static void t_errors(void)
{
    CHECK_STR_EQ(thaw_strerror(THAW_ECHECKSUM), "checksum mismatch");
    CHECK_STR_EQ(thaw_strerror(-ENOENT), "No such file or directory");
    int rc = THAW_FAIL(THAW_EFORMAT, "file %s chunk %d", "x.bin", 3);
    CHECK_EQ(rc, THAW_EFORMAT);
    CHECK_ERRMSG_HAS("test_common.c:");
    CHECK_ERRMSG_HAS("file x.bin chunk 3");
    thaw_err_ctx("loading %s", "m");
    CHECK_ERRMSG_HAS("loading m: ");
    thaw_err_clear();
    CHECK_STR_EQ(thaw_errmsg(), "");
}

static void t_parse_size(void)
{
    uint64_t v;
    CHECK_OK(thaw_parse_size("16MiB", &v));
    CHECK_EQ(v, 16ull << 20);
    CHECK_OK(thaw_parse_size("4k", &v));
    CHECK_EQ(v, 4096);
    CHECK_OK(thaw_parse_size("123", &v));
    CHECK_EQ(v, 123);
    CHECK_FAILS(thaw_parse_size("12X", &v), THAW_EINVAL);
    CHECK_FAILS(thaw_parse_size("", &v), THAW_EINVAL);
    CHECK_FAILS(thaw_parse_size("-1", &v), THAW_EINVAL);
}

static void t_atomic_write(void)
{
    char *d = test_tmpdir();
    char p[600];
    snprintf(p, sizeof p, "%s/f.json", d);
    CHECK_OK(thaw_write_file_atomic(p, "{\"a\":1}", 7));
    char *buf;
    size_t len;
    CHECK_OK(thaw_read_file(p, 100, &buf, &len));
    CHECK_EQ(len, 7);
    CHECK_STR_EQ(buf, "{\"a\":1}");
    thaw_free(buf);
    CHECK_FAILS(thaw_read_file(p, 3, &buf, &len), THAW_ELIMIT);
    /* a write into a missing directory fails cleanly and leaves nothing */
    snprintf(p, sizeof p, "%s/missing/f.json", d);
    CHECK(thaw_write_file_atomic(p, "x", 1) == -ENOENT);
    CHECK_OK(thaw_rm_rf(d));
    struct stat st;
    CHECK(stat(d, &st) != 0);
    free(d);
}

static void t_alloc_fail(void)
{
    thaw_alloc_fail_after(1);
    void *a = thaw_malloc(10);
    void *b = thaw_malloc(10);
    CHECK(a != NULL);
    CHECK(b == NULL);
    thaw_alloc_fail_after(-1);
    b = thaw_malloc(10);
    CHECK(b != NULL);
    thaw_free(a);
    thaw_free(b);
}

static void t_mkdir_p(void)
{
    char *d = test_tmpdir();
    char p[600];
    snprintf(p, sizeof p, "%s/a/b/c", d);
    CHECK_OK(thaw_mkdir_p(p, 0755));
    CHECK_OK(thaw_mkdir_p(p, 0755)); /* idempotent */
    struct stat st;
    CHECK(stat(p, &st) == 0 && S_ISDIR(st.st_mode));
    CHECK_OK(thaw_rm_rf(d));
    free(d);
}

static const struct test_case cases[] = {
    { "errors", t_errors },         { "parse_size", t_parse_size },
    { "atomic_write", t_atomic_write }, { "alloc_fail", t_alloc_fail },
    { "mkdir_p", t_mkdir_p },
};

int main(int argc, char **argv)
{
    return test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
