/*
 * log.c - one-line structured logs on stderr: logfmt by default
 * (ts= level= mod= event= k=v...), JSON with THAW_LOG_FORMAT=json.
 * THAW_LOG="info,loader:debug" sets the global and per-module levels.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/thaw_common.h"

#define MAX_MODS 16

static struct {
    int level;
    int json;
    int n_mods;
    char mod[MAX_MODS][16];
    int mod_level[MAX_MODS];
} cfg = { .level = THAW_LOG_WARN };

static pthread_once_t once = PTHREAD_ONCE_INIT;

static int parse_level(const char *s)
{
    static const char *names[] = { "trace", "debug", "info", "warn", "error", "off" };
    for (int i = 0; i < 6; i++) {
        if (strcasecmp(s, names[i]) == 0)
            return i;
    }
    return -1;
}

static void init_once(void)
{
    const char *f = getenv("THAW_LOG_FORMAT");
    cfg.json = f && strcasecmp(f, "json") == 0;
    const char *spec = getenv("THAW_LOG");
    if (!spec)
        return;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':');
        if (!colon) {
            int l = parse_level(tok);
            if (l >= 0)
                cfg.level = l;
            continue;
        }
        *colon = '\0';
        int l = parse_level(colon + 1);
        if (l >= 0 && cfg.n_mods < MAX_MODS) {
            snprintf(cfg.mod[cfg.n_mods], sizeof cfg.mod[0], "%s", tok);
            cfg.mod_level[cfg.n_mods++] = l;
        }
    }
}

void thaw_log_init(void)
{
    pthread_once(&once, init_once);
}

int thaw_log_enabled(int level, const char *mod)
{
    thaw_log_init();
    for (int i = 0; i < cfg.n_mods; i++) {
        if (strcmp(cfg.mod[i], mod) == 0)
            return level >= cfg.mod_level[i];
    }
    return level >= cfg.level;
}

void thaw_log_write(int level, const char *mod, const char *event, const char *fmt, ...)
{
    static const char *names[] = { "trace", "debug", "info", "warn", "error", "off" };
    char ts[40];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000);
    char rest[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rest, sizeof rest, fmt, ap);
    va_end(ap);
    const char *lv = names[level < 0 ? 0 : level > 5 ? 5 : level];
    if (!cfg.json) {
        fprintf(stderr, "ts=%s level=%s mod=%s event=%s %s\n", ts, lv, mod, event, rest);
        return;
    }
    /* JSON: the logfmt rest is carried as one escaped "msg" string. */
    char esc[4200];
    size_t j = 0;
    for (size_t i = 0; rest[i] && j + 7 < sizeof esc; i++) {
        unsigned char c = (unsigned char)rest[i];
        if (c == '"' || c == '\\') {
            esc[j++] = '\\';
            esc[j++] = (char)c;
        } else if (c < 0x20) {
            j += (size_t)snprintf(esc + j, sizeof esc - j, "\\u%04x", c);
        } else {
            esc[j++] = (char)c;
        }
    }
    esc[j] = '\0';
    fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"%s\",\"mod\":\"%s\",\"event\":\"%s\",\"msg\":\"%s\"}\n",
            ts, lv, mod, event, esc);
}
