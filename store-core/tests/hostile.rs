//! The hostile corpus: archives and OCI layouts an attacker or a careless tool could produce. Each case
//! is run in both extraction modes and must be refused (with the expected error, on one line) or
//! accepted as intended, without hanging, with nothing written outside the store, nothing left behind
//! in it, and the store usable afterwards.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use common::{Tar, TestImage, gzip, is_root, sha256, write_layout, zstd};
use store_core::oci::pull;
use store_core::{
    ExtractMode, FreeSpaceReserve, LayerRequest, Limit, Store, StoreError, StoreOptions,
};

const MODES: [ExtractMode; 2] = [ExtractMode::Locked, ExtractMode::Staged];

/// Far above what any case needs; a case that takes this long is hanging.
const HANG: Duration = Duration::from_secs(60);

/// What a case feeds the store.
enum Input {
    /// A layer stream for `create_layer`.
    Layer(Vec<u8>),
    /// An OCI layout directory for `pull`.
    Pull(PathBuf),
}

/// What must happen.
enum Expect {
    /// Created; the check inspects the layer's `diff` directory.
    Accepted(fn(&Path)),
    /// Refused with an error this predicate accepts.
    Refused(fn(&StoreError) -> bool),
}

struct Case {
    name: &'static str,
    /// Builds the input; gets a scratch directory of its own and the "outside" directory.
    build: fn(&Path, &Path) -> Input,
    expect: Expect,
    /// Adjusts the store's options (limits).
    opts: fn(&mut StoreOptions),
    /// Needs root to set up (device nodes).
    root_only: bool,
}

fn defaults(_: &mut StoreOptions) {}

fn one_mib_limit(o: &mut StoreOptions) {
    o.max_layer_size = Some(1 << 20);
}

fn huge_reserve(o: &mut StoreOptions) {
    o.free_space_reserve = FreeSpaceReserve::Bytes(u64::MAX / 2);
}

fn whole_filesystem_reserve(o: &mut StoreOptions) {
    o.free_space_reserve = FreeSpaceReserve::Percent(100);
}

fn unsafe_entry(e: &StoreError) -> bool {
    matches!(e, StoreError::UnsafeEntry { .. })
}

fn archive(e: &StoreError) -> bool {
    matches!(e, StoreError::Archive(_))
}

fn too_large(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::LimitExceeded(Limit::LayerSize { max: 1048576 })
    )
}

fn no_space(e: &StoreError) -> bool {
    matches!(e, StoreError::LimitExceeded(Limit::FreeSpace { .. }))
}

fn unmappable_owner(e: &StoreError) -> bool {
    matches!(e, StoreError::Invalid(m) if m.contains("4294967295") && m.contains("does not fit"))
}

fn oci_not_regular(e: &StoreError) -> bool {
    matches!(e, StoreError::Oci { msg, .. } if msg.contains("symlink") || msg.contains("not a regular file"))
}

fn oci(e: &StoreError) -> bool {
    matches!(e, StoreError::Oci { .. })
}

fn escaped_one_line(e: &StoreError) -> bool {
    let s = e.to_string();
    archive(e) && s.contains(r"evil\n\u{1b}[31mname")
}

fn layer(b: &mut Tar) -> Input {
    Input::Layer(b.finish())
}

fn out_path(outside: &Path, rest: &str) -> String {
    format!("{}{rest}", outside.display())
}

/// 8 MiB of zeros: compresses to a few KiB.
fn zeros_tar() -> Vec<u8> {
    Tar::default()
        .file("zeros", &vec![0u8; 8 << 20], 0o644)
        .finish()
}

