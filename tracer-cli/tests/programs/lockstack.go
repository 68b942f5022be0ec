// The stack tests' Go program: takes os.Args[1]'s write lock through two functions with
// distinctive names, ten times. Built stripped (-ldflags='-s -w', programs/build.sh), as Debian
// builds podman: only .gopclntab is left to name its functions.
package main

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

//go:noinline
func goStackTestTakeLock(f *os.File) {
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLKW, &lk); err != nil {
		fmt.Fprintln(os.Stderr, "fcntl:", err)
		os.Exit(1)
	}
}

//go:noinline
func goStackTestHoldLayers(path string) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	goStackTestTakeLock(f)
	time.Sleep(20 * time.Millisecond)
	f.Close()
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintf(os.Stderr, "usage: %s LOCKFILE\n", os.Args[0])
		os.Exit(2)
	}
	for i := 0; i < 10; i++ {
		goStackTestHoldLayers(os.Args[1])
	}
}
