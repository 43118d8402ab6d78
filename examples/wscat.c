/* wscat: each line of standard input goes out as a text message; every event
 * is printed; end of input closes with 1000.
 * Usage: wscat URL [PROTOCOL...]
 * Build: cc -std=c99 wscat.c $(pkg-config --cflags --libs ws) -lpthread */
#define _POSIX_C_SOURCE 200809L
#include <ws.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int opened = 0, closed = 0, clean = 0;

static void on_open(void *ud, ws_socket *ws) {
    (void)ud;
    printf("open (protocol \"%s\")\n", ws_protocol(ws));
    pthread_mutex_lock(&lock);
    opened = 1;
    pthread_cond_signal(&changed);
    pthread_mutex_unlock(&lock);
}

static void on_message(void *ud, ws_socket *ws, const uint8_t *data, size_t len, bool is_text) {
    (void)ud;
    (void)ws;
    if (is_text) {
        printf("text: %s\n", (const char *)data);
    } else {
        printf("binary: %zu bytes\n", len);
    }
}

static void on_error(void *ud, ws_socket *ws, const char *message) {
    (void)ud;
    (void)ws;
    printf("error: %s\n", message);
}

static void on_close(void *ud, ws_socket *ws, uint16_t code, const char *reason, bool was_clean) {
    (void)ud;
    (void)ws;
    printf("close %u \"%s\" (%s)\n", code, reason, was_clean ? "clean" : "not clean");
    pthread_mutex_lock(&lock);
    closed = 1;
    clean = was_clean;
    pthread_cond_signal(&changed);
    pthread_mutex_unlock(&lock);
}

int main(int argc, char **argv) {
    ws_callbacks cb = {NULL, on_open, on_message, on_error, on_close};
    char line[65536];
    ws_socket *ws;
    if (argc < 2) {
        fprintf(stderr, "usage: %s URL [PROTOCOL...]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    ws = ws_new(argv[1], (const char *const *)(argv + 2), (size_t)(argc - 2), &cb);
    if (!ws) {
        fprintf(stderr, "wscat: %s\n", ws_last_error());
        return 2;
    }
    /* The connect timeout (30 s by default) bounds this wait. */
    pthread_mutex_lock(&lock);
    while (!opened && !closed) pthread_cond_wait(&changed, &lock);
    pthread_mutex_unlock(&lock);
    while (!closed && fgets(line, sizeof line, stdin)) {
        size_t len = strcspn(line, "\r\n");
        int rc = ws_send_string(ws, line, len);
        if (rc != WS_OK) printf("send: %s\n", ws_strerror(rc));
    }
    ws_close(ws, 1000, NULL);
    /* The close timeout (5 s by default) bounds this wait. */
    pthread_mutex_lock(&lock);
    while (!closed) pthread_cond_wait(&changed, &lock);
    pthread_mutex_unlock(&lock);
    ws_free(ws);
    return clean ? 0 : 1;
}
