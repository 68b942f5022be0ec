//! Layer creation in both modes: identical trees, compression detection, hostile archives, conflicts.

mod common;

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use common::{Collect, Tar, gzip, is_root, role, sha256, snapshot, spawn_self, wait_ok, zstd};
use store_core::{
    EventKind, ExtractMode, IdMap, LayerRequest, Op, Store, StoreError, StoreOptions, SyncLevel,
};

fn open(dir: &Path) -> Store {
    Store::open(dir, StoreOptions::default()).unwrap()
}

fn req(id: &str) -> LayerRequest {
    LayerRequest {
        id: Some(id.to_string()),
        ..LayerRequest::default()
    }
}

const MODES: [ExtractMode; 2] = [ExtractMode::Locked, ExtractMode::Staged];

/// A layer exercising every entry kind the extractor handles.
fn rich_tar() -> Vec<u8> {
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    Tar::default()
        .dir("./", 0o751)
        .dir("etc", 0o755)
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644)
        .file("bin/sh", b"#!shell", 0o755)
        .file("usr/bin/su", b"su", 0o4755)
        .xattr("user.origin", b"layer-test")
        .file("etc/with-xattr", b"x", 0o600)
        .symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
        .symlink("lib", "usr/lib")
        .hardlink("bin/sh-link", "bin/sh")
        .node("dev/null", tar::EntryType::Char, 1, 3)
        .node("dev/loop0", tar::EntryType::Block, 7, 0)
        .node("run/fifo", tar::EntryType::Fifo, 0, 0)
        .file("var/.wh.oldfile", b"", 0o644)
        .dir("opt", 0o755)
        .file("opt/.wh..wh..opq", b"", 0o644)
        .file("opt/new", b"new", 0o644)
        .dir("ro", 0o555)
        .file("ro/inside", b"inside a read-only dir", 0o444)
        .owned_file("home/user/file", b"owned", 1000, 1001)
        .file("dup", b"first", 0o644)
        .file("dup", b"second wins", 0o600)
        .file(
            &format!("deep/{}/name", "long".repeat(40)),
            b"long path",
            0o644,
        )
        .file("big.bin", &big, 0o644)
        .finish()
}

