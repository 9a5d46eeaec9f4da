/* SPDX-License-Identifier: MIT */
/* pacing.h: what the server counts, who may try which credentials when, and the property
 * it is built for: played against a model of sshd's PerSourcePenalties (5 s per failed
 * login, running down a second a second, the address refused past 15 s), no order of
 * failures tunneld paces ever gets the address refused. No clock, no loop. */
#include <math.h>

#include "pacing.h"
#include "test.h"
#include "util.h"

#define OUT(answered_, auth_, class_, ran_) \
        ((struct pacing_outcome){ .answered = answered_, .authenticated = auth_, .failure = class_, .ran = ran_ })

static void test_costs(void)
{
        static const struct {
                const char *why;
                struct pacing_outcome o;
                double cost;
        } rows[] = {
                { "authenticated: nothing, whatever came after", OUT(true, true, FAILURE_CLOSED, 5), 0 },
                { "a refused key: a failed login", OUT(true, false, FAILURE_AUTH, 1), PACING_COST_AUTH },
                { "a wrong host key: ssh hangs up in the key exchange", OUT(true, false, FAILURE_HOST_KEY, 1),
                  PACING_COST_NOAUTH },
                { "no banner, the deadline: at most a connection that never tried",
                  OUT(false, false, FAILURE_TIMEOUT, 25), PACING_COST_NOAUTH },
                { "killed after the banner: it may have tried a key", OUT(true, false, FAILURE_KILLED, 2),
                  PACING_COST_AUTH },
                { "the deadline after the banner, past LoginGraceTime", OUT(true, false, FAILURE_TIMEOUT, 130),
                  PACING_COST_GRACE },
                { "stopped by tunneld before the banner", OUT(false, false, FAILURE_NONE, 1), PACING_COST_NOAUTH },
                { "stopped by tunneld in the middle of its login", OUT(true, false, FAILURE_NONE, 1), PACING_COST_AUTH },
                { "refused: no session process at all", OUT(false, false, FAILURE_REFUSED, 0.1), 0 },
                { "dns", OUT(false, false, FAILURE_DNS, 0.1), 0 },
                { "refused for a penalty: sshd does not count it", OUT(false, false, FAILURE_PENALTY, 0.1), 0 },
                { "ssh refused its options: it did not connect", OUT(false, false, FAILURE_CONFIG, 0.1), 0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(rows); i++)
                if (pacing_cost(&rows[i].o) != rows[i].cost) {
                        printf("#   %s: %g, want %g\n", rows[i].why, pacing_cost(&rows[i].o), rows[i].cost);
                        test_failed_checks++;
                }
        test_assert(pacing_class_repeats(FAILURE_AUTH) && pacing_class_repeats(FAILURE_HOST_KEY));
        test_assert(!pacing_class_repeats(FAILURE_REFUSED) && !pacing_class_repeats(FAILURE_TIMEOUT));
        test_assert(pacing_class_shared(FAILURE_REFUSED) && pacing_class_shared(FAILURE_PENALTY));
        test_assert(!pacing_class_shared(FAILURE_KILLED) && !pacing_class_shared(FAILURE_LOST));
}

/* Connections of the tests: a member each, owned by its index. */
#define N 40
static struct pacing *p;
static struct pacing_member m[N];
static int owners[N];

static void setup(void)
{
        p = pacing_free(p);
        test_assert(pacing_new(&p) == 0);
        memset(m, 0, sizeof(m));
        for (int i = 0; i < N; i++) {
                owners[i] = i;
                m[i].owner = &owners[i];
        }
}

static void join(int i, const char *dest, const char *cred)
{
        char key[256];

        uint64_t h = UINT64_C(0xcbf29ce484222325);

        snprintf(key, sizeof(key), "%s\n%s", dest, cred);
        for (const char *c = key; *c; c++)
                h = (h ^ (unsigned char)*c) * UINT64_C(0x100000001b3);
        test_assert(pacing_join(p, &m[i], h, dest, key, 0) == 0);
}

static enum pacing_hold ask(int i, bool from_queue, double now)
{
        return pacing_ask(p, &m[i], from_queue, false, now).hold;
}

static void test_proven_credentials_are_never_held(void)
{
        setup();
        for (int i = 0; i < 3; i++)
                join(i, "h:22", "good");
        test_assert(ask(0, false, 0) == PACING_GO);     /* the only credentials there: at once */
        test_assert(!pacing_started(p, &m[0], 0));
        test_assert(ask(1, false, 0) == PACING_HOLD_FOLLOW);
        test_assert(pacing_up(p, &m[0], 0.4));          /* its followers go */
        test_assert(pacing_is_proven(&m[1]));
        test_assert(ask(1, true, 0.4) == PACING_GO);
        pacing_started(p, &m[1], 0.4);
        /* a full budget (another key failing there, the address refused) does not hold them back */
        join(3, "h:22", "bad");
        for (int k = 0; k < 2; k++) {
                test_assert(ask(3, true, k) == PACING_GO);
                pacing_started(p, &m[3], k);
                pacing_ended(p, &m[3], &OUT(true, false, FAILURE_TIMEOUT, 1), k);
        }
        test_assert(ask(3, true, 2) == PACING_HOLD_BUDGET);
        test_assert(pacing_outstanding(p, &m[0], 2) > PACING_BUDGET - PACING_COST_AUTH);
        test_assert(ask(2, false, 3) == PACING_GO);
        /* a blip: every proven one ends (killed, after its login) and starts again at once */
        pacing_ended(p, &m[0], &OUT(true, true, FAILURE_KILLED, 60), 4);
        test_assert(ask(0, false, 4) == PACING_GO);
        pacing_free(p);
        p = NULL;
}

static void test_one_attempt_per_credentials(void)
{
        struct pacing_member *f;
        enum failure_class class;
        void *by;
        struct pacing_decision v;
        struct pacing_end e;
        int taken = 0;

        setup();
        for (int i = 0; i < 5; i++)
                join(i, "h:22", "bad");
        test_assert(ask(0, false, 0) == PACING_GO);
        pacing_started(p, &m[0], 0);
        for (int i = 1; i < 5; i++) {
                v = pacing_ask(p, &m[i], true, false, 0);
                test_assert(v.hold == PACING_HOLD_FOLLOW && v.by == &owners[0]);
        }
        e = pacing_ended(p, &m[0], &OUT(true, false, FAILURE_AUTH, 0.5), 0.5);
        test_assert(e.fail_followers && e.kick);
        while (pacing_take_follower(p, &f, &by, &class)) {
                test_assert(f != &m[0] && by == &owners[0] && class == FAILURE_AUTH && !f->waiting);
                taken++;
        }
        test_assert(taken == 4);
        /* the credentials' next attempt is the one that tried's own retry */
        pacing_retry_at(p, &m[0], 45);
        v = pacing_ask(p, &m[3], false, false, 30);
        test_assert(v.hold == PACING_HOLD_FAILING && v.until == 45 && v.failure == FAILURE_AUTH && v.by == &owners[0]);
        test_assert(pacing_next_change(p, 30) == 45);
        pacing_retry_at(p, &m[3], 10);         /* not the one whose failure it was: no say */
        test_assert(ask(3, true, 40) == PACING_HOLD_FAILING);
        /* one started by request (its own count reset) is not held for the next attempt */
        test_assert(pacing_ask(p, &m[4], true, true, 40).hold == PACING_GO);
        pacing_started(p, &m[4], 40);
        pacing_ended(p, &m[4], &OUT(true, false, FAILURE_AUTH, 0.5), 40.5);
        while (pacing_take_follower(p, &f, &by, &class))
                test_assert(f == &m[3]);
        pacing_retry_at(p, &m[4], 45);
        test_assert(ask(3, true, 45) == PACING_GO);     /* whoever asks first once it is time */
        pacing_started(p, &m[3], 45);
        test_assert(ask(0, true, 45) == PACING_HOLD_FOLLOW);
        /* that one gets through: proven, the failure forgotten */
        test_assert(pacing_up(p, &m[3], 46));
        test_assert(ask(0, true, 46) == PACING_GO);
        pacing_free(p);
        p = NULL;
}

static void test_failures_that_say_nothing_of_the_credentials(void)
{
        struct pacing_member *f;
        enum failure_class class;
        void *by;
        struct pacing_end e;

        setup();
        for (int i = 0; i < 3; i++)
                join(i, "h:22", "k");
        test_assert(ask(0, false, 0) == PACING_GO);
        pacing_started(p, &m[0], 0);
        test_assert(ask(1, true, 0) == PACING_HOLD_FOLLOW);
        /* someone killed that ssh: the next one tries, nobody takes that failure */
        e = pacing_ended(p, &m[0], &OUT(false, false, FAILURE_KILLED, 0.2), 0.2);
        test_assert(!e.fail_followers && e.kick);
        test_assert(!pacing_take_follower(p, &f, &by, &class));
        test_assert(ask(1, true, 0.2) == PACING_GO);
        pacing_started(p, &m[1], 0.2);
        /* the server refuses connections: a fact of the destination, the others take it, and
         * their credentials are not failing (whoever retries first tries) */
        test_assert(ask(2, true, 0.2) == PACING_HOLD_FOLLOW);
        e = pacing_ended(p, &m[1], &OUT(false, false, FAILURE_REFUSED, 0.3), 0.3);
        test_assert(e.fail_followers);
        test_assert(pacing_take_follower(p, &f, &by, &class) && f == &m[2] && class == FAILURE_REFUSED);
        test_assert(!pacing_take_follower(p, &f, &by, &class));
        test_assert(ask(2, false, 1.3) == PACING_GO);
        pacing_free(p);
        p = NULL;
}

static void test_the_largest_group_goes_first(void)
{
        setup();
        /* a key of one tunnel (configured first) and a key of twenty */
        join(0, "h:22", "one");
        for (int i = 1; i <= 20; i++)
                join(i, "h:22", "twenty");
        /* from a connection's own start: the order between them waits for the queue's turn */
        test_assert(ask(0, false, 0) == PACING_HOLD_TURN);
        for (int i = 1; i <= 20; i++)
                test_assert(ask(i, false, 0) == PACING_HOLD_TURN);
        /* the queue's turn, in the order they queued */
        test_assert(ask(0, true, 0) == PACING_HOLD_TURN);
        test_assert(ask(1, true, 0) == PACING_GO);
        test_assert(pacing_started(p, &m[1], 0));       /* room for another beside it: ask again */
        for (int i = 2; i <= 20; i++)
                test_assert(ask(i, true, 0) == PACING_HOLD_FOLLOW);
        test_assert(ask(0, true, 0) == PACING_GO);      /* the next turn */
        pacing_started(p, &m[0], 0);
        /* a destination of its own is not held by another's */
        join(21, "other:22", "x");
        test_assert(ask(21, false, 0) == PACING_GO);
        pacing_free(p);
        p = NULL;
}

/* sshd's count (srclimit.c): a penalty adds to what is outstanding, which runs down in
 * real time; once more than min is outstanding the address is refused until it has run
 * out. Returns false if this failure made the server refuse the address. */
struct server_model {
        double outstanding, at;
        bool blocked;
};

static bool model_penalise(struct server_model *s, double cost, double now)
{
        double left = s->outstanding - (now - s->at);

        s->outstanding = (left > 0 ? left : 0) + cost;
        s->at = now;
        if (s->outstanding > PACING_BLOCK_AT)
                s->blocked = true;
        return !s->blocked;
}

/* The keys of n tunnels fail, each of its own (or one shared): every tunnel retries as
 * soon as it may, for 10 minutes of simulated time, each login taking 0.3 to 1.7 s. */
static void play(int n, bool shared_key, double *ret_first_tries_done)
{
        struct server_model server = { 0 };
        double busy_until[N] = { 0 }, now = 0;
        bool running[N] = { false };
        int tried[N] = { 0 };
        unsigned seed = 1;

        setup();
        for (int i = 0; i < n; i++) {
                char key[16];
                snprintf(key, sizeof(key), "k%d", shared_key ? 0 : i);
                join(i, "h:22", shared_key ? "k0" : key);
        }
        *ret_first_tries_done = -1;
        for (; now < 600; now += 0.1) {
                bool all = true;

                for (int i = 0; i < n; i++) {
                        if (running[i] && now >= busy_until[i]) {
                                struct pacing_member *f;
                                enum failure_class class;
                                void *by;

                                running[i] = false;
                                test_assert(model_penalise(&server, PACING_COST_AUTH, now));
                                pacing_ended(p, &m[i], &OUT(true, false, FAILURE_AUTH, 1), now);
                                pacing_retry_at(p, &m[i], now + 30);
                                while (pacing_take_follower(p, &f, &by, &class))
                                        tried[(int *)f->owner - owners]++;      /* took it as theirs */
                        }
                }
                for (int i = 0; i < n; i++) {
                        if (running[i] || pacing_ask(p, &m[i], true, false, now).hold != PACING_GO)
                                continue;
                        pacing_started(p, &m[i], now);
                        running[i] = true;
                        seed = seed * 1103515245 + 12345;
                        busy_until[i] = now + 0.3 + (seed >> 16) % 15 / 10.0;
                        tried[i]++;
                }
                for (int i = 0; i < n; i++)
                        all = all && tried[i] > 0;
                if (all && *ret_first_tries_done < 0)
                        *ret_first_tries_done = now;
        }
        test_assert(!server.blocked);
        pacing_free(p);
        p = NULL;
}

static void test_failing_keys_never_get_the_address_refused(void)
{
        double done;

        /* one key for 20 tunnels: one try per retry for them all */
        play(20, true, &done);
        test_assert(done >= 0 && done < 2);
        /* 20 keys: tried one after the other as the count allows: a failed login's worth of
         * it runs down in 5 s, so 20 take about 100 s, never more than twice that */
        play(20, false, &done);
        printf("# 20 failing keys, each tried once within %.1f s\n", done);
        test_assert(done > 0 && done < 200);
        play(N, false, &done);
}

static void test_a_refusal_for_a_penalty_is_waited_out(void)
{
        struct pacing_decision v;

        setup();
        join(0, "h:22", "a");
        join(1, "h:22", "b");
        test_assert(ask(0, true, 0) == PACING_GO);
        pacing_started(p, &m[0], 0);
        pacing_ended(p, &m[0], &OUT(false, false, FAILURE_PENALTY, 0.1), 0.1);
        /* someone else's failures got the address refused: nothing new is tried there until
         * what a block begins with has run down */
        test_assert(pacing_outstanding(p, &m[0], 0.1) >= PACING_PENALTY_ASSUMED);
        v = pacing_ask(p, &m[1], true, false, 0.1);
        test_assert(v.hold == PACING_HOLD_BUDGET);
        test_assert(fabs(v.until - (0.1 + PACING_PENALTY_ASSUMED + PACING_COST_AUTH - PACING_BUDGET)) < 1e-9);
        test_assert(fabs(pacing_next_change(p, 0.1) - v.until) < 1e-9);
        test_assert(ask(1, true, v.until) == PACING_GO);
        pacing_free(p);
        p = NULL;
}

static void test_members_come_and_go(void)
{
        setup();
        join(0, "h:22", "a");
        join(1, "h:22", "a");
        test_assert(ask(0, false, 0) == PACING_GO);
        pacing_started(p, &m[0], 0);
        test_assert(ask(1, true, 0) == PACING_HOLD_FOLLOW);
        /* the attempt's connection goes (a reload removed it): the worst of it counted */
        pacing_leave(p, &m[0], 1);
        test_assert(m[0].cred == NULL);
        test_assert(pacing_outstanding(p, &m[1], 1) == PACING_COST_AUTH);
        test_assert(ask(1, true, 1) == PACING_GO);
        /* a reload changed its key: other credentials, not proven, of the same destination */
        pacing_started(p, &m[1], 1);
        test_assert(pacing_up(p, &m[1], 2));
        join(1, "h:22", "b");
        test_assert(!pacing_is_proven(&m[1]));
        pacing_leave(p, &m[1], 3);
        pacing_leave(p, &m[1], 3);      /* twice: nothing */
        pacing_free(p);
        p = NULL;
}

TEST_MAIN(TEST(test_costs), TEST(test_proven_credentials_are_never_held), TEST(test_one_attempt_per_credentials),
          TEST(test_failures_that_say_nothing_of_the_credentials), TEST(test_the_largest_group_goes_first),
          TEST(test_failing_keys_never_get_the_address_refused), TEST(test_a_refusal_for_a_penalty_is_waited_out),
          TEST(test_members_come_and_go))
