/* arena.c: the worker's big Python objects, allocated in memory the front maps too.
 *
 * gw_arena_init wraps the raw allocator (PYMEM_DOMAIN_RAW): pymalloc serves the small objects
 * itself and hands every request above 512 bytes to it, bytes objects' included, so small
 * objects never pass through here (wrapping the object domain instead cost every allocation
 * an indirect call: +50-70 ns per hello call in BenchmarkCall). A request of GW_ARENA_MIN bytes
 * or more takes whole pages of the arena, the rest goes to the allocator it wrapped, as does
 * what does not fit. A body chunk that is a bytes object in the arena needs no copy to reach
 * the front: the thread that iterated it moves its reference into a hold (arena_lend), Go
 * names the hold and the bytes' offset in a DataHeld frame, and the front writes the client
 * from the object and clears the hold's shared state word. The next phase call that sees the
 * front's count of cleared holds move drops those references (arena_sweep), with the GIL; in a
 * worker whose threads idle, its sweeper does (gw_sweep).
 *
 * The raw allocator is called without the GIL too, so the pages are guarded by a mutex of
 * their own; the holds are guarded by the GIL. A free-threaded build gets no arena.
 *
 * A forked child (os.fork, multiprocessing) must not allocate in memory its parent shares
 * with the front: the child gets a private copy of the live blocks at the same addresses,
 * made by the forking thread just before the fork (before_fork), and stops lending. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "arena.h"
#include "shim.h"

#define GW_PAGE 4096
/* Objects below this stay with the wrapped allocator: chunks smaller than the worker's
 * sharedMin go through the ring anyway, and small objects are pymalloc's strength. */
#define GW_ARENA_MIN (16 * 1024)
/* A freed block this big gives its pages back to the system (both processes' resident set);
 * smaller ones stay resident for the next object, as malloc's heap keeps them. */
#define GW_ARENA_RETURN (4u << 20)
/* Shorter chunks are not lent: one a realloc shrank stays in the arena, and a short chunk
 * costs less copied into the ring with the frames around it than named in a frame of its own. */
#define GW_LEND_MIN (8 * 1024)

/* mu guards the pages: used, run and low. base and pages are set before any thread allocates. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static struct {
	char *base; /* the arena's pages; NULL: no arena */
	size_t pages;
	uint64_t *used;  /* a bit per page */
	uint32_t *run;   /* per page that starts a block: the block's pages; 0 elsewhere */
	size_t low;      /* no free page below this one */
	int shared;      /* lending is on: cleared in a forked child */
	PyMemAllocatorEx prev;

	uint32_t *held;  /* per hold, shared with the front: 1 while lent */
	uint32_t *freed; /* shared: holds the front (or Go) cleared, counted */
	uint32_t seen;   /* *freed when the holds were last swept */
	unsigned long sweeps; /* arena_sweep's calls; read without the GIL (arena_sweeps) */
	PyObject **obj;  /* per hold: the reference it keeps, until swept */
	uint32_t holds, hi; /* no hold at or above hi keeps a reference */
} A;

static int in_arena(const void *p) {
	return A.base && (const char *)p >= A.base && (const char *)p < A.base + A.pages * GW_PAGE;
}

/* scan returns the first page at or after i whose bit is v, or A.pages. */
static size_t scan(size_t i, int v) {
	while (i < A.pages) {
		uint64_t w = A.used[i >> 6];
		if (!v)
			w = ~w;
		w >>= (i & 63);
		if (w) {
			i += (size_t)__builtin_ctzll(w);
			return i < A.pages ? i : A.pages;
		}
		i = (i | 63) + 1;
	}
	return A.pages;
}

/* mark sets the bits of pages [i, i+n) to v. */
static void mark(size_t i, size_t n, int v) {
	while (n > 0) {
		size_t bit = i & 63, k = 64 - bit < n ? 64 - bit : n;
		uint64_t m = (k == 64 ? ~(uint64_t)0 : (((uint64_t)1 << k) - 1)) << bit;
		if (v)
			A.used[i >> 6] |= m;
		else
			A.used[i >> 6] &= ~m;
		i += k;
		n -= k;
	}
}

/* pages_for returns the pages a block of size bytes takes (one for none). */
static size_t pages_for(size_t size) { return size ? (size + GW_PAGE - 1) / GW_PAGE : 1; }

