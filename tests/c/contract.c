/* A full conversation through the public C API only, as include/ws.h
 * documents it, compiled as C99 and as C++ by tests/c_programs.rs and
 * linked against libws.so and libws.a.
 * Usage: contract URL EXPECTED_PROTOCOL [CA_FILE]
 * With CA_FILE (for wss://) the certificates in it are trusted through
 * ws_options_set_ca_file.
 * The server echoes messages; the text "close CODE REASON" makes it close
 * with that code and reason. Exit status 0 means every check passed. */
#define _POSIX_C_SOURCE 200809L
#include <ws.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wait.h"

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

struct events {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int opened;
    int open_state;
    int errors;
    int messages;
    unsigned char *last;
    size_t last_len;
    bool last_text;
    int closed;
    uint16_t close_code;
    char close_reason[128];
    bool close_clean;
    int close_state;
};

static void on_open(void *ud, ws_socket *ws) {
    struct events *e = (struct events *)ud;
    pthread_mutex_lock(&e->lock);
    e->opened++;
    e->open_state = ws_ready_state(ws);
    pthread_cond_broadcast(&e->changed);
    pthread_mutex_unlock(&e->lock);
}

static void on_message(void *ud, ws_socket *ws, const uint8_t *data, size_t len, bool is_text) {
    struct events *e = (struct events *)ud;
    (void)ws;
    pthread_mutex_lock(&e->lock);
    free(e->last);
    e->last = (unsigned char *)malloc(len + 1);
    CHECK(e->last != NULL && data != NULL);
    memcpy(e->last, data, len + 1); /* includes the NUL after the message */
    e->last_len = len;
    e->last_text = is_text;
    e->messages++;
    pthread_cond_broadcast(&e->changed);
    pthread_mutex_unlock(&e->lock);
}

static void on_error(void *ud, ws_socket *ws, const char *message) {
    struct events *e = (struct events *)ud;
    (void)ws;
    fprintf(stderr, "on_error: %s\n", message);
    pthread_mutex_lock(&e->lock);
    e->errors++;
    pthread_mutex_unlock(&e->lock);
}

static void on_close(void *ud, ws_socket *ws, uint16_t code, const char *reason, bool was_clean) {
    struct events *e = (struct events *)ud;
    pthread_mutex_lock(&e->lock);
    e->closed++;
    e->close_code = code;
    snprintf(e->close_reason, sizeof e->close_reason, "%s", reason);
    e->close_clean = was_clean;
    e->close_state = ws_ready_state(ws);
    pthread_cond_broadcast(&e->changed);
    pthread_mutex_unlock(&e->lock);
}

/* Waits until *counter >= want, at most wait_seconds(). */
static void wait_for(struct events *e, const int *counter, int want) {
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += wait_seconds();
    pthread_mutex_lock(&e->lock);
    while (*counter < want) {
        int rc = pthread_cond_timedwait(&e->changed, &e->lock, &deadline);
        if (rc == ETIMEDOUT) {
            fprintf(stderr, "timed out\n");
            exit(1);
        }
    }
    pthread_mutex_unlock(&e->lock);
}

static const char *ca_file = NULL;

static ws_socket *connect_to(const char *url, struct events *e, const char *expect_protocol) {
    static const char *const protocols[] = {"chat", "superchat"};
    ws_callbacks cb;
    ws_socket *ws;
    memset(e, 0, sizeof *e);
    pthread_mutex_init(&e->lock, NULL);
    init_changed(&e->changed);
    cb.user_data = e;
    cb.on_open = on_open;
    cb.on_message = on_message;
    cb.on_error = on_error;
    cb.on_close = on_close;
    if (ca_file) {
        ws_options *o = ws_options_new();
        CHECK(o != NULL);
        CHECK(ws_options_set_ca_file(o, ca_file) == WS_OK);
        CHECK(ws_options_set_connect_timeout_ms(o, 10000) == WS_OK);
        ws = ws_new_with_options(url, protocols, 2, &cb, o);
        ws_options_free(o); /* copied by ws_new_with_options */
    } else {
        ws = ws_new(url, protocols, 2, &cb);
    }
    CHECK(ws != NULL);
    CHECK(strcmp(ws_protocol(ws), "") == 0 || ws_ready_state(ws) != WS_CONNECTING);
    wait_for(e, &e->opened, 1);
    CHECK(e->open_state == WS_OPEN);
    CHECK(ws_ready_state(ws) == WS_OPEN);
    CHECK(strcmp(ws_protocol(ws), expect_protocol) == 0);
    return ws;
}

static void finish(ws_socket *ws, struct events *e) {
    CHECK(e->closed == 1 && e->errors == 0);
    CHECK(e->close_state == WS_CLOSED);
    ws_free(ws);
    free(e->last);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->changed);
}

static void server_closes(const char *url, const char *protocol, const char *command, uint16_t code,
                          const char *reason) {
    struct events e;
    ws_socket *ws = connect_to(url, &e, protocol);
    CHECK(ws_send_string(ws, command, strlen(command)) == WS_OK);
    wait_for(&e, &e.closed, 1);
    CHECK(e.close_code == code && e.close_clean && strcmp(e.close_reason, reason) == 0);
    finish(ws, &e);
}

int main(int argc, char **argv) {
    struct events e;
    ws_socket *ws;
    size_t i, big_len = 1u << 20;
    unsigned char *big;
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s URL EXPECTED_PROTOCOL [CA_FILE]\n", argv[0]);
        return 2;
    }
    if (argc == 4) ca_file = argv[3];
    CHECK(strlen(ws_version()) >= 5);
    CHECK(ws_new("ftp://x/", NULL, 0, NULL) == NULL && ws_last_error_code() == WS_ERR_SYNTAX);
    CHECK(strlen(ws_last_error()) > 0 && strlen(ws_strerror(WS_ERR_SYNTAX)) > 0);

    /* Echo of text and 1 MiB of binary, then close 1000 from the client. */
    ws = connect_to(argv[1], &e, argv[2]);
    CHECK(ws_send_string(NULL, "x", 1) == WS_ERR_INVALID_ARGUMENT);
    CHECK(ws_send_string(ws, "hello, libws", 12) == WS_OK);
    wait_for(&e, &e.messages, 1);
    CHECK(e.last_text && e.last_len == 12 && strcmp((const char *)e.last, "hello, libws") == 0);
    big = (unsigned char *)malloc(big_len);
    CHECK(big != NULL);
    for (i = 0; i < big_len; i++) big[i] = (unsigned char)(i * 31 + (i >> 12));
    CHECK(ws_send_bytes(ws, big, big_len) == WS_OK);
    wait_for(&e, &e.messages, 2);
    CHECK(!e.last_text && e.last_len == big_len && memcmp(e.last, big, big_len) == 0);
    free(big);
    CHECK(ws_close(ws, 999, NULL) == WS_ERR_INVALID_ACCESS);
    CHECK(ws_close(ws, 1000, "client done") == WS_OK);
    /* CLOSED already if the server answered at once. */
    CHECK(ws_ready_state(ws) == WS_CLOSING || ws_ready_state(ws) == WS_CLOSED);
    wait_for(&e, &e.closed, 1);
    CHECK(e.close_code == 1000 && e.close_clean);
    finish(ws, &e);

    /* The server closes: 1000, then 4000 with a reason. */
    server_closes(argv[1], argv[2], "close 1000", 1000, "");
    server_closes(argv[1], argv[2], "close 4000 server says bye", 4000, "server says bye");
    printf("contract: all checks passed\n");
    return 0;
}