/// A tar written by Python's `tarfile` (empty device fields for a FIFO).
fn python_tar(entries: &str) -> Vec<u8> {
    let script = format!(
        "import io, sys, tarfile\nb = io.BytesIO()\nt = tarfile.open(fileobj=b, mode='w')\n{entries}\nt.close()\nsys.stdout.buffer.write(b.getvalue())\n"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A tar whose one file is preceded by a PAX header with `key=value`.
fn pax_tar(key: &str, value: &[u8]) -> Vec<u8> {
    Tar::default()
        .pax(key, value)
        .file("f", b"data", 0o644)
        .finish()
}

/// A one-layer layout in `dir`; returns what was written.
fn small_layout(dir: &Path) -> common::Written {
    let tar = Tar::default().file("hello", b"hello", 0o644).finish();
    write_layout(
        dir,
        &[TestImage {
            tag: None,
            layers: vec![tar],
            compress: gzip,
        }],
    )
    .remove(0)
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256").join(&digest[7..])
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: c is NUL-terminated.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

fn mknod_zero(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: c is NUL-terminated.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 5)) };
    assert_eq!(r, 0, "mknod needs root");
}

/// Rewrites the index so its one manifest descriptor says `size` bytes (0 is what `/dev/zero` reports).
fn set_manifest_size(dir: &Path, size: u64) {
    let path = dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    index["manifests"][0]["size"] = size.into();
    std::fs::write(path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Replaces the manifest with one whose layer (or config) descriptor says 0 bytes, keeping the index valid.
fn zero_size_descriptor(dir: &Path, w: &common::Written, field: &str) {
    let old = blob_path(dir, &w.manifest_digest);
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&old).unwrap()).unwrap();
    match field {
        "layer" => m["layers"][0]["size"] = 0.into(),
        _ => m["config"]["size"] = 0.into(),
    }
    let data = serde_json::to_vec(&m).unwrap();
    let digest = sha256(&data);
    std::fs::write(blob_path(dir, &digest), &data).unwrap();
    let path = dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = data.len().into();
    std::fs::write(path, serde_json::to_vec(&index).unwrap()).unwrap();
}

fn replace_with_symlink(path: &Path, target: &Path) {
    std::fs::remove_file(path).unwrap();
    std::os::unix::fs::symlink(target, path).unwrap();
}

fn replace_with_fifo(path: &Path) {
    std::fs::remove_file(path).unwrap();
    mkfifo(path);
}

fn c(name: &'static str, build: fn(&Path, &Path) -> Input, expect: Expect) -> Case {
    Case {
        name,
        build,
        expect,
        opts: defaults,
        root_only: false,
    }
}

fn refused(pred: fn(&StoreError) -> bool) -> Expect {
    Expect::Refused(pred)
}

