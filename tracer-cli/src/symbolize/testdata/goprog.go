// A test program for the symbolizer: prints the entry address of a function with a distinctive
// name, then waits on stdin so that the test can symbolize it while it lives.
package main

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
	return sum
}

func main() {
	fmt.Printf("%#x %d\n", reflect.ValueOf(locktraceDistinctiveGoFrame).Pointer(), locktraceDistinctiveGoFrame(4))
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
}
