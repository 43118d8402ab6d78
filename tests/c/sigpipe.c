/* A C program keeps the default SIGPIPE disposition (terminate), unlike
 * Rust programs. It sends until the server's reset ends the connection: a
 * library write to the dead socket must not kill it.
 * Usage: sigpipe URL. Exit 0: on_close arrived and the process lived. */
#define _POSIX_C_SOURCE 200809L
#include <ws.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int opened = 0, closed = 0;
static unsigned code = 0;

static void on_open(void *ud, ws_socket *ws) {
    (void)ud;
    (void)ws;
    pthread_mutex_lock(&lock);
    opened = 1;
    pthread_mutex_unlock(&lock);
}

static void on_close(void *ud, ws_socket *ws, uint16_t c, const char *reason, bool was_clean) {
    (void)ud;
    (void)ws;
    (void)reason;
    (void)was_clean;
    pthread_mutex_lock(&lock);
    closed = 1;
    code = c;
    pthread_mutex_unlock(&lock);
}

static int get(int *v) {
    int r;
    pthread_mutex_lock(&lock);
    r = *v;
    pthread_mutex_unlock(&lock);
    return r;
}

int main(int argc, char **argv) {
    static unsigned char chunk[64 * 1024];
    ws_callbacks cb = {NULL, on_open, NULL, NULL, on_close};
    struct timespec pause = {0, 1000000};
    ws_socket *ws;
    int i;
    if (argc != 2) return 2;
    signal(SIGPIPE, SIG_DFL);
    ws = ws_new(argv[1], NULL, 0, &cb);
    if (!ws) return 3;
    /* Bounded: 10 s of 1 ms steps. */
    for (i = 0; i < 10000 && !get(&closed); i++) {
        if (get(&opened)) ws_send_bytes(ws, chunk, sizeof chunk);
        nanosleep(&pause, NULL);
    }
    ws_free(ws);
    if (!get(&closed)) return 4;
    printf("closed with %u, still alive\n", code);
    return 0;
}