fn cases() -> Vec<Case> {
    vec![
        // Path escapes.
        c(
            "dotdot",
            |_, _| layer(Tar::default().raw(b"../evil", tar::EntryType::Regular, b"", b"x")),
            refused(unsafe_entry),
        ),
        c(
            "nested-dotdot",
            |_, _| layer(Tar::default().raw(b"a/../../evil", tar::EntryType::Regular, b"", b"x")),
            refused(unsafe_entry),
        ),
        c(
            "absolute",
            |_, out| {
                layer(Tar::default().raw(
                    out_path(out, "/evil").as_bytes(),
                    tar::EntryType::Regular,
                    b"",
                    b"x",
                ))
            },
            refused(unsafe_entry),
        ),
        c(
            "symlink-escape",
            |_, out| {
                layer(Tar::default().symlink("link", &out_path(out, "")).file(
                    "link/evil",
                    b"x",
                    0o644,
                ))
            },
            refused(unsafe_entry),
        ),
        c(
            "symlink-dir-escape",
            |_, _| layer(Tar::default().symlink("link", "..").dir("link/evil", 0o755)),
            refused(unsafe_entry),
        ),
        c(
            "hardlink-dotdot",
            |_, _| {
                layer(Tar::default().raw(b"evil", tar::EntryType::Link, b"../../etc/passwd", b""))
            },
            refused(unsafe_entry),
        ),
        c(
            "hardlink-absolute",
            |_, _| layer(Tar::default().raw(b"evil", tar::EntryType::Link, b"/etc/passwd", b"")),
            refused(unsafe_entry),
        ),
        c(
            "dir-replaced-by-symlink",
            |_, out| {
                layer(
                    Tar::default()
                        .file("a/b/f1", b"x", 0o644)
                        .symlink("a", &out_path(out, ""))
                        .file("a/b/f2", b"x", 0o644),
                )
            },
            refused(unsafe_entry),
        ),
        c(
            "hardlink-through-symlink",
            |_, _| {
                layer(Tar::default().symlink("link", "/etc").raw(
                    b"evil",
                    tar::EntryType::Link,
                    b"link/passwd",
                    b"",
                ))
            },
            refused(unsafe_entry),
        ),
        c(
            "hardlink-to-directory",
            |_, _| {
                layer(
                    Tar::default()
                        .dir("d", 0o755)
                        .raw(b"evil", tar::EntryType::Link, b"d", b""),
                )
            },
            refused(unsafe_entry),
        ),
        c(
            "whiteout-of-dot",
            |_, _| layer(Tar::default().raw(b"a/.wh..", tar::EntryType::Regular, b"", b"")),
            refused(unsafe_entry),
        ),
        c(
            "file-as-layer-root",
            |_, _| layer(Tar::default().raw(b"./", tar::EntryType::Regular, b"", b"x")),
            refused(unsafe_entry),
        ),
        c(
            "symlink-empty-target",
            |_, _| layer(Tar::default().raw(b"s", tar::EntryType::Symlink, b"", b"")),
            refused(unsafe_entry),
        ),
        // Broken archives.
        c(
            "hardlink-missing-target",
            |_, _| layer(Tar::default().raw(b"evil", tar::EntryType::Link, b"missing", b"")),
            refused(archive),
        ),
        c(
            "truncated",
            |_, _| {
                Input::Layer(Tar::default().file("f", &[7; 10_000], 0o644).finish()[..600].to_vec())
            },
            refused(archive),
        ),
        c(
            "corrupt-gzip",
            |_, _| {
                let mut gz = gzip(&Tar::default().file("f", &[7; 10_000], 0o644).finish());
                let mid = gz.len() / 2;
                gz[mid..].iter_mut().for_each(|b| *b ^= 0x5a);
                Input::Layer(gz)
            },
            refused(archive),
        ),
        c(
            "control-chars-in-name",
            |_, _| {
                layer(Tar::default().raw(
                    b"evil\n\x1b[31mname",
                    tar::EntryType::Link,
                    b"missing",
                    b"",
                ))
            },
            refused(escaped_one_line),
        ),
        // Resource limits.
        Case {
            opts: one_mib_limit,
            ..c(
                "gzip-bomb",
                |_, _| Input::Layer(gzip(&zeros_tar())),
                refused(too_large),
            )
        },
        Case {
            opts: one_mib_limit,
            ..c(
                "zstd-bomb",
                |_, _| Input::Layer(zstd(&zeros_tar())),
                refused(too_large),
            )
        },
        Case {
            opts: one_mib_limit,
            ..c(
                "plain-over-limit",
                |_, _| Input::Layer(zeros_tar()),
                refused(too_large),
            )
        },
        Case {
            opts: one_mib_limit,
            ..c(
                "bomb-after-end-of-archive",
                |_, _| {
                    let mut t = Tar::default().file("f", b"small", 0o644).finish();
                    t.extend(std::iter::repeat_n(0u8, 8 << 20));
                    Input::Layer(gzip(&t))
                },
                refused(too_large),
            )
        },
        Case {
            opts: huge_reserve,
            ..c(
                "free-space-reserve",
                |_, _| layer(Tar::default().file("f", b"x", 0o644)),
                refused(no_space),
            )
        },
        Case {
            opts: whole_filesystem_reserve,
            ..c(
                "free-space-reserve-percent",
                |_, _| layer(Tar::default().file("f", b"x", 0o644)),
                refused(no_space),
            )
        },
        // What real tar writers produce.
        c(
            "python-fifo",
            |_, _| {
                Input::Layer(python_tar(
                    "i = tarfile.TarInfo('run/fifo'); i.type = tarfile.FIFOTYPE; t.addfile(i)",
                ))
            },
            Expect::Accepted(|d| {
                assert!(
                    std::fs::symlink_metadata(d.join("run/fifo"))
                        .unwrap()
                        .file_type()
                        .is_fifo()
                );
            }),
        ),
        Case {
            root_only: true,
            ..c(
                "python-char-device",
                |_, _| {
                    Input::Layer(python_tar(
                        "i = tarfile.TarInfo('dev/null'); i.type = tarfile.CHRTYPE; i.devmajor = 1; i.devminor = 3; t.addfile(i)",
                    ))
                },
                Expect::Accepted(|d| {
                    let md = std::fs::symlink_metadata(d.join("dev/null")).unwrap();
                    assert!(md.file_type().is_char_device());
                    assert_eq!(
                        std::os::unix::fs::MetadataExt::rdev(&md),
                        libc::makedev(1, 3)
                    );
                }),
            )
        },
        Case {
            root_only: true,
            ..c(
                "char-device-with-blank-numbers",
                |_, _| {
                    let mut t = Tar::default();
                    t.node("dev/blank", tar::EntryType::Char, 0, 0);
                    let mut data = t.finish();
                    // Blank the device fields (329..345) and fix the checksum.
                    data[329..345].fill(b' ');
                    let mut h = tar::Header::new_old();
                    h.as_mut_bytes().copy_from_slice(&data[..512]);
                    h.set_cksum();
                    data[..512].copy_from_slice(h.as_bytes());
                    Input::Layer(data)
                },
                Expect::Accepted(|d| {
                    let md = std::fs::symlink_metadata(d.join("dev/blank")).unwrap();
                    assert!(md.file_type().is_char_device());
                    assert_eq!(std::os::unix::fs::MetadataExt::rdev(&md), 0);
                }),
            )
        },
        // PAX numbers the reader relies on.
        c(
            "pax-size-too-big",
            |_, _| Input::Layer(pax_tar("size", b"99999999999999999999")),
            refused(archive),
        ),
        c(
            "pax-size-negative",
            |_, _| Input::Layer(pax_tar("size", b"-1")),
            refused(archive),
        ),
        c(
            "pax-uid-not-a-number",
            |_, _| Input::Layer(pax_tar("uid", b"root")),
            refused(archive),
        ),
        c(
            "pax-mtime-not-a-number",
            |_, _| Input::Layer(pax_tar("mtime", b"yesterday")),
            refused(archive),
        ),
        // Owners that do not fit.
        c(
            "uid-minus-one",
            |_, _| layer(Tar::default().owned_file("f", b"x", u64::from(u32::MAX), 0)),
            refused(unmappable_owner),
        ),
        c(
            "gid-minus-one",
            |_, _| layer(Tar::default().owned_file("f", b"x", 0, u64::from(u32::MAX))),
            refused(unmappable_owner),
        ),
        // OCI layouts with blobs that are not regular files inside the layout.
        c(
            "layer-blob-symlink-to-dev-zero",
            |dir, _| {
                let w = small_layout(dir);
                zero_size_descriptor(dir, &w, "layer");
                replace_with_symlink(&blob_path(dir, &w.layer_digests[0]), Path::new("/dev/zero"));
                Input::Pull(dir.to_path_buf())
            },
            refused(oci_not_regular),
        ),
        c(
            "layer-blob-fifo",
            |dir, _| {
                let w = small_layout(dir);
                replace_with_fifo(&blob_path(dir, &w.layer_digests[0]));
                Input::Pull(dir.to_path_buf())
            },
            refused(oci_not_regular),
        ),
        Case {
            root_only: true,
            ..c(
                "layer-blob-device",
                |dir, _| {
                    let w = small_layout(dir);
                    zero_size_descriptor(dir, &w, "layer");
                    let p = blob_path(dir, &w.layer_digests[0]);
                    std::fs::remove_file(&p).unwrap();
                    mknod_zero(&p);
                    Input::Pull(dir.to_path_buf())
                },
                refused(oci_not_regular),
            )
        },
        c(
            "manifest-symlink-to-dev-zero",
            |dir, _| {
                let w = small_layout(dir);
                set_manifest_size(dir, 0);
                replace_with_symlink(&blob_path(dir, &w.manifest_digest), Path::new("/dev/zero"));
                Input::Pull(dir.to_path_buf())
            },
            refused(oci_not_regular),
        ),
        c(
            "config-fifo",
            |dir, _| {
                let w = small_layout(dir);
                zero_size_descriptor(dir, &w, "config");
                replace_with_fifo(&blob_path(dir, &w.config_digest));
                Input::Pull(dir.to_path_buf())
            },
            refused(oci_not_regular),
        ),
        c(
            "index-symlink-to-dev-zero",
            |dir, _| {
                small_layout(dir);
                replace_with_symlink(&dir.join("index.json"), Path::new("/dev/zero"));
                Input::Pull(dir.to_path_buf())
            },
            refused(oci_not_regular),
        ),
        c(
            "index-fifo",
            |dir, _| {
                small_layout(dir);
                replace_with_fifo(&dir.join("index.json"));
                Input::Pull(dir.to_path_buf())
            },
            refused(oci_not_regular),
        ),
        c(
            "index-larger-than-16-mib",
            |dir, _| {
                small_layout(dir);
                let mut big = b"{\"schemaVersion\": 2, \"manifests\": []".to_vec();
                big.extend(std::iter::repeat_n(b' ', 17 << 20));
                big.push(b'}');
                std::fs::write(dir.join("index.json"), big).unwrap();
                Input::Pull(dir.to_path_buf())
            },
            refused(|e| oci(e) && e.to_string().contains("larger than")),
        ),
        c(
            "digest-with-dotdot",
            |dir, _| {
                small_layout(dir);
                let path = dir.join("index.json");
                let mut index: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                index["manifests"][0]["digest"] = "sha256:../../../../etc/passwd".into();
                std::fs::write(path, serde_json::to_vec(&index).unwrap()).unwrap();
                Input::Pull(dir.to_path_buf())
            },
            refused(|e| oci(e) && e.to_string().contains("malformed digest")),
        ),
        c(
            "blobs-dir-symlink-out-of-layout",
            |dir, out| {
                small_layout(dir);
                let moved = out.join("blobs");
                std::fs::rename(dir.join("blobs"), &moved).unwrap();
                std::os::unix::fs::symlink(&moved, dir.join("blobs")).unwrap();
                Input::Pull(dir.to_path_buf())
            },
            refused(oci_not_regular),
        ),
    ]
}

