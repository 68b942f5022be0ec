//! What the kernel test files share: whether they can run here.

use std::path::Path;

/// True when root and kernel BTF (and every `extra` requirement) are present. Otherwise prints why
/// `what` is skipped, or panics where `cargo xtask test` said these tests must run
/// (LOCKTRACE_REQUIRE_KERNEL_TESTS), so CI cannot pass by skipping them.
pub fn kernel_tests_can_run(what: &str, extra: &[(bool, &str)]) -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let base = [
        (euid == 0, "not root"),
        (
            Path::new("/sys/kernel/btf/vmlinux").exists(),
            "no kernel BTF",
        ),
    ];
    let Some((_, why)) = base.iter().chain(extra).find(|(ok, _)| !ok) else {
        return true;
    };
    if std::env::var_os("LOCKTRACE_REQUIRE_KERNEL_TESTS").is_some() {
        panic!("{what} is required here but cannot run: {why}");
    }
    eprintln!("skipped: {what} ({why})");
    false
}
