/*
 * thaw_test.h - the minimal test harness every test_M binary shares: a table
 * of cases, each run in a forked child so a crash names its case, checks
 * that print both operands and file:line, and SKIP (exit 77, as CTest's
 * SKIP_RETURN_CODE). `test_M` runs all, `test_M CASE` one, `--list` lists,
 * `--no-fork` runs in-process (for gdb).
 */
#ifndef THAW_TEST_H
#define THAW_TEST_H

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/thaw_common.h"

struct test_case {
    const char *name;
    void (*fn)(void);
};

#define TEST_FAIL_EXIT 1
#define TEST_SKIP_EXIT 77

#define CHECK(c)                                                                               \
    do {                                                                                       \
        if (!(c)) {                                                                            \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c);              \
            exit(TEST_FAIL_EXIT);                                                              \
        }                                                                                      \
    } while (0)

#define CHECK_EQ(a, b)                                                                         \
    do {                                                                                       \
        long long a_ = (long long)(a), b_ = (long long)(b);                                    \
        if (a_ != b_) {                                                                        \
            fprintf(stderr, "%s:%d: CHECK_EQ(%s, %s): %lld != %lld\n", __FILE__, __LINE__, #a,  \
                    #b, a_, b_);                                                               \
            exit(TEST_FAIL_EXIT);                                                              \
        }                                                                                      \
    } while (0)

#define CHECK_STR_EQ(a, b)                                                                     \
    do {                                                                                       \
        const char *a_ = (a), *b_ = (b);                                                       \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                               \
            fprintf(stderr, "%s:%d: CHECK_STR_EQ(%s, %s): \"%s\" != \"%s\"\n", __FILE__,        \
                    __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");                  \
            exit(TEST_FAIL_EXIT);                                                              \
        }                                                                                      \
    } while (0)

/* The error message must contain a substring (errors name file and chunk). */
#define CHECK_ERRMSG_HAS(sub)                                                                  \
    do {                                                                                       \
        if (!strstr(thaw_errmsg(), (sub))) {                                                   \
            fprintf(stderr, "%s:%d: error message \"%s\" lacks \"%s\"\n", __FILE__, __LINE__,   \
                    thaw_errmsg(), (sub));                                                     \
            exit(TEST_FAIL_EXIT);                                                              \
        }                                                                                      \
    } while (0)

#define CHECK_OK(x)                                                                            \
    do {                                                                                       \
        int rc_ = (x);                                                                         \
        if (rc_ != 0) {                                                                        \
            fprintf(stderr, "%s:%d: %s failed: %d %s: %s\n", __FILE__, __LINE__, #x, rc_,       \
                    thaw_strerror(rc_), thaw_errmsg());                                        \
            exit(TEST_FAIL_EXIT);                                                              \
        }                                                                                      \
    } while (0)

/* x must fail with code (prints the message it gave). */
#define CHECK_FAILS(x, code)                                                                   \
    do {                                                                                       \
        int rc_ = (x);                                                                         \
        if (rc_ != (code)) {                                                                   \
            fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s); msg: %s\n",         \
                    __FILE__, __LINE__, #x, rc_, thaw_strerror(rc_), (code),                   \
                    thaw_strerror(code), thaw_errmsg());                                       \
            exit(TEST_FAIL_EXIT);                                                              \
        }                                                                                      \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                  \
    do {                                                                                       \
        double a_ = (a), b_ = (b);                                                             \
        if (!(fabs(a_ - b_) <= (tol))) {                                                       \
            fprintf(stderr, "%s:%d: CHECK_NEAR(%s, %s): %g vs %g (tol %g)\n", __FILE__,         \
                    __LINE__, #a, #b, a_, b_, (double)(tol));                                  \
            exit(TEST_FAIL_EXIT);                                                              \
        }                                                                                      \
    } while (0)

#define CHECK_MEM_EQ(a, b, n)                                                                  \
    do {                                                                                       \
        const unsigned char *a_ = (const void *)(a), *b_ = (const void *)(b);                  \
        size_t n_ = (n);                                                                       \
        for (size_t i_ = 0; i_ < n_; i_++) {                                                   \
            if (a_[i_] != b_[i_]) {                                                            \
                fprintf(stderr, "%s:%d: CHECK_MEM_EQ(%s, %s): differ at byte %zu of %zu\n",     \
                        __FILE__, __LINE__, #a, #b, i_, n_);                                   \
                exit(TEST_FAIL_EXIT);                                                          \
            }                                                                                  \
        }                                                                                      \
    } while (0)

#define SKIP(why)                                                                              \
    do {                                                                                       \
        printf("SKIP: %s\n", (why));                                                           \
        fflush(stdout);                                                                        \
        exit(TEST_SKIP_EXIT);                                                                  \
    } while (0)

/* Run the table; returns the process exit code. */
static inline int test_main(int argc, char **argv, const struct test_case *cases, size_t n)
{
    int no_fork = 0;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--list") == 0) {
            for (size_t k = 0; k < n; k++)
                printf("%s\n", cases[k].name);
            return 0;
        } else if (strcmp(argv[i], "--no-fork") == 0) {
            no_fork = 1;
        } else {
            only = argv[i];
        }
    }
    int failed = 0, ran = 0, skipped = 0;
    for (size_t k = 0; k < n; k++) {
        if (only && strcmp(only, cases[k].name) != 0)
            continue;
        ran++;
        fflush(stdout);
        fflush(stderr);
        int status = 0;
        if (no_fork) {
            cases[k].fn();
            printf("ok   %s\n", cases[k].name);
            continue;
        }
        pid_t pid = fork();
        if (pid == 0) {
            cases[k].fn();
            fflush(stdout);
            _exit(0);
        }
        waitpid(pid, &status, 0);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            printf("ok   %s\n", cases[k].name);
        } else if (WIFEXITED(status) && WEXITSTATUS(status) == TEST_SKIP_EXIT) {
            printf("skip %s\n", cases[k].name);
            skipped++;
        } else {
            printf("FAIL %s (%s %d)\n", cases[k].name,
                   WIFSIGNALED(status) ? "signal" : "exit",
                   WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
            failed++;
        }
    }
    if (only && ran == 0) {
        fprintf(stderr, "no test case named '%s'\n", only);
        return 2;
    }
    printf("%d cases, %d failed, %d skipped\n", ran, failed, skipped);
    if (failed)
        return 1;
    return skipped == ran && ran > 0 ? TEST_SKIP_EXIT : 0;
}

/* A fresh temporary directory under $TMPDIR (or /tmp); caller removes it. */
static inline char *test_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/thaw-test-XXXXXX", base && base[0] ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    CHECK(d != NULL);
    return strdup(d);
}

#endif /* THAW_TEST_H */