/// Names and contents of everything under `dir`.
fn listing(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        let content = md.is_file().then(|| std::fs::read(&p).unwrap());
        out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), content);
    }
    out
}

/// Runs `f` on a thread of its own; a case that does not finish within [`HANG`] fails as hanging.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG)
        .unwrap_or_else(|_| panic!("{what}: did not finish within {HANG:?} (hangs)"))
}

/// Nothing of a refused layer or pull is left, nothing unrecorded is in `overlay/`, and the store
/// takes a new layer in the same mode (which needs layers.lock) and lists it.
fn assert_usable(root: &Path, mode: ExtractMode, what: &str) {
    let store = Store::open(root, StoreOptions::default()).unwrap();
    let staging = std::fs::read_dir(root.join("overlay/staging"))
        .unwrap()
        .count();
    assert_eq!(staging, 0, "{what}: staging leftovers");
    let recorded: Vec<String> = store.layers().unwrap().into_iter().map(|l| l.id).collect();
    for e in std::fs::read_dir(root.join("overlay")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            name == "staging" || recorded.contains(&name),
            "{what}: unrecorded overlay/{name}"
        );
    }
    let tar = Tar::default().file("after", b"still works", 0o644).finish();
    let req = LayerRequest {
        id: Some("after".into()),
        ..LayerRequest::default()
    };
    store.create_layer_with_mode(&req, &tar[..], mode).unwrap();
    assert_eq!(
        std::fs::read(store.diff_path("after").join("after")).unwrap(),
        b"still works"
    );
    store.delete_layer("after").unwrap();
}

