/* epoll_loop: several connections served from the application's own epoll
 * loop, with no library thread. libws's loop is one fd in our epoll set
 * (ws_loop_fd); its timers bound our wait (ws_loop_timeout_ms); every
 * callback runs on this thread, inside ws_loop_run. Our own fd, stdin,
 * sits in the same epoll set: each line typed goes to every connection.
 *
 * Usage: epoll_loop URL [N]   (N connections, default 3)
 * Each connection sends "hello from N", waits for its echo and closes; the
 * program ends when all are closed (or at end of input on stdin).
 * Build: cc -std=c99 epoll_loop.c $(pkg-config --cflags --libs ws) */
#define _POSIX_C_SOURCE 200809L
#include <ws.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define MAX_CONNS 64

struct conn {
    int id;
    ws_socket *ws;
    int closed;
};

static int open_conns = 0;

static void on_open(void *ud, ws_socket *ws) {
    struct conn *c = ud;
    char text[64];
    int n = snprintf(text, sizeof text, "hello from %d", c->id);
    printf("[%d] open\n", c->id);
    ws_send_string(ws, text, (size_t)n); /* no wake-up: we are the loop's thread */
}

static void on_message(void *ud, ws_socket *ws, const uint8_t *data, size_t len, bool is_text) {
    struct conn *c = ud;
    printf("[%d] %s: %.*s\n", c->id, is_text ? "text" : "binary", (int)len, (const char *)data);
    if (is_text && strncmp((const char *)data, "hello from", 10) == 0) ws_close(ws, 1000, "done");
}

static void on_error(void *ud, ws_socket *ws, const char *message) {
    struct conn *c = ud;
    (void)ws;
    printf("[%d] error: %s\n", c->id, message);
}

static void on_close(void *ud, ws_socket *ws, uint16_t code, const char *reason, bool was_clean) {
    struct conn *c = ud;
    (void)ws;
    printf("[%d] close %u \"%s\" (%s)\n", c->id, code, reason, was_clean ? "clean" : "not clean");
    c->closed = 1;
    open_conns--;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s URL [N]\n", argv[0]);
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 3;
    if (n < 1 || n > MAX_CONNS) n = 3;

    ws_loop *loop = ws_loop_new();
    if (!loop) {
        fprintf(stderr, "ws_loop_new: %s\n", ws_last_error());
        return 1;
    }
    ws_options *options = ws_options_new();
    ws_options_set_loop(options, loop);

    static struct conn conns[MAX_CONNS];
    for (int i = 0; i < n; i++) {
        conns[i].id = i + 1;
        ws_callbacks cb = {&conns[i], on_open, on_message, on_error, on_close};
        conns[i].ws = ws_new_with_options(argv[1], NULL, 0, &cb, options);
        if (!conns[i].ws) {
            fprintf(stderr, "ws_new: %s\n", ws_last_error());
            return 1;
        }
        open_conns++;
    }
    ws_options_free(options); /* copied by ws_new_with_options */

    /* Our own event loop: libws's fd and stdin. */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ws_loop_fd(loop)};
    epoll_ctl(ep, EPOLL_CTL_ADD, ws_loop_fd(loop), &ev);
    ev.data.fd = STDIN_FILENO;
    int watch_stdin = epoll_ctl(ep, EPOLL_CTL_ADD, STDIN_FILENO, &ev) == 0;

    while (open_conns > 0) {
        struct epoll_event ready[8];
        int k = epoll_wait(ep, ready, 8, ws_loop_timeout_ms(loop));
        for (int i = 0; i < k; i++) {
            if (ready[i].data.fd != STDIN_FILENO) continue;
            char line[256];
            if (!fgets(line, sizeof line, stdin)) {
                /* End of input: close whatever is still open. */
                epoll_ctl(ep, EPOLL_CTL_DEL, STDIN_FILENO, NULL);
                watch_stdin = 0;
                for (int j = 0; j < n; j++) ws_close(conns[j].ws, 1000, "bye");
                continue;
            }
            line[strcspn(line, "\n")] = '\0';
            for (int j = 0; j < n; j++) ws_send_string(conns[j].ws, line, strlen(line));
        }
        /* Whether the fd woke us or the timeout passed: run what is due. */
        if (ws_loop_run(loop, 0) < 0) {
            fprintf(stderr, "ws_loop_run failed\n");
            return 1;
        }
    }
    (void)watch_stdin;
    close(ep);
    for (int i = 0; i < n; i++) ws_free(conns[i].ws);
    ws_loop_free(loop);
    printf("all %d connections closed\n", n);
    return 0;
}
