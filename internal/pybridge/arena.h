/* arena.h: what shim.c uses of arena.c (see there), GIL held unless said. Include after Python.h. */
#ifndef GOWSGI_ARENA_H
#define GOWSGI_ARENA_H

#include <stddef.h>

/* arena_sweep drops the references of the holds the front cleared since the last sweep. */
void arena_sweep(void);

/* arena_lend moves the reference *chunk into a hold when data is the bytes of *chunk, an exact
 * bytes object in the arena: it returns the hold's index, sets *off to data's offset in the
 * arena and *chunk to NULL. Else it returns -1 and changes nothing. */
long long arena_lend(PyObject **chunk, const char *data, size_t *off);

/* arena_lent reports whether a hold still keeps a reference: one the front has not cleared, or
 * cleared since the last sweep. */
int arena_lent(void);

/* arena_sweeps counts the sweeps made so far. The one function here that needs no GIL. */
unsigned long arena_sweeps(void);

#endif