#[test]
fn both_modes_produce_identical_trees() {
    if !is_root() {
        eprintln!("skipping: device nodes, whiteouts and ownership need root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let tar = rich_tar();
    let a = store
        .create_layer_with_mode(&req("locked"), &tar[..], ExtractMode::Locked)
        .unwrap();
    let b = store
        .create_layer_with_mode(&req("staged"), &tar[..], ExtractMode::Staged)
        .unwrap();
    assert_eq!(a.uncompressed_digest, sha256(&tar));
    assert_eq!(b.uncompressed_digest, a.uncompressed_digest);
    assert_eq!(a.uncompressed_size, tar.len() as u64);

    let (da, db) = (store.diff_path("locked"), store.diff_path("staged"));
    let (sa, sb) = (snapshot(&da), snapshot(&db));
    assert_eq!(sa, sb);

    // And the tree is what the archive says, not merely the same wrong thing twice.
    let md = |p: &str| std::fs::symlink_metadata(db.join(p)).unwrap();
    assert_eq!(md("").mode() & 0o7777, 0o751);
    assert_eq!(md("usr/bin/su").mode() & 0o7777, 0o4755);
    assert_eq!(md("ro").mode() & 0o7777, 0o555);
    assert_eq!(md("bin/sh").ino(), md("bin/sh-link").ino());
    assert_eq!(
        std::fs::read_link(db.join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/UTC")
    );
    assert!(md("dev/null").file_type().is_char_device());
    assert_eq!(md("dev/null").rdev(), libc::makedev(1, 3));
    assert!(md("dev/loop0").file_type().is_block_device());
    assert!(md("run/fifo").file_type().is_fifo());
    let wh = md("var/oldfile");
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout must be a 0:0 char device"
    );
    assert!(!db.join("var/.wh.oldfile").exists());
    assert_eq!(
        sb[Path::new("opt")]
            .xattrs
            .get("trusted.overlay.opaque")
            .map(Vec::as_slice),
        Some(&b"y"[..])
    );
    assert!(!db.join("opt/.wh..wh..opq").exists());
    assert_eq!(
        sb[Path::new("etc/with-xattr")]
            .xattrs
            .get("user.origin")
            .map(Vec::as_slice),
        Some(&b"layer-test"[..])
    );
    assert_eq!(
        (md("home/user/file").uid(), md("home/user/file").gid()),
        (1000, 1001)
    );
    assert_eq!(std::fs::read(db.join("dup")).unwrap(), b"second wins");
    assert_eq!(md("dup").mode() & 0o777, 0o600);
    assert_eq!(md("etc/passwd").mtime(), 1_600_000_000);
    assert_eq!(md("etc").mtime(), 1_600_000_000); // directory times are set after their children
    assert_eq!(md("").mtime(), 1_600_000_000);
    assert_eq!(md("big.bin").len(), 3_000_000);
}

#[test]
fn compression_is_detected_by_magic_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let tar = Tar::default()
        .file("a/b.txt", b"hello", 0o644)
        .dir("c", 0o700)
        .finish();
    let (gz, zs) = (gzip(&tar), zstd(&tar));
    for mode in MODES {
        let plain = store
            .create_layer_with_mode(&req(&format!("plain-{mode}")), &tar[..], mode)
            .unwrap();
        let g = store
            .create_layer_with_mode(&req(&format!("gzip-{mode}")), &gz[..], mode)
            .unwrap();
        let z = store
            .create_layer_with_mode(&req(&format!("zstd-{mode}")), &zs[..], mode)
            .unwrap();
        for l in [&plain, &g, &z] {
            assert_eq!(l.uncompressed_digest, sha256(&tar), "{}", l.id);
            assert_eq!(l.uncompressed_size, tar.len() as u64);
            assert_eq!(
                std::fs::read(store.diff_path(&l.id).join("a/b.txt")).unwrap(),
                b"hello"
            );
        }
        assert_eq!(
            (plain.compressed_digest, plain.compressed_size),
            (None, None)
        );
        assert_eq!(g.compressed_digest, Some(sha256(&gz)));
        assert_eq!(g.compressed_size, Some(gz.len() as u64));
        assert_eq!(z.compressed_digest, Some(sha256(&zs)));
    }
    assert_eq!(
        snapshot(&store.diff_path("gzip-locked")),
        snapshot(&store.diff_path("zstd-staged"))
    );
}

fn assert_clean(store: &Store, id: &str) {
    assert!(matches!(store.layer(id), Err(StoreError::LayerNotFound(_))));
    assert!(
        !store.root().join("overlay").join(id).exists(),
        "layer dir of {id} left behind"
    );
    let staging: Vec<_> = std::fs::read_dir(store.root().join("overlay/staging"))
        .unwrap()
        .collect();
    assert!(staging.is_empty(), "staging leftovers: {staging:?}");
}

#[test]
fn hostile_archives_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path().display().to_string();
    let store = open(&tmp.path().join("root"));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            Tar::default()
                .raw(b"../evil", tar::EntryType::Regular, b"", b"x")
                .finish(),
        ),
        (
            "nested-dotdot",
            Tar::default()
                .raw(b"a/../../evil", tar::EntryType::Regular, b"", b"x")
                .finish(),
        ),
        (
            "absolute",
            Tar::default()
                .raw(
                    format!("{out}/evil").as_bytes(),
                    tar::EntryType::Regular,
                    b"",
                    b"x",
                )
                .finish(),
        ),
        (
            "symlink-escape",
            Tar::default()
                .symlink("link", &out)
                .file("link/evil", b"x", 0o644)
                .finish(),
        ),
        (
            "symlink-dir-escape",
            Tar::default()
                .symlink("link", "..")
                .dir("link/evil", 0o755)
                .finish(),
        ),
        (
            "hardlink-dotdot",
            Tar::default()
                .raw(b"evil", tar::EntryType::Link, b"../../etc/passwd", b"")
                .finish(),
        ),
        (
            "hardlink-absolute",
            Tar::default()
                .raw(b"evil", tar::EntryType::Link, b"/etc/passwd", b"")
                .finish(),
        ),
        (
            // The classic: a directory is replaced by a symlink after entries were written into it.
            "dir-replaced-by-symlink",
            Tar::default()
                .file("a/b/f1", b"x", 0o644)
                .symlink("a", &out)
                .file("a/b/f2", b"x", 0o644)
                .finish(),
        ),
        (
            "hardlink-through-symlink",
            Tar::default()
                .symlink("link", "/etc")
                .raw(b"evil", tar::EntryType::Link, b"link/passwd", b"")
                .finish(),
        ),
    ];
    for mode in MODES {
        for (name, tar) in &cases {
            let id = format!("{name}-{mode}");
            let err = store
                .create_layer_with_mode(&req(&id), &tar[..], mode)
                .unwrap_err();
            assert!(matches!(err, StoreError::UnsafeEntry { .. }), "{id}: {err}");
            assert_clean(&store, &id);
        }
    }
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "something was written outside"
    );
    assert!(!tmp.path().join("evil").exists());
}

