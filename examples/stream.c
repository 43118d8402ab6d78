/* stream: send MIB mebibytes to URL as fast as the server takes them,
 * sending only from on_drain: no polling, and memory bounded by the high
 * mark below, however slow the server.
 * Usage: stream URL [MIB]   (default 64)
 * Build: cc -std=c99 stream.c $(pkg-config --cflags --libs ws) -lpthread */
#define _POSIX_C_SOURCE 200809L
#include <ws.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK (64 * 1024)
#define LOW_MARK (256 * 1024)      /* on_drain when bufferedAmount falls to this */
#define HIGH_MARK (4 * 1024 * 1024) /* stop sending above this */

struct stream {
    uint8_t chunk[CHUNK];
    uint64_t target, sent, drains;
    int closing;
    pthread_mutex_t lock;
    pthread_cond_t ended;
    int done, ok;
};

/* Runs on the loop's thread, from on_open and on_drain only. */
static void produce(struct stream *s, ws_socket *ws) {
    while (s->sent < s->target && ws_buffered_amount(ws) <= HIGH_MARK) {
        if (ws_send_bytes(ws, s->chunk, CHUNK) != WS_OK) return;
        s->sent += CHUNK;
    }
    if (s->sent >= s->target && !s->closing) {
        s->closing = 1;
        ws_close(ws, 1000, "all sent"); /* goes out after every byte sent */
    }
}

static void on_open(void *ud, ws_socket *ws) { produce(ud, ws); }

static void on_drain(void *ud, ws_socket *ws) {
    struct stream *s = ud;
    s->drains++;
    produce(s, ws);
}

static void on_error(void *ud, ws_socket *ws, const char *message) {
    (void)ud;
    fprintf(stderr, "error: %s (cause %d, errno %d)\n", message, ws_failure_cause(ws), ws_failure_errno(ws));
}

static void on_close(void *ud, ws_socket *ws, uint16_t code, const char *reason, bool was_clean) {
    struct stream *s = ud;
    (void)ws;
    (void)reason;
    pthread_mutex_lock(&s->lock);
    s->ok = was_clean && code == 1000;
    s->done = 1;
    pthread_cond_signal(&s->ended);
    pthread_mutex_unlock(&s->lock);
}

int main(int argc, char **argv) {
    static struct stream s;
    ws_callbacks cb = {&s, on_open, NULL, on_error, on_close};
    ws_options *o = ws_options_new();
    ws_socket *ws;
    if (argc < 2) {
        fprintf(stderr, "usage: stream URL [MIB]\n");
        return 2;
    }
    s.target = (uint64_t)(argc > 2 ? strtoull(argv[2], NULL, 10) : 64) << 20;
    memset(s.chunk, 'x', sizeof s.chunk);
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.ended, NULL);
    ws_options_set_on_drain(o, on_drain, LOW_MARK);
    ws = ws_new_with_options(argv[1], NULL, 0, &cb, o);
    ws_options_free(o);
    if (!ws) {
        fprintf(stderr, "ws_new: %s\n", ws_last_error());
        return 1;
    }
    pthread_mutex_lock(&s.lock);
    while (!s.done) pthread_cond_wait(&s.ended, &s.lock);
    pthread_mutex_unlock(&s.lock);
    printf("sent %llu MiB in %llu messages with %llu on_drain calls\n", (unsigned long long)(s.sent >> 20),
           (unsigned long long)(s.sent / CHUNK), (unsigned long long)s.drains);
    ws_free(ws);
    return s.ok ? 0 : 1;
}