/* take marks [i, i+n) used as one block. */
static void take(size_t i, size_t n) {
	mark(i, n, 1);
	A.run[i] = (uint32_t)n;
	if (i == A.low)
		A.low = scan(i + n, 0);
}

/* arena_alloc returns the first run of free pages that holds size bytes, or NULL. */
static void *arena_alloc(size_t size) {
	size_t n = pages_for(size);
	for (size_t i = scan(A.low, 0); i < A.pages && n <= A.pages - i;) {
		size_t j = scan(i, 1);
		if (j - i >= n) {
			take(i, n);
			return A.base + i * GW_PAGE;
		}
		i = scan(j, 0);
	}
	return NULL;
}

/* give_back frees pages [i, i+n), returning them to the system when there are many. */
static void give_back(size_t i, size_t n) {
	mark(i, n, 0);
	if (i < A.low)
		A.low = i;
	if (n * GW_PAGE >= GW_ARENA_RETURN) /* a forked child's arena is private memory */
		(void)madvise(A.base + i * GW_PAGE, n * GW_PAGE, A.shared ? MADV_REMOVE : MADV_DONTNEED); /* only memory is at stake */
}

/* block returns the first page of the block at p, which must start one. */
static size_t block(void *p) {
	size_t i = (size_t)((char *)p - A.base) / GW_PAGE;
	if (((char *)p - A.base) % GW_PAGE != 0 || A.run[i] == 0)
		Py_FatalError("gowsgi arena: a pointer that no allocation returned was freed");
	return i;
}

static void arena_free(void *p) {
	size_t i = block(p), n = A.run[i];
	A.run[i] = 0;
	give_back(i, n);
}

static void *locked_alloc(size_t size) {
	pthread_mutex_lock(&mu);
	void *p = arena_alloc(size);
	pthread_mutex_unlock(&mu);
	return p;
}

static void locked_free(void *p) {
	pthread_mutex_lock(&mu);
	arena_free(p);
	pthread_mutex_unlock(&mu);
}

static void *h_malloc(void *ctx, size_t size) {
	(void)ctx;
	if (size >= GW_ARENA_MIN) {
		void *p = locked_alloc(size);
		if (p)
			return p;
	}
	return A.prev.malloc(A.prev.ctx, size);
}

static void *h_calloc(void *ctx, size_t nelem, size_t elsize) {
	(void)ctx;
	size_t size;
	if (!__builtin_mul_overflow(nelem, elsize, &size) && size >= GW_ARENA_MIN) {
		void *p = locked_alloc(size);
		if (p)
			return memset(p, 0, size); /* freed pages keep their bytes */
	}
	return A.prev.calloc(A.prev.ctx, nelem, elsize);
}

/* h_realloc keeps a block in place when it shrinks or the pages after it are free, and
 * leaves blocks of the wrapped allocator there. */
static void *h_realloc(void *ctx, void *p, size_t size) {
	if (!in_arena(p))
		return A.prev.realloc(A.prev.ctx, p, size);
	pthread_mutex_lock(&mu);
	size_t i = block(p), old = A.run[i];
	size_t n = pages_for(size);
	int kept = 1;
	if (n < old) {
		A.run[i] = (uint32_t)n;
		give_back(i + n, old - n);
	} else if (n > old && n <= A.pages - i && scan(i + old, 1) >= i + n) {
		mark(i + old, n - old, 1);
		A.run[i] = (uint32_t)n;
		if (A.low >= i + old && A.low < i + n)
			A.low = scan(i + n, 0);
	} else if (n > old) {
		kept = 0;
	}
	pthread_mutex_unlock(&mu);
	if (kept)
		return p;
	void *q = h_malloc(ctx, size);
	if (!q)
		return NULL;
	memcpy(q, p, old * GW_PAGE); /* less than size: it grows */
	locked_free(p);
	return q;
}

static void h_free(void *ctx, void *p) {
	(void)ctx;
	if (in_arena(p))
		locked_free(p);
	else
		A.prev.free(A.prev.ctx, p);
}

/* A fork copies the arena before it happens: the forking thread (which holds the GIL, when it
 * is os.fork) takes mu and copies the live blocks into private memory, which the child moves
 * to the arena's addresses and the parent drops. Copied in the child instead, the arena would
 * already hold what the parent did since the fork, as it is shared memory: refcounts, blocks
 * freed and reused. Block by block: reading a page that was given back would bring it back. */
static char *fork_copy; /* the copy for the child, between before_fork and the handlers after */

