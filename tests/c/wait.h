/* How the C test programs wait for an event (contract.c, extensions.c). */
#ifndef LIBWS_TEST_WAIT_H
#define LIBWS_TEST_WAIT_H

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* Seconds one wait may take: LIBWS_TEST_WAIT_S (tests/c_programs.rs sets
 * it, longer under valgrind), else 10. */
static int wait_seconds(void) {
    const char *s = getenv("LIBWS_TEST_WAIT_S");
    int n = s != NULL ? atoi(s) : 0;
    return n > 0 ? n : 10;
}

/* A condition variable timed on the monotonic clock: a step of the wall
 * clock cannot end a wait early. */
static void init_changed(pthread_cond_t *cond) {
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0 || pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(cond, &attr) != 0) {
        fprintf(stderr, "%s:%d: cannot make a condition variable on the monotonic clock\n", __FILE__, __LINE__);
        exit(1);
    }
    pthread_condattr_destroy(&attr);
}

#endif