#[test]
fn corrupt_archives_are_refused_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let tar = Tar::default().file("f", &[7u8; 10_000], 0o644).finish();
    let mut bad_gz = gzip(&tar);
    let mid = bad_gz.len() / 2;
    bad_gz[mid..].iter_mut().for_each(|b| *b ^= 0x5a);
    let truncated = tar[..600].to_vec();
    for mode in MODES {
        for (name, data) in [("gz", &bad_gz), ("truncated", &truncated)] {
            let id = format!("{name}-{mode}");
            let err = store
                .create_layer_with_mode(&req(&id), &data[..], mode)
                .unwrap_err();
            assert!(matches!(err, StoreError::Archive(_)), "{id}: {err}");
            assert_clean(&store, &id);
        }
    }
}

/// A stream that must never be read.
struct Untouchable;

impl Read for Untouchable {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        panic!("the stream of an existing layer was read");
    }
}

#[test]
fn existing_layers_and_conflicts_are_found_before_extracting() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let tar = Tar::default().file("f", b"x", 0o644).finish();
    let mut base = req("base");
    base.names = vec!["base-name".into()];
    let first = store.create_layer(&base, &tar[..]).unwrap();
    for mode in MODES {
        assert_eq!(
            store
                .create_layer_with_mode(&base, Untouchable, mode)
                .unwrap(),
            first
        );
        let mut other_parent = req("base");
        other_parent.parent = Some("nope".into());
        let err = store
            .create_layer_with_mode(&other_parent, Untouchable, mode)
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        let mut taken = req(&format!("other-{mode}"));
        taken.names = vec!["base-name".into()];
        let err = store
            .create_layer_with_mode(&taken, Untouchable, mode)
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        let mut orphan = req(&format!("orphan-{mode}"));
        orphan.parent = Some("missing".into());
        let err = store
            .create_layer_with_mode(&orphan, Untouchable, mode)
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        let err = store
            .create_layer_with_mode(&req("../x"), Untouchable, mode)
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    }
    assert_eq!(store.layers().unwrap(), vec![first.clone()]);
    assert_eq!(store.layer("base-name").unwrap(), first);
}

