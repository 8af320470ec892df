//go:build !amd64 && !arm64

package frame

// sysMemfdCreate is unknown here: shared memory comes from /dev/shm.
const sysMemfdCreate = -1
