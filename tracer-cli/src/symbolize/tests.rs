//! Symbolizer tests on live processes: this test process, stripped Go programs, a C program.

use super::testprog::{self, GoMode, Running};
use super::*;

#[inline(never)]
fn locktrace_distinctive_rust_frame(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_mul(31).rotate_left(7)
}

#[test]
fn names_a_rust_function_of_this_process() {
    let addr = locktrace_distinctive_rust_frame as fn(u64) -> u64 as usize as u64;
    assert_ne!(locktrace_distinctive_rust_frame(3), 0);
    let mut sym = Symbolizer::new();
    // Second frame: a return address one byte in, looked up at the entry itself.
    let names = sym.symbolize(std::process::id(), &[addr, addr + 1]);
    assert_eq!(names.len(), 2);
    for name in &names {
        assert!(
            name.contains("locktrace_distinctive_rust_frame"),
            "got {names:?}"
        );
    }
    assert_eq!(
        sym.stats(),
        Stats {
            frames: 2,
            unknown: 0
        }
    );
}

/// A stripped Go program (only `.gopclntab` left) names exactly as Go prints it.
fn names_a_stripped_go_function(source: &str, mode: GoMode) {
    let built = testprog::go_build(source, mode, true);
    let prog = Running::start(&built.path);
    let mut sym = Symbolizer::new();
    let names = sym.symbolize(prog.pid(), &[prog.addr, prog.addr + 5, prog.addr + 9]);
    assert_eq!(
        names,
        vec!["main.locktraceDistinctiveGoFrame"; 3],
        "{mode:?} at {:#x}",
        prog.addr
    );
    // The first bytes of the file are mapped but name no function: module + file offset.
    let start = first_mapping_of(prog.pid(), "/prog");
    assert_eq!(sym.symbolize(prog.pid(), &[start]), vec!["prog+0x0"]);
    assert_eq!(
        sym.stats(),
        Stats {
            frames: 4,
            unknown: 1
        }
    );
}

#[test]
fn names_a_stripped_static_go_program() {
    names_a_stripped_go_function(testprog::GO_PROGRAM, GoMode::Static);
}

#[test]
fn names_a_stripped_cgo_pie_program() {
    names_a_stripped_go_function(testprog::GO_CGO_PROGRAM, GoMode::CgoPie);
}

#[test]
fn names_a_c_function() {
    let built = testprog::gcc_build(testprog::C_PROGRAM);
    let prog = Running::start(&built.path);
    let mut sym = Symbolizer::new();
    let names = sym.symbolize(prog.pid(), &[prog.addr, prog.addr + 2]);
    assert_eq!(names, vec!["locktrace_distinctive_c_frame"; 2]);
    // Cached layout and binary: a second stack costs no re-read and names the same.
    assert_eq!(
        sym.symbolize(prog.pid(), &[prog.addr]),
        vec!["locktrace_distinctive_c_frame"]
    );
    assert_eq!(sym.spaces.len(), 1);
    assert_eq!(sym.binaries.len(), 1);
}

#[test]
fn a_gone_process_gives_unknown_frames() {
    let mut sym = Symbolizer::new();
    // Above any pid_max (at most 2^22).
    let pid = 0x7fff_fff0;
    let addrs = [0, 0x7f12_3456_7890, u64::MAX];
    let names = sym.symbolize(pid, &addrs);
    assert_eq!(
        names,
        vec![
            "[unknown] 0x0",
            "[unknown] 0x7f1234567890",
            "[unknown] 0xffffffffffffffff"
        ]
    );
    assert!(sym.symbolize(pid, &[]).is_empty());
    assert_eq!(
        sym.stats(),
        Stats {
            frames: 3,
            unknown: 3
        }
    );
}

#[test]
fn unmapped_addresses_of_a_live_process_are_unknown() {
    let mut sym = Symbolizer::new();
    let names = sym.symbolize(std::process::id(), &[0, 8, u64::MAX]);
    assert!(
        names.iter().all(|n| n.starts_with("[unknown] 0x")),
        "{names:?}"
    );
}

/// The start address of the first mapping of `pid` whose path ends with `suffix`.
fn first_mapping_of(pid: u32, suffix: &str) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps
        .lines()
        .find(|l| l.ends_with(suffix))
        .unwrap_or_else(|| panic!("no mapping ending with {suffix} in:\n{maps}"));
    let start = line.split('-').next().unwrap();
    u64::from_str_radix(start, 16).unwrap()
}
