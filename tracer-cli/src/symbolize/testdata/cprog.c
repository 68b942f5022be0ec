/* A test program for the symbolizer: prints the address of a function with a distinctive name,
 * then waits on stdin so that the test can symbolize it while it lives. */
#include <stdio.h>

__attribute__((noinline)) int locktrace_distinctive_c_frame(int n)
{
	int sum = 0;
	for (int i = 0; i < n; i++)
		sum += i * i;
	return sum;
}

int main(void)
{
	printf("%p %d\n", (void *)&locktrace_distinctive_c_frame, locktrace_distinctive_c_frame(4));
	fflush(stdout);
	getchar();
	return 0;
}