/// Runs one case of [`cases`] in both modes, each in a directory of its own.
fn run_case(name: &str) {
    let cases = cases();
    let case = cases
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name}"));
    if case.root_only && !is_root() {
        eprintln!("{name}: needs root to set up; not run");
        return;
    }
    for mode in MODES {
        run_in_mode(case, mode);
    }
}

fn run_in_mode(case: &Case, mode: ExtractMode) {
    let what = format!("{} ({mode})", case.name);
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"untouched").unwrap();
    let scratch = tmp.path().join("input");
    std::fs::create_dir(&scratch).unwrap();
    let input = (case.build)(&scratch, &outside);
    let before = listing(&outside);
    let root = tmp.path().join("store");
    let mut opts = StoreOptions::default();
    (case.opts)(&mut opts);
    let store = Arc::new(Store::open(&root, opts).unwrap());
    let result = {
        let store = Arc::clone(&store);
        bounded(&what, move || match input {
            Input::Layer(data) => {
                let req = LayerRequest {
                    id: Some("case".into()),
                    ..LayerRequest::default()
                };
                store
                    .create_layer_with_mode(&req, &data[..], mode)
                    .map(|l| l.id)
            }
            Input::Pull(dir) => pull(&store, &dir, None, mode).map(|o| o.image.top_layer.unwrap()),
        })
    };
    match (&case.expect, result) {
        (Expect::Accepted(check), Ok(id)) => check(&store.diff_path(&id)),
        (Expect::Accepted(_), Err(e)) => panic!("{what}: refused: {e}"),
        (Expect::Refused(_), Ok(_)) => panic!("{what}: accepted"),
        (Expect::Refused(pred), Err(e)) => {
            let line = e.to_string();
            assert!(pred(&e), "{what}: unexpected error: {line}");
            assert!(
                !line.contains('\n') && !line.contains('\u{1b}'),
                "{what}: error is not one clean line: {line:?}"
            );
            assert!(store.layers().unwrap().is_empty(), "{what}: layer recorded");
            assert!(store.images().unwrap().is_empty(), "{what}: image recorded");
        }
    }
    assert_eq!(listing(&outside), before, "{what}: wrote outside the store");
    let mut top: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(
        top,
        ["input", "outside", "store"],
        "{what}: files appeared beside the store"
    );
    drop(store);
    let w = what.clone();
    bounded(&what, move || assert_usable(&root, mode, &w));
}