static void before_fork(void) {
	pthread_mutex_lock(&mu);
	fork_copy = NULL;
	if (!A.base || !A.shared)
		return;
	size_t len = A.pages * GW_PAGE;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return; /* the child exits */
	for (size_t i = scan(0, 1); i < A.pages; i = scan(i + A.run[i], 1))
		memcpy(p + i * GW_PAGE, A.base + i * GW_PAGE, A.run[i] * GW_PAGE);
	fork_copy = p;
}

static void after_fork_parent(void) {
	if (fork_copy)
		(void)munmap(fork_copy, A.pages * GW_PAGE); /* a mapping of our own: it cannot fail */
	fork_copy = NULL;
	pthread_mutex_unlock(&mu);
}

/* after_fork_child gives the child its copy at the arena's addresses, or ends the child, since
 * writing the parent's arena would corrupt the parent's objects. */
static void after_fork_child(void) {
	pthread_mutex_init(&mu, NULL);
	if (!A.base || !A.shared)
		return;
	A.shared = 0;
	size_t len = A.pages * GW_PAGE;
	if (fork_copy && mremap(fork_copy, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, A.base) != MAP_FAILED)
		return;
	static const char msg[] = "gowsgi: a forked child cannot copy the worker's arena; it exits\n";
	(void)!write(2, msg, sizeof msg - 1);
	_exit(70);
}

int gw_arena_init(void *base, size_t size, uint32_t *held, uint32_t holds, uint32_t *freed) {
#ifdef Py_GIL_DISABLED
	(void)base, (void)size, (void)held, (void)holds, (void)freed;
	return 0;
#else
	size_t pages = size / GW_PAGE;
	if (!base || pages == 0 || A.base)
		return 0;
	A.used = calloc((pages + 63) / 64, sizeof *A.used);
	A.run = calloc(pages, sizeof *A.run);
	A.obj = calloc(holds ? holds : 1, sizeof *A.obj);
	if (!A.used || !A.run || !A.obj || pthread_atfork(before_fork, after_fork_parent, after_fork_child) != 0) {
		free(A.used);
		free(A.run);
		free(A.obj);
		return -1;
	}
	A.pages = pages;
	A.held = held;
	A.holds = holds;
	A.freed = freed;
	A.seen = __atomic_load_n(freed, __ATOMIC_ACQUIRE);
	A.shared = 1;
	A.base = base;
	PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &A.prev);
	PyMemAllocatorEx h = {NULL, h_malloc, h_calloc, h_realloc, h_free};
	PyMem_SetAllocator(PYMEM_DOMAIN_RAW, &h);
	return 0;
#endif
}

void arena_sweep(void) {
	if (!A.shared)
		return;
	__atomic_store_n(&A.sweeps, A.sweeps + 1, __ATOMIC_RELAXED); /* only under the GIL */
	uint32_t f = __atomic_load_n(A.freed, __ATOMIC_ACQUIRE);
	if (f == A.seen)
		return;
	A.seen = f; /* before the scan: a hold cleared during it moves the count again */
	uint32_t hi = 0;
	for (uint32_t k = 0; k < A.hi; k++) {
		if (!A.obj[k])
			continue;
		if (__atomic_load_n(&A.held[k], __ATOMIC_ACQUIRE) != 0) {
			hi = k + 1;
			continue;
		}
		PyObject *o = A.obj[k];
		A.obj[k] = NULL;
		Py_DECREF(o); /* an exact bytes object: no finalizer runs */
	}
	A.hi = hi;
}

int arena_lent(void) { return A.hi > 0; }

unsigned long arena_sweeps(void) { return __atomic_load_n(&A.sweeps, __ATOMIC_RELAXED); }

long long arena_lend(PyObject **chunk, const char *data, size_t *off) {
	PyObject *c = *chunk;
	if (!A.shared || !c || !PyBytes_CheckExact(c) || data != PyBytes_AS_STRING(c) || !in_arena(data) ||
	    PyBytes_GET_SIZE(c) < GW_LEND_MIN)
		return -1;
	arena_sweep();
	uint32_t k = 0;
	while (k < A.hi && A.obj[k])
		k++;
	if (k >= A.holds)
		return -1;
	A.obj[k] = c;
	*chunk = NULL;
	__atomic_store_n(&A.held[k], 1, __ATOMIC_RELEASE);
	if (k >= A.hi)
		A.hi = k + 1;
	*off = (size_t)(data - A.base);
	return k;
}
