/* libws called while a thread exits: a failing ws_new from a pthread key
 * destructor, which glibc runs after the thread's C++/Rust thread-local
 * destructors, so libws's own per-thread state is already gone. No libws
 * call may abort the process there. Exits 0 when every check passed. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <ws.h>

static pthread_key_t key;
static int failures;
static int destructor_ran;
static int late_code;
static char late_message[256];

static void check(int ok, const char *what) {
    if (!ok) {
        printf("FAILED: %s\n", what);
        failures++;
    }
}

static void at_thread_exit(void *value) {
    (void)value;
    destructor_ran = 1;
    ws_socket *ws = ws_new("not a url", NULL, 0, NULL);
    check(ws == NULL, "ws_new with a bad URL returns NULL during thread exit");
    late_code = ws_last_error_code();
    const char *message = ws_last_error();
    check(message != NULL, "ws_last_error is never NULL");
    if (message != NULL) {
        strncpy(late_message, message, sizeof late_message - 1);
    }
    check(ws_new_with_options(NULL, NULL, 0, NULL, NULL) == NULL, "ws_new_with_options(NULL url) returns NULL");
    check(ws_close(NULL, 1000, NULL) == WS_ERR_INVALID_ARGUMENT, "ws_close(NULL)");
    check(ws_strerror(WS_OK) != NULL, "ws_strerror");
}

static void *thread_main(void *arg) {
    (void)arg;
    pthread_setspecific(key, &key);
    /* A failure now sets this thread's last error, so libws's per-thread
     * state exists and is destroyed when the thread exits. */
    check(ws_new("still not a url", NULL, 0, NULL) == NULL, "a bad URL gives NULL");
    check(ws_last_error_code() == WS_ERR_SYNTAX, "a bad URL is WS_ERR_SYNTAX");
    return NULL;
}

int main(void) {
    pthread_t thread;
    if (pthread_key_create(&key, at_thread_exit) != 0 || pthread_create(&thread, NULL, thread_main, NULL) != 0) {
        printf("cannot start the thread\n");
        return 2;
    }
    pthread_join(thread, NULL);
    check(destructor_ran, "the key destructor ran");
    printf("during thread exit: code %d, message \"%s\"\n", late_code, late_message);
    check(late_code == WS_ERR_SYNTAX || late_code == WS_ERR_INTERNAL, "a code that says the call failed");
    check(late_message[0] != '\0', "a message");
    if (failures == 0) {
        printf("teardown: all checks passed\n");
    }
    return failures == 0 ? 0 : 1;
}
