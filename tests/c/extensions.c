/* Connects to a server that compresses (permessage-deflate), prints what
 * ws_extensions() says, and checks that compressible messages of several
 * sizes come back intact. Run by tests/c_programs.rs.
 * Usage: extensions URL
 * Prints "extensions: VALUE", then "messages intact" and exits 0 when every
 * check passed. */
#define _POSIX_C_SOURCE 200809L
#include <ws.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wait.h"

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

#define MESSAGES 3

struct state {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int opened;
    int closed;
    int received;
    char *sent[MESSAGES];
    size_t sent_len[MESSAGES];
    int intact;
};

static void on_open(void *ud, ws_socket *ws) {
    struct state *s = (struct state *)ud;
    (void)ws;
    pthread_mutex_lock(&s->lock);
    s->opened = 1;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
}

static void on_message(void *ud, ws_socket *ws, const uint8_t *data, size_t len, bool is_text) {
    struct state *s = (struct state *)ud;
    (void)ws;
    pthread_mutex_lock(&s->lock);
    if (s->received < MESSAGES) {
        int i = s->received;
        if (is_text && len == s->sent_len[i] && memcmp(data, s->sent[i], len) == 0 && data[len] == 0) {
            s->intact++;
        } else {
            fprintf(stderr, "message %d differs (%zu bytes, expected %zu)\n", i, len, s->sent_len[i]);
        }
    }
    s->received++;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
}

static void on_error(void *ud, ws_socket *ws, const char *message) {
    (void)ud;
    (void)ws;
    fprintf(stderr, "on_error: %s\n", message);
}

static void on_close(void *ud, ws_socket *ws, uint16_t code, const char *reason, bool was_clean) {
    struct state *s = (struct state *)ud;
    (void)ws;
    printf("close %u \"%s\" (%s)\n", (unsigned)code, reason, was_clean ? "clean" : "not clean");
    pthread_mutex_lock(&s->lock);
    s->closed = 1;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
}

/* Waits up to wait_seconds() for *flag >= want; returns 0 on time out. */
static int wait_for(struct state *s, int *flag, int want) {
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += wait_seconds();
    pthread_mutex_lock(&s->lock);
    while (*flag < want) {
        if (pthread_cond_timedwait(&s->changed, &s->lock, &deadline) == ETIMEDOUT) break;
    }
    int ok = *flag >= want;
    pthread_mutex_unlock(&s->lock);
    return ok;
}

/* JSON-like text of exactly len bytes. */
static char *json(size_t len) {
    char *text = (char *)malloc(len + 64);
    size_t at = 0;
    int i = 0;
    CHECK(text != NULL);
    while (at < len) {
        at += (size_t)sprintf(text + at, "{\"id\":%d,\"price\":\"%d.%02d\",\"side\":\"buy\"},", i, 100 + i % 37, i % 100);
        i++;
    }
    text[len] = 0;
    return text;
}

int main(int argc, char **argv) {
    static struct state s;
    static const size_t sizes[MESSAGES] = {40, 4000, 400000};
    ws_callbacks cb;
    ws_options *o;
    ws_socket *ws;
    int i;

    if (argc != 2) {
        fprintf(stderr, "usage: %s URL\n", argv[0]);
        return 2;
    }
    pthread_mutex_init(&s.lock, NULL);
    init_changed(&s.changed);
    cb.user_data = &s;
    cb.on_open = on_open;
    cb.on_message = on_message;
    cb.on_error = on_error;
    cb.on_close = on_close;

    o = ws_options_new();
    CHECK(o != NULL);
    CHECK(ws_options_set_compression(o, true) == WS_OK);
    CHECK(ws_options_set_client_max_window_bits(o, 7) == WS_ERR_INVALID_ARGUMENT);
    CHECK(strstr(ws_last_error(), "window bits") != NULL);
    ws = ws_new_with_options(argv[1], NULL, 0, &cb, o);
    ws_options_free(o);
    CHECK(ws != NULL);
    CHECK(wait_for(&s, &s.opened, 1));
    printf("extensions: %s\n", ws_extensions(ws));
    fflush(stdout);

    for (i = 0; i < MESSAGES; i++) {
        s.sent[i] = json(sizes[i]);
        s.sent_len[i] = sizes[i];
        CHECK(ws_send_string(ws, s.sent[i], s.sent_len[i]) == WS_OK);
    }
    CHECK(wait_for(&s, &s.received, MESSAGES));
    CHECK(s.intact == MESSAGES);
    printf("messages intact\n");
    CHECK(ws_close(ws, 1000, "done") == WS_OK);
    CHECK(wait_for(&s, &s.closed, 1));
    ws_free(ws);
    for (i = 0; i < MESSAGES; i++) free(s.sent[i]);
    return 0;
}
