// The Go test program with cgo, so that it links externally (as podman does): C code then
// precedes Go's text and the pclntab's textStart is not the start of .text.
package main

/*
static int locktrace_c_helper(int x) { return x * 3; }
*/
import "C"

import (
	"bufio"
	"fmt"
	"os"
	"reflect"
)

//go:noinline
func locktraceDistinctiveGoFrame(n int) int {
	sum := 0
	for i := 0; i < n; i++ {
		sum += i * i
	}
	return sum + int(C.locktrace_c_helper(C.int(n)))
}

func main() {
	fmt.Printf("%#x %d\n", reflect.ValueOf(locktraceDistinctiveGoFrame).Pointer(), locktraceDistinctiveGoFrame(4))
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
}
