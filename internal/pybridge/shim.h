/* shim.h: the C surface between Go and CPython. Only package pybridge includes it.
 *
 * Conventions for every function below:
 *  - "detached" means the calling OS thread does not hold the GIL (no attached thread state);
 *    every request-phase function is entered detached and returns detached: it attaches,
 *    works, and detaches itself (design.md §1.2).
 *  - No PyObject* crosses this header: Go owns no Python references.
 *  - Buffers returned through gw_out belong to the gw_thread and stay valid until the next
 *    call on that thread; Go copies what it keeps.
 *  - Strings returned as char** are malloc'd; the caller frees them with free().
 */
#ifndef GOWSGI_SHIM_H
#define GOWSGI_SHIM_H

#include <stddef.h>
#include <stdint.h>

/* gw_thread is one Python thread: an OS thread with its own PyThreadState, kept for the
 * thread's whole life so threading.local survives between requests. */
typedef struct gw_thread gw_thread;

/* Kinds of gw_out. */
enum {
	GW_OUT_DATA = 1,  /* a body chunk (possibly empty); more may follow */
	GW_OUT_DONE = 2,  /* the body is complete; data holds the last chunk (possibly empty) */
	GW_OUT_FILE = 3,  /* wsgi.file_wrapper over a regular file: send fd from file_off, file_len bytes */
	GW_OUT_ERROR = 4  /* the app failed; the traceback is already in the error log, err says why */
};

/* gw_out is what one request phase produced. */
typedef struct gw_out {
	int kind;
	int head_sent;           /* the head already went out through write() */
	const char *head;        /* packed status and headers (frame.PackedHead), or NULL */
	size_t head_len;
	const char *data;        /* chunk bytes, borrowed from a bytes object the thread holds, or
	                          * the thread's own copy of a short list's items */
	size_t data_len;
	long long total;         /* total body length when known (a list of bytes), else -1 */
	int fd;                  /* GW_OUT_FILE: a dup'd descriptor; the caller closes it */
	long long file_off, file_len;
	const char *err;         /* GW_OUT_ERROR: a NUL-terminated reason, thread-owned */
	int closed;              /* gw_call's GW_OUT_DONE of a short exact list or tuple: the
	                          * request's objects are released already; no gw_close follows */
	long long hold;          /* >= 0: data is in the arena at hold_off, kept alive by this hold
	                          * until its state word is cleared (by the front, or by Go when it
	                          * does not send the chunk); the caller must see to one of them */
	size_t hold_off;
} gw_out;

/* Messages a Python thread writes on its "up" pipe while the app runs (see pybridge doc). */
enum {
	GW_UP_WANT = 'W', /* u32: want up to n more request body bytes */
	GW_UP_HEAD = 'H', /* u32 length, packed head: write() was called first */
	GW_UP_DATA = 'D', /* u32 length, bytes from write() */
	GW_UP_SYNC = 'S'  /* no payload: the app call returned; everything before is delivered */
};

/* Body pipe replies: u32 length then data; length 0 ends the body, GW_BODY_ABORT aborts it. */
#define GW_BODY_ABORT 0xFFFFFFFFu

/* gw_init starts the interpreter on the calling (main, OS-locked) thread, loads the embedded
 * glue module from glue[0:glue_len] and applies paths (NUL-separated list prepended to sys.path).
 * Entered with no interpreter; returns attached (the main thread holds the GIL) on success.
 * On failure returns -1 and sets *err. */
int gw_init(const char *glue, size_t glue_len, const char *paths, size_t paths_len,
            int multithread, int multiprocess, char **err);

/* gw_load_app imports module, takes attr, and when call is set evaluates attr(args) with
 * literal arguments only. Entered attached (main thread), returns attached. On failure the
 * traceback is printed to sys.stderr and -1 returned with *err set to a one-line reason. */
int gw_load_app(const char *module, const char *attr, int call, const char *args, char **err);

/* gw_describe returns a malloc'd one-line description of the interpreter. Attached. */
char *gw_describe(void);

/* gw_arena_init makes Python's raw allocator put blocks of 16 KiB and more (big objects,
 * which pymalloc hands it) in the size bytes at base, memory the front maps too, and lets
 * phase calls lend body chunks from there in holds: held[0:holds] are their state words and
 * *freed counts the cleared ones (frame's SharedChunks). Attached, after gw_init and before
 * the app is loaded; at most once. Returns -1 when out of memory. */
int gw_arena_init(void *base, size_t size, uint32_t *held, uint32_t holds, uint32_t *freed);

/* gw_detach_main detaches the main thread after setup: attached on entry, detached on exit. */
void gw_detach_main(void);

/* gw_finalize re-attaches the main thread and finalizes Python. Detached on entry. */
void gw_finalize(void);

/* gw_thread_new creates the Python thread state for the calling OS thread, which must stay
 * locked to it for its whole life. Detached on entry and exit. Returns NULL on failure. */
gw_thread *gw_thread_new(void);

/* gw_call runs phase (a) of request serial (non-zero; gw_interrupt names it): builds the environ from the packed env (package wsgi's format), with
 * body[0:body_len] as the first request body bytes (the whole body when body_end), calls the
 * app and iterates to the first non-empty chunk. up_fd and body_fd are this thread's pipes for
 * write() data and further body. Detached on entry and exit. Always fills out. */
void gw_call(gw_thread *t, unsigned long long serial, const char *env, size_t env_len, const char *body, size_t body_len,
             int body_end, int up_fd, int body_fd, gw_out *out);

/* gw_next runs phase (b): the next non-empty chunk of the current response. Detached. */
void gw_next(gw_thread *t, gw_out *out);

/* gw_interrupt raises glue.RequestTimeout inside the thread if it still runs request serial.
 * Callable from any OS thread, detached on entry and exit; it waits for the GIL, so a thread
 * that holds the GIL forever blocks the caller forever. Returns 1 when an exception was set. */
int gw_interrupt(gw_thread *t, unsigned long long serial);

/* gw_close runs phase (c): calls close() on the iterable if it has one and drops every
 * reference of the request. Detached. Safe to call when nothing is open. */
void gw_close(gw_thread *t);

/* gw_sweep drops the references of the lent chunks the front is done with, as the phase
 * calls do on their way (gw_sweeps), and reports whether a chunk is still lent: for a thread
 * that serves no request, so that an idle worker does not keep its last big chunks. Takes
 * the GIL. */
int gw_sweep(gw_thread *t);

/* gw_sweeps counts the sweeps made so far (by gw_call, gw_close, each chunk lent, and
 * gw_sweep): a count that moves says threads are sweeping. No GIL needed. */
unsigned long gw_sweeps(void);

#endif