/// One test per case, named after it.
macro_rules! corpus {
    ($($test:ident: $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                run_case($name);
            }
        )*

        #[test]
        fn corpus_has_at_least_30_cases_and_a_test_for_each() {
            let tested = [$($name),*];
            let names: Vec<&str> = cases().iter().map(|c| c.name).collect();
            assert!(names.len() >= 30, "the corpus has {} cases", names.len());
            assert_eq!(names, tested, "cases() and the tests list differ");
        }
    };
}

corpus! {
    dotdot: "dotdot",
    nested_dotdot: "nested-dotdot",
    absolute: "absolute",
    symlink_escape: "symlink-escape",
    symlink_dir_escape: "symlink-dir-escape",
    hardlink_dotdot: "hardlink-dotdot",
    hardlink_absolute: "hardlink-absolute",
    dir_replaced_by_symlink: "dir-replaced-by-symlink",
    hardlink_through_symlink: "hardlink-through-symlink",
    hardlink_to_directory: "hardlink-to-directory",
    whiteout_of_dot: "whiteout-of-dot",
    file_as_layer_root: "file-as-layer-root",
    symlink_empty_target: "symlink-empty-target",
    hardlink_missing_target: "hardlink-missing-target",
    truncated: "truncated",
    corrupt_gzip: "corrupt-gzip",
    control_chars_in_name_are_escaped_on_one_line: "control-chars-in-name",
    gzip_bomb_stops_at_max_layer_size: "gzip-bomb",
    zstd_bomb_stops_at_max_layer_size: "zstd-bomb",
    plain_tar_over_max_layer_size: "plain-over-limit",
    bomb_after_end_of_archive: "bomb-after-end-of-archive",
    free_space_reserve_stops_extraction: "free-space-reserve",
    free_space_reserve_in_percent_stops_extraction: "free-space-reserve-percent",
    python_fifo_is_accepted: "python-fifo",
    python_char_device_is_accepted: "python-char-device",
    char_device_with_blank_numbers_is_accepted: "char-device-with-blank-numbers",
    pax_size_too_big_is_refused: "pax-size-too-big",
    pax_size_negative_is_refused: "pax-size-negative",
    pax_uid_not_a_number_is_refused: "pax-uid-not-a-number",
    pax_mtime_not_a_number_is_refused: "pax-mtime-not-a-number",
    uid_minus_one_is_refused: "uid-minus-one",
    gid_minus_one_is_refused: "gid-minus-one",
    layer_blob_symlink_to_dev_zero_is_refused_at_once: "layer-blob-symlink-to-dev-zero",
    layer_blob_fifo_is_refused_at_once: "layer-blob-fifo",
    layer_blob_device_is_refused_at_once: "layer-blob-device",
    manifest_symlink_to_dev_zero_is_refused_at_once: "manifest-symlink-to-dev-zero",
    config_fifo_is_refused_at_once: "config-fifo",
    index_symlink_to_dev_zero_is_refused_at_once: "index-symlink-to-dev-zero",
    index_fifo_is_refused_at_once: "index-fifo",
    index_larger_than_16_mib_is_refused: "index-larger-than-16-mib",
    digest_with_dotdot_is_refused: "digest-with-dotdot",
    blobs_dir_symlink_out_of_layout_is_refused: "blobs-dir-symlink-out-of-layout",
}

