//go:build unix

package ollamatest

import (
	"fmt"
	"syscall"
	"testing"
)

// DeadURL returns the URL of a loopback port where nothing listens, and
// nothing will until the test ends: a socket bound to it, never listening,
// holds the port, so connections are refused. (A listener closed at once
// would free the port for the next test server to take.)
func DeadURL(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}
