/* echo: connect, send a text and a binary message, print every event, close.
 * Usage: echo [URL]   (default ws://127.0.0.1:9001/)
 * Build: cc -std=c99 echo.c $(pkg-config --cflags --libs ws) -lpthread */
#define _POSIX_C_SOURCE 200809L
#include <ws.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int done = 0;
static int received = 0;

static void on_open(void *ud, ws_socket *ws) {
    static const uint8_t bytes[] = {0xde, 0xad, 0xbe, 0xef};
    const char *text = "Hello from libws";
    (void)ud;
    printf("open: %s (protocol \"%s\")\n", ws_url(ws), ws_protocol(ws));
    ws_send_string(ws, text, strlen(text));
    ws_send_bytes(ws, bytes, sizeof bytes);
    printf("sent 2 messages, bufferedAmount %llu\n", (unsigned long long)ws_buffered_amount(ws));
}

static void on_message(void *ud, ws_socket *ws, const uint8_t *data, size_t len, bool is_text) {
    (void)ud;
    if (is_text) {
        printf("message (text): %s\n", (const char *)data);
    } else {
        printf("message (binary): %zu bytes\n", len);
    }
    /* Close once both echoes are back: callbacks may call into libws. */
    if (++received == 2) ws_close(ws, 1000, "done");
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
    done = 1;
    pthread_cond_signal(&changed);
    pthread_mutex_unlock(&lock);
}

int main(int argc, char **argv) {
    const char *url = argc > 1 ? argv[1] : "ws://127.0.0.1:9001/";
    ws_callbacks cb = {NULL, on_open, on_message, on_error, on_close};
    struct timespec deadline;
    ws_socket *ws = ws_new(url, NULL, 0, &cb);
    int rc = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!ws) {
        fprintf(stderr, "ws_new: %s (%s)\n", ws_last_error(), ws_strerror(ws_last_error_code()));
        return 1;
    }
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&lock);
    while (!done && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&changed, &lock, &deadline);
    pthread_mutex_unlock(&lock);
    ws_free(ws); /* no callback runs after this returns */
    return done ? 0 : 1;
}