#[test]
fn id_mappings_are_applied() {
    if !is_root() {
        eprintln!("skipping: chown to mapped IDs needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let map = vec![IdMap {
        container_id: 0,
        host_id: 100_000,
        size: 65536,
    }];
    let tar = Tar::default().owned_file("f", b"x", 1000, 2000).finish();
    for mode in MODES {
        let mut r = req(&format!("mapped-{mode}"));
        r.uid_map = map.clone();
        r.gid_map = map.clone();
        let l = store.create_layer_with_mode(&r, &tar[..], mode).unwrap();
        let md = std::fs::metadata(store.diff_path(&l.id).join("f")).unwrap();
        assert_eq!((md.uid(), md.gid()), (101_000, 102_000));
        assert_eq!(l.uid_map, map);
    }
    let unmapped = Tar::default().owned_file("f", b"x", 70_000, 0).finish();
    let mut r = req("unmapped");
    r.uid_map = map.clone();
    let err = store.create_layer(&r, &unmapped[..]).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
}

#[test]
fn delete_layer_respects_children_and_images() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let tar = Tar::default().file("f", b"x", 0o644).finish();
    store.create_layer(&req("parent"), &tar[..]).unwrap();
    let mut c = req("child");
    c.parent = Some("parent".into());
    store.create_layer(&c, &tar[..]).unwrap();
    store
        .create_image("img", Some("child"), &["img:latest".into()], None)
        .unwrap();
    assert!(matches!(
        store.delete_layer("parent"),
        Err(StoreError::InUse(_))
    ));
    assert!(matches!(
        store.delete_layer("child"),
        Err(StoreError::InUse(_))
    ));
    assert!(matches!(
        store.delete_layer("nope"),
        Err(StoreError::LayerNotFound(_))
    ));
    let extra = store.create_layer(&req("extra"), &tar[..]).unwrap();
    assert_eq!(
        store.diff_digest("extra").unwrap(),
        extra.uncompressed_digest
    );
    store.delete_layer("extra").unwrap();
    assert_clean(&store, "extra");
    assert_eq!(store.layers().unwrap().len(), 2);
}

