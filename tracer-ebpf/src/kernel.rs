//! Safe wrappers over the BPF helpers the programs call: the kernel checks every pointer these are
//! given, so each `unsafe` is argued once here instead of at every call site.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_task, bpf_get_current_task_btf,
        bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
        bpf_probe_read_user,
    },
    programs::TracePointContext,
};

/// Plain integers: every bit pattern is a valid value, so a raw copy of kernel memory is one.
pub trait Int: Copy {}
impl Int for u8 {}
impl Int for i16 {}
impl Int for u32 {}
impl Int for i32 {}
impl Int for u64 {}
impl Int for i64 {}

/// Copies a `T` from kernel address `addr`.
pub fn read_kernel<T: Int>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel copies with the kernel's fault-tolerant copy routine, so any
    // address (even NULL or freed memory) yields an error instead of a fault, and T: Int accepts
    // whatever bytes it copies.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

/// The `T` at byte `off` of the kernel object at `base`.
pub fn read_at<T: Int>(base: u64, off: u64) -> Option<T> {
    read_kernel(base + off)
}

/// The `T` at byte `off` of a kernel object whose BTF type the verifier knows: an argument of a
/// BTF tracepoint, or a struct pointer loaded from one. A plain load instead of a helper call
/// (each costs about 100 ns on this project's machines).
#[inline(always)]
pub fn load<T: Int>(base: u64, off: u64) -> T {
    // SAFETY: the verifier checks this load against the kernel's BTF: `base` must be such a typed
    // pointer and `off` (a constant from the frozen CONFIG) must name a member of at least T's size,
    // or the program does not load. It then emits the load fault-tolerant (a bad or NULL pointer
    // reads as 0), and T: Int accepts any bytes.
    unsafe { core::ptr::read_volatile((base + off) as *const T) }
}

/// Copies a `T` from user address `addr` of the current process.
pub fn read_user<T: Int>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_user faults are caught like the kernel read's above (an unmapped or
    // hostile pointer passed to fcntl gives an error), and T: Int accepts any bytes.
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

/// Copies the NUL-terminated string at kernel address `addr` into `dest`; returns its length
/// without the NUL (at most `dest.len() - 1`).
pub fn read_kernel_str(addr: u64, dest: &mut [u8]) -> Option<usize> {
    // SAFETY: the helper writes at most dest.len() bytes (it is given the slice's length) and
    // reads the source through the same fault-tolerant copy as read_kernel.
    unsafe { bpf_probe_read_kernel_str_bytes(addr as *const u8, dest) }
        .ok()
        .map(<[u8]>::len)
}

/// The field at byte `off` of a classic tracepoint's record.
pub fn tp_field<T: Int>(ctx: &TracePointContext, off: u64) -> Option<T> {
    // SAFETY: `off` comes from this tracepoint's tracefs format (or the fixed syscall-tracepoint
    // layout), so it lies inside the record the context points to; the copy is
    // bpf_probe_read_kernel, which fails instead of faulting, and T: Int accepts any bytes.
    unsafe { ctx.read_at::<T>(off as usize) }.ok()
}

/// Argument `N` of a `syscalls:sys_enter_*` tracepoint, or the return value (`N` = 0) of a
/// `sys_exit_*` one: 8-byte slots after the 16-byte header, the syscall ABI's layout on every
/// kernel. A direct load from the record, not a helper call (each one costs about 100 ns).
#[inline(always)]
pub fn syscall_slot<const N: usize>(ctx: &TracePointContext) -> u64 {
    // SAFETY: the context points at the tracepoint's record, which holds slot N (6 argument slots
    // after the header); the verifier checks every context load's offset, size and alignment and
    // refuses the program otherwise, so an out-of-record read cannot load.
    unsafe { core::ptr::read(ctx.as_ptr().cast::<u8>().add(16 + 8 * N).cast::<u64>()) }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock userspace reads too.
pub fn now_ns() -> u64 {
    // SAFETY: the helper takes no arguments and only reads the clock.
    unsafe { bpf_ktime_get_ns() }
}

/// The current `task_struct`'s address, only ever dereferenced through [`read_at`].
pub fn current_task() -> u64 {
    // SAFETY: the helper takes no arguments; its result is used as a number, never as a pointer.
    unsafe { bpf_get_current_task() }
}

/// The current `task_struct` as a BTF-typed pointer, for [`load`] (tracing programs only).
pub fn current_task_btf() -> u64 {
    // SAFETY: the helper takes no arguments; the verifier types its result, and it is only read
    // through `load`, which the verifier checks.
    unsafe { bpf_get_current_task_btf() as u64 }
}

/// The cgroup v2 id of the current task.
pub fn current_cgroup_id() -> u64 {
    // SAFETY: the helper takes no arguments and reads the current task's own cgroup.
    unsafe { bpf_get_current_cgroup_id() }
}
