//! Tests of the Go function table against `go tool nm`, real podman binaries and corrupt input.

use std::collections::BTreeMap;
use std::path::Path;

use object::{Object, ObjectSection};

use super::super::testprog::{self, GoMode};
use super::*;

/// A name as `go tool nm` prints it, in the form of the runtime's table (and tracebacks): nm
/// marks assembly (ABI0) functions, and the linker writes array lengths in the table's names of
/// generated functions as `[...]`.
fn table_form(nm_name: &str) -> String {
    let name = nm_name.strip_suffix(".abi0").unwrap_or(nm_name);
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with(']') {
            out.push_str("...");
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn nm_names_in_table_form() {
    assert_eq!(
        table_form("type..eq.[5]internal/cpu.option"),
        "type..eq.[...]internal/cpu.option"
    );
    assert_eq!(table_form("runtime.rt0_go.abi0"), "runtime.rt0_go");
    assert_eq!(table_form("main.f[go.shape.int]"), "main.f[go.shape.int]");
}

/// The table of the stripped build must name every function `go tool nm` lists on the unstripped
/// build of the same program (same layout), at its entry and in its middle, and list no other.
fn check_against_nm(source: &str, mode: GoMode) {
    let full = testprog::go_build(source, mode, false);
    let stripped = testprog::go_build(source, mode, true);
    let data = std::fs::read(&stripped.path).unwrap();
    let file = object::File::parse(&data[..]).unwrap();
    assert!(
        file.section_by_name(".symtab").is_none(),
        "{mode:?}: the stripped build still has a symbol table"
    );
    let table = GoTable::from_elf(&data[..]).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
    let text = table.text_range();

    let mut by_addr: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (addr, name) in testprog::go_nm(&full.path) {
        by_addr.entry(addr).or_default().push(table_form(&name));
    }
    let etext = *by_addr
        .iter()
        .find(|(_, names)| names.iter().any(|n| n == "runtime.etext"))
        .expect("runtime.etext in nm")
        .0;
    let rtext = *by_addr
        .iter()
        .find(|(_, names)| names.iter().any(|n| n == "runtime.text"))
        .expect("runtime.text in nm")
        .0;
    assert_eq!(text, rtext..etext, "{mode:?}: Go text range");

    let addrs: Vec<u64> = by_addr
        .keys()
        .copied()
        .filter(|a| text.contains(a))
        .collect();
    let mut errors = Vec::new();
    for (i, &addr) in addrs.iter().enumerate() {
        let names = &by_addr[&addr];
        let next = addrs.get(i + 1).copied().unwrap_or(etext);
        for probe in [addr, addr + (next - addr) / 2, next - 1] {
            match table.lookup(probe) {
                Some(f) if names.iter().any(|n| n == f.name) && f.entry == addr => {}
                other => errors.push(format!("{probe:#x}: nm {names:?}, table {other:?}")),
            }
        }
    }
    for f in table.functions() {
        if !by_addr
            .get(&f.entry)
            .is_some_and(|names| names.iter().any(|n| n == f.name))
        {
            errors.push(format!("table has {f:?}, nm has not"));
        }
    }
    assert!(
        errors.is_empty(),
        "{mode:?}: {} mismatches, first: {:#?}",
        errors.len(),
        &errors[..errors.len().min(20)]
    );
    assert!(
        addrs.len() > 1000,
        "{mode:?}: only {} functions",
        addrs.len()
    );
    assert!(table.lookup(text.start - 1).is_none());
    assert!(table.lookup(text.end).is_none());
    let main = table
        .functions()
        .find(|f| f.name == "main.locktraceDistinctiveGoFrame")
        .expect("the distinctive function");
    assert!(main.entry < main.end);
}

#[test]
fn matches_go_nm_static() {
    check_against_nm(testprog::GO_PROGRAM, GoMode::Static);
}

#[test]
fn matches_go_nm_pie() {
    check_against_nm(testprog::GO_PROGRAM, GoMode::Pie);
}

#[test]
fn matches_go_nm_cgo_pie() {
    check_against_nm(testprog::GO_CGO_PROGRAM, GoMode::CgoPie);
}

/// A real podman build (an extra: skipped with a reason when the file is absent).
fn check_podman(path: &str, prefixes: &[&str]) {
    let path = Path::new(path);
    if !path.is_file() {
        println!("skipped: {} is absent", path.display());
        return;
    }
    let data = std::fs::read(path).unwrap();
    let table = GoTable::from_elf(&data[..]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    println!("{}: {} Go functions", path.display(), table.len());
    assert!(table.len() > 10_000, "only {} functions", table.len());
    let storage = table
        .functions()
        .find(|f| prefixes.iter().any(|p| f.name.starts_with(p)))
        .unwrap_or_else(|| panic!("no function starts with {prefixes:?}"));
    // The table's name for an address inside that function is the function itself.
    let mid = storage.entry + (storage.end - storage.entry) / 2;
    assert_eq!(table.lookup(mid).map(|f| f.name), Some(storage.name));
}

#[test]
fn podman_debian() {
    check_podman("/usr/bin/podman", &["github.com/containers/storage."]);
}

#[test]
fn podman_sid() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/podman-sid/rootfs/usr/bin/podman"
    );
    let fallback = "/work/main/target/podman-sid/rootfs/usr/bin/podman";
    let path = if Path::new(path).is_file() {
        path
    } else {
        fallback
    };
    check_podman(
        path,
        &["go.podman.io/storage.", "github.com/containers/storage."],
    );
}

#[test]
fn older_magic_is_unsupported() {
    let mut bytes = vec![0u8; 128];
    bytes[..4].copy_from_slice(&0xffff_fffau32.to_le_bytes());
    bytes[6] = 1;
    bytes[7] = 8;
    assert!(matches!(
        GoTable::from_pclntab(&bytes, 0x40_1000, false),
        Err(GoTableError::Unsupported(0xffff_fffa))
    ));
    assert!(GoTable::from_pclntab(&[], 0x40_1000, false).is_err());
    assert!(GoTable::from_elf(&[0x7f, b'E', b'L', b'F'][..]).is_err());
}

/// A small deterministic generator (xorshift), enough to pick bytes to corrupt.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below.max(1) as u64) as usize
    }
}