/// Unmounts on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn free_space_reserve_stops_a_running_extraction_and_removes_it() {
    if !is_root() {
        eprintln!("mounting a small tmpfs needs root; not run");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fs = tmp.path().join("fs");
    std::fs::create_dir(&fs).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "store-core-test"])
        .arg(&fs)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a tmpfs as root");
    let _mount = Mount(fs.clone());
    // 48 MiB of file content on a 64 MiB filesystem that must keep 32 MiB free: the first checks
    // pass, a later one (every 8 MiB) stops it.
    let tar = Tar::default()
        .file("big", &vec![1u8; 48 << 20], 0o644)
        .finish();
    let layer = gzip(&tar);
    for mode in MODES {
        let opts = StoreOptions {
            free_space_reserve: FreeSpaceReserve::Bytes(32 << 20),
            ..StoreOptions::default()
        };
        let root = fs.join(format!("store-{mode}"));
        let store = Store::open(&root, opts).unwrap();
        let req = LayerRequest {
            id: Some("big".into()),
            ..LayerRequest::default()
        };
        let err = store
            .create_layer_with_mode(&req, &layer[..], mode)
            .unwrap_err();
        match err {
            StoreError::LimitExceeded(Limit::FreeSpace { reserve, available }) => {
                assert_eq!(reserve, 32 << 20);
                assert!(available < reserve && available > 8 << 20, "{err}");
            }
            other => panic!("{mode}: expected the free-space limit, got {other}"),
        }
        drop(store);
        assert_usable(&root, mode, &format!("free space ({mode})"));
    }
}

#[test]
fn crash_leftover_temp_files_are_removed_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let (layers, images, containers) = {
        let store = Store::open(&root, StoreOptions::default()).unwrap();
        let tar = Tar::default().file("f", b"x", 0o644).finish();
        let l = store
            .create_layer(
                &LayerRequest {
                    id: Some("base".into()),
                    ..LayerRequest::default()
                },
                &tar[..],
            )
            .unwrap();
        store
            .create_image("img", Some(&l.id), &["tag".into()], None)
            .unwrap();
        store.create_container("img", Some("c")).unwrap();
        (
            store.layers().unwrap(),
            store.images().unwrap(),
            store.containers().unwrap(),
        )
    };
    // What a writer killed between writing its temp file and the rename leaves.
    let leftovers = [
        "overlay-layers/.layers.json.tmp",
        "overlay-images/.images.json.tmp",
        "overlay-containers/.containers.json.tmp",
    ];
    for l in leftovers {
        std::fs::write(root.join(l), b"[{\"half\": \"written").unwrap();
    }
    let store = Store::open(&root, StoreOptions::default()).unwrap();
    for l in leftovers {
        assert!(!root.join(l).exists(), "{l} is still there after open");
    }
    assert_eq!(store.layers().unwrap(), layers);
    assert_eq!(store.images().unwrap(), images);
    assert_eq!(store.containers().unwrap(), containers);
}