/// `(start, end)` of every kernel hold of `lock` (by file name) in `events`.
fn holds(events: &[store_core::StoreEvent], lock: &str, write: bool) -> Vec<(u64, u64)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::LockHold { lock: l, write: w } if l.ends_with(lock) && *w == write => {
                Some((e.start_mono_ns, e.start_mono_ns + e.duration_ns))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn staged_extraction_runs_outside_layers_lock_and_locked_inside() {
    let tmp = tempfile::tempdir().unwrap();
    let obs = Arc::new(Collect::default());
    let opts = StoreOptions {
        observer: Some(obs.clone()),
        ..StoreOptions::default()
    };
    let store = Store::open(tmp.path(), opts).unwrap();
    let tar = Tar::default().file("f", &[1u8; 1 << 20], 0o644).finish();
    for mode in MODES {
        obs.0.lock().unwrap().clear();
        store
            .create_layer_with_mode(&req(&format!("l-{mode}")), &tar[..], mode)
            .unwrap();
        let ev = obs.0.lock().unwrap().clone();
        let extract = ev
            .iter()
            .find(|e| e.kind == EventKind::Extract)
            .expect("an Extract event");
        let (xs, xe) = (
            extract.start_mono_ns,
            extract.start_mono_ns + extract.duration_ns,
        );
        let all_holds: Vec<_> = [true, false]
            .iter()
            .flat_map(|w| holds(&ev, "layers.lock", *w))
            .collect();
        let inside = all_holds.iter().any(|(s, e)| *s <= xs && xe <= *e);
        assert_eq!(
            inside,
            mode == ExtractMode::Locked,
            "{mode}: extract {xs}..{xe}, holds {all_holds:?}"
        );
        assert!(ev.iter().any(|e| e.kind == EventKind::Commit));
        assert!(
            ev.iter()
                .all(|e| e.op == Op::CreateLayer && e.pid == std::process::id())
        );
        assert!(!ev.iter().any(|e| matches!(&e.kind, EventKind::LockWait { lock, .. } if lock.ends_with("containers.lock"))));
        // Every kernel wait is followed by exactly one hold.
        let waits = ev
            .iter()
            .filter(|e| matches!(e.kind, EventKind::LockWait { .. }))
            .count();
        let hold_count = ev
            .iter()
            .filter(|e| matches!(e.kind, EventKind::LockHold { .. }))
            .count();
        assert_eq!(waits, hold_count);
        assert_eq!(holds(&ev, "layers.lock", true).len(), 1, "{mode}");
    }
}

#[test]
fn other_processes_see_new_layers() {
    if let Some(r) = role() {
        assert_eq!(r, "creator");
        let root = std::env::var("STORE_ROOT").unwrap();
        let store = open(Path::new(&root));
        let tar = Tar::default().file("f", b"from child", 0o644).finish();
        store.create_layer(&req("from-child"), &tar[..]).unwrap();
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    assert!(store.layers().unwrap().is_empty()); // now cached under the current token
    let child = spawn_self(
        "other_processes_see_new_layers",
        "creator",
        &[("STORE_ROOT", tmp.path().display().to_string())],
    );
    wait_ok(child);
    let ids: Vec<String> = store.layers().unwrap().into_iter().map(|l| l.id).collect();
    assert_eq!(ids, vec!["from-child".to_string()]);
}

#[test]
fn containers_take_layers_read_and_containers_write() {
    let tmp = tempfile::tempdir().unwrap();
    let obs = Arc::new(Collect::default());
    let opts = StoreOptions {
        observer: Some(obs.clone()),
        ..StoreOptions::default()
    };
    let store = Store::open(tmp.path(), opts).unwrap();
    let tar = Tar::default().file("f", b"x", 0o644).finish();
    store.create_layer(&req("top"), &tar[..]).unwrap();
    let image = store
        .create_image(
            "imageid",
            Some("top"),
            &["app:1".into()],
            Some("sha256:abc"),
        )
        .unwrap();
    assert_eq!(store.image("app:1").unwrap(), image);
    obs.0.lock().unwrap().clear();
    let c = store.create_container("app:1", Some("web")).unwrap();
    let ev = obs.0.lock().unwrap().clone();
    assert_eq!(holds(&ev, "layers.lock", false).len(), 1);
    assert_eq!(holds(&ev, "layers.lock", true).len(), 0);
    assert_eq!(holds(&ev, "containers.lock", true).len(), 1);
    assert!(ev.iter().all(|e| e.op == Op::CreateContainer));
    assert_eq!(c.image, "imageid");
    assert!(store.diff_path(&c.layer).is_dir());
    assert!(matches!(
        store.create_container("app:1", Some("web")),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.create_container("nope", None),
        Err(StoreError::ImageNotFound(_))
    ));
    // A container layer is not a layer others can build on.
    let mut on_container = req("on-container");
    on_container.parent = Some(c.layer.clone());
    assert!(store.create_layer(&on_container, &tar[..]).is_err());
    assert_eq!(store.containers().unwrap(), vec![c.clone()]);
    store.delete_container("web").unwrap();
    assert!(store.containers().unwrap().is_empty());
    assert!(!store.diff_path(&c.layer).exists());
}

#[test]
fn one_store_shared_by_threads() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(open(tmp.path()));
    assert_send_sync(&store);
    let tar = Tar::default().file("f", &[9u8; 200_000], 0o644).finish();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (store, tar) = (&store, &tar);
            s.spawn(move || {
                for i in 0..5 {
                    let mode = MODES[(t + i) % 2];
                    store
                        .create_layer_with_mode(&req(&format!("t{t}-{i}")), &tar[..], mode)
                        .unwrap();
                    // Everyone also races on one shared ID.
                    store
                        .create_layer_with_mode(&req("shared"), &tar[..], mode)
                        .unwrap();
                    assert!(store.layers().unwrap().len() > i);
                }
            });
        }
    });
    assert_eq!(store.layers().unwrap().len(), 21);
    assert_eq!(
        std::fs::read_dir(tmp.path().join("overlay/staging"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn stores_at_every_sync_level_create_and_delete_layers() {
    for sync in [SyncLevel::None, SyncLevel::Metadata, SyncLevel::Filesystem] {
        let tmp = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            sync,
            extract_mode: ExtractMode::Locked,
            ..StoreOptions::default()
        };
        let store = Store::open(tmp.path(), opts).unwrap();
        let tar = Tar::default().file("f", b"durable", 0o644).finish();
        store.create_layer(&req("a"), &tar[..]).unwrap();
        store
            .create_layer_with_mode(&req("b"), &tar[..], ExtractMode::Staged)
            .unwrap();
        assert_eq!(
            snapshot(&store.diff_path("a")),
            snapshot(&store.diff_path("b")),
            "sync {sync}"
        );
        store.delete_layer("a").unwrap();
        let reopened = open(tmp.path());
        assert_eq!(reopened.layers().unwrap().len(), 1, "sync {sync}");
        assert_eq!(
            std::fs::read(reopened.diff_path("b").join("f")).unwrap(),
            b"durable",
            "sync {sync}"
        );
    }
}

/// The nice value of the calling thread (Linux: per thread).
fn thread_nice() -> i32 {
    // SAFETY: plain syscalls on our own thread ID.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
}

/// A tar stream that notes the nice value of each thread reading it.
struct NiceProbe<'a> {
    data: &'a [u8],
    seen: Vec<i32>,
}

impl Read for NiceProbe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.seen.push(thread_nice());
        self.data.read(buf)
    }
}

