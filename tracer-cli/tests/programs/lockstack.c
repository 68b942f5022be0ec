/* The stack tests' C program: takes ARGV[1]'s write lock through two functions with distinctive
 * names, ten times for 20 ms each, so it lives while locktrace names its stack. Built with frame
 * pointers (programs/build.sh) so the kernel can walk its stack. The function that calls fcntl itself is not expected in the stack: glibc's fcntl keeps no frame
 * pointer, so a frame-pointer walk from inside it goes straight to that function's caller. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((noinline)) static void c_stack_test_take_lock(int fd)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    if (fcntl(fd, F_SETLKW, &fl) != 0) {
        perror("fcntl");
        exit(1);
    }
}

__attribute__((noinline)) void c_stack_test_hold_layers(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) {
        perror(path);
        exit(1);
    }
    c_stack_test_take_lock(fd);
    usleep(20000);
    close(fd);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s LOCKFILE\n", argv[0]);
        return 2;
    }
    for (int i = 0; i < 10; i++)
        c_stack_test_hold_layers(argv[1]);
    return 0;
}