#[test]
fn corrupt_tables_do_not_panic() {
    let built = testprog::go_build(testprog::GO_PROGRAM, GoMode::Static, true);
    let elf = std::fs::read(&built.path).unwrap();
    let file = object::File::parse(&elf[..]).unwrap();
    let pclntab = file
        .section_by_name(".gopclntab")
        .expect(".gopclntab")
        .data()
        .unwrap()
        .to_vec();
    let good = GoTable::from_pclntab(&pclntab, 0x40_1000, false).expect("the intact table");
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let check = |t: Result<GoTable, GoTableError>| {
        if let Ok(t) = t {
            // Lookups on whatever parsed must not panic either.
            for probe in [0, 0x40_1000, 0x40_1234, u64::MAX] {
                let _ = t.lookup(probe);
            }
            let _ = t.functions().count();
        }
    };
    for len in (0..200).chain((200..pclntab.len()).step_by(997)) {
        check(GoTable::from_pclntab(&pclntab[..len], 0x40_1000, false));
    }
    for round in 0..3000 {
        let mut bytes = pclntab.clone();
        // Half the flips hit the header and function table, where they matter most.
        let span = if round % 2 == 0 { 4096 } else { bytes.len() };
        for _ in 0..1 + rng.next(4) {
            let at = rng.next(span.min(bytes.len()));
            bytes[at] ^= 1 << rng.next(8);
        }
        check(GoTable::from_pclntab(&bytes, 0x40_1000, false));
    }
    for round in 0..300 {
        let mut bytes = elf.clone();
        if round % 3 == 0 {
            bytes.truncate(rng.next(elf.len()));
        } else {
            for _ in 0..8 {
                let at = rng.next(bytes.len());
                bytes[at] ^= 1 << rng.next(8);
            }
        }
        check(GoTable::from_elf(&bytes[..]));
    }
    assert!(good.len() > 1000);
}