#[test]
fn staged_extraction_runs_at_lower_priority_and_lock_holders_keep_their_own() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(
        tmp.path(),
        StoreOptions {
            extract_nice: 5,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let tar = Tar::default().file("f", &[7u8; 100_000], 0o644).finish();
    let before = thread_nice();
    for (i, mode) in MODES.into_iter().enumerate() {
        let mut probe = NiceProbe {
            data: &tar,
            seen: Vec::new(),
        };
        store
            .create_layer_with_mode(&req(&format!("l{i}")), &mut probe, mode)
            .unwrap();
        assert!(!probe.seen.is_empty());
        // Locked extraction is the layers.lock hold itself: it must not be slowed down.
        let expected = match mode {
            ExtractMode::Staged => (before + 5).min(19),
            ExtractMode::Locked => before,
        };
        assert!(
            probe.seen.iter().all(|&n| n == expected),
            "{mode}: stream read at nice {:?}, expected {expected}",
            probe.seen
        );
        // The thread that takes and releases layers.lock is never slowed down.
        assert_eq!(thread_nice(), before, "{mode}");
    }
}

#[test]
fn staged_commit_leaves_only_the_metadata_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let tar = Tar::default().file("f", b"x", 0o644).finish();
    for id in ["a", "b", "c"] {
        store
            .create_layer_with_mode(&req(id), &tar[..], ExtractMode::Staged)
            .unwrap();
    }
    let names = |dir: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(tmp.path().join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    // The replacement layers.json is made in the staging dir and renamed over; no temp file is left.
    assert_eq!(names("overlay-layers"), ["layers.json", "layers.lock"]);
    assert!(names("overlay/staging").is_empty());
    let ids: Vec<String> = open(tmp.path())
        .layers()
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
}

/// Unmounts on drop, so a failing assertion does not leave a mount behind.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn staged_commit_works_when_overlay_is_a_mount_of_its_own() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs on overlay/ needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let overlay = tmp.path().join("overlay");
    std::fs::create_dir(&overlay).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "store-core-test"])
        .arg(&overlay)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs");
    let _unmount = Unmount(overlay);
    let store = open(tmp.path());
    let tar = Tar::default().file("f", b"x", 0o644).finish();
    // staging/ is on the tmpfs, layers.json is not: a rename between them fails with EXDEV.
    store
        .create_layer_with_mode(&req("a"), &tar[..], ExtractMode::Staged)
        .unwrap();
    store
        .create_layer_with_mode(&req("b"), &tar[..], ExtractMode::Staged)
        .unwrap();
    drop(store);
    let ids: Vec<String> = open(tmp.path())
        .layers()
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(ids, ["a", "b"]);
}
