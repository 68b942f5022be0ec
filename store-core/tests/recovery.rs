//! Crash recovery: kill -9 in the middle of an extraction, orphans, stale and live staging dirs.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};

use common::{Tar, role, spawn_self, wait_for, wait_ok};
use store_core::staging::{self, StagingDir};
use store_core::{ExtractMode, LayerRequest, Store, StoreOptions, SyncLevel};

/// A tar stream with one huge file whose content trickles in, so extraction is still running when killed.
struct Trickle {
    header: Vec<u8>,
    pos: usize,
}

impl Trickle {
    fn new() -> Self {
        let mut h = tar::Header::new_ustar();
        h.set_path("big").unwrap();
        h.set_size(1 << 40);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        Trickle {
            header: h.as_bytes().to_vec(),
            pos: 0,
        }
    }
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos < self.header.len() {
            let n = buf.len().min(self.header.len() - self.pos);
            buf[..n].copy_from_slice(&self.header[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        let n = buf.len().min(4096);
        buf[..n].fill(b'z');
        Ok(n)
    }
}

fn open(root: &Path) -> Store {
    Store::open(root, StoreOptions::default()).unwrap()
}

const LEVELS: [SyncLevel; 3] = [SyncLevel::None, SyncLevel::Metadata, SyncLevel::Filesystem];

/// The store at `root` opened at the sync level `STORE_SYNC` names (the parent's loop variable).
fn open_synced(root: &Path) -> Store {
    let opts = StoreOptions {
        sync: std::env::var("STORE_SYNC").unwrap().parse().unwrap(),
        ..StoreOptions::default()
    };
    Store::open(root, opts).unwrap()
}

fn staging_entries(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join("overlay/staging"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

fn layers_json(root: &Path) -> serde_json::Value {
    let data =
        std::fs::read(root.join("overlay-layers/layers.json")).unwrap_or_else(|_| b"[]".to_vec());
    serde_json::from_slice(&data).expect("layers.json must always parse")
}

/// Child role: start a never-ending extraction of layer "crashy" in the given mode.
fn run_trickler(mode: ExtractMode) {
    let root = PathBuf::from(std::env::var("STORE_ROOT").unwrap());
    let store = open_synced(&root);
    let base = Tar::default().file("base", b"base", 0o644).finish();
    store
        .create_layer(
            &LayerRequest {
                id: Some("base".into()),
                ..Default::default()
            },
            &base[..],
        )
        .unwrap();
    let req = LayerRequest {
        id: Some("crashy".into()),
        parent: Some("base".into()),
        ..Default::default()
    };
    let res = store.create_layer_with_mode(&req, Trickle::new(), mode);
    panic!("extraction was supposed to be killed, got {res:?}");
}

fn assert_alive(child: &mut std::process::Child) {
    if let Some(st) = child.try_wait().unwrap() {
        panic!("child exited early: {st}");
    }
}

/// Reopening at `sync` removed the killed child's partial layer and kept its committed parent.
fn assert_recovered(root: &Path, sync: SyncLevel) {
    let opts = StoreOptions {
        sync,
        ..StoreOptions::default()
    };
    let store = Store::open(root, opts).unwrap();
    assert!(
        staging_entries(root).is_empty(),
        "staging leftovers: {:?}",
        staging_entries(root)
    );
    assert!(!root.join("overlay/crashy").exists());
    let ids: Vec<String> = store.layers().unwrap().into_iter().map(|l| l.id).collect();
    assert_eq!(ids, vec!["base".to_string()]);
    let json = layers_json(root);
    assert_eq!(json.as_array().unwrap().len(), 1, "{json}");
    assert!(json[0].get("incomplete").is_none(), "{json}");
    assert_eq!(
        std::fs::read(store.diff_path("base").join("base")).unwrap(),
        b"base"
    );
}

#[test]
fn kill_during_staged_extraction_then_reopen() {
    if role().is_some() {
        run_trickler(ExtractMode::Staged);
        return;
    }
    for sync in LEVELS {
        kill_during_staged_extraction_at(sync);
    }
}

fn kill_during_staged_extraction_at(sync: SyncLevel) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut child = spawn_self(
        "kill_during_staged_extraction_then_reopen",
        "trickle",
        &[
            ("STORE_ROOT", root.display().to_string()),
            ("STORE_SYNC", sync.to_string()),
        ],
    );
    let extracting = || {
        staging_entries(root)
            .iter()
            .any(|p| std::fs::metadata(p.join("layer/diff/big")).is_ok_and(|m| m.len() > 0))
    };
    wait_for("the child to be extracting into a staging dir", || {
        assert_alive(&mut child);
        root.join("overlay/staging").exists() && extracting()
    });
    // Another process opening the store meanwhile must leave the live staging dir alone.
    let before = staging_entries(root);
    drop(open(root));
    assert_eq!(staging_entries(root), before);
    assert!(extracting());
    assert_alive(&mut child);

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !staging_entries(root).is_empty(),
        "the killed child's staging dir is still there before recovery"
    );
    assert_recovered(root, sync);
}

#[test]
fn kill_during_locked_extraction_then_reopen() {
    if role().is_some() {
        run_trickler(ExtractMode::Locked);
        return;
    }
    for sync in LEVELS {
        kill_during_locked_extraction_at(sync);
    }
}

fn kill_during_locked_extraction_at(sync: SyncLevel) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut child = spawn_self(
        "kill_during_locked_extraction_then_reopen",
        "trickle",
        &[
            ("STORE_ROOT", root.display().to_string()),
            ("STORE_SYNC", sync.to_string()),
        ],
    );
    wait_for("the child to be extracting into the layer dir", || {
        assert_alive(&mut child);
        std::fs::metadata(root.join("overlay/crashy/diff/big")).is_ok_and(|m| m.len() > 0)
    });
    // The record is marked incomplete while extraction runs.
    let json = layers_json(root);
    let crashy = json
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == "crashy")
        .expect("an incomplete record");
    assert_eq!(crashy["incomplete"], true);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_recovered(root, sync);
}

#[test]
fn recovery_removes_orphans_and_stale_staging_only() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    drop(open(root));
    let staging_root = root.join("overlay/staging");
    // Leftovers of crashed processes: an orphan layer dir, a dir without lock, an unlocked lock + dir, a tmp lock.
    std::fs::create_dir_all(root.join("overlay/orphan/diff")).unwrap();
    std::fs::write(root.join("overlay/stray-file"), b"").unwrap();
    std::fs::create_dir_all(staging_root.join("nolock/layer")).unwrap();
    std::fs::create_dir_all(staging_root.join("unlocked/layer")).unwrap();
    std::fs::write(staging_root.join("unlocked.lock"), b"").unwrap();
    std::fs::write(staging_root.join("tmp-abc.lock"), b"").unwrap();
    // A live staging dir of this very process survives (OFD locks conflict within a process too).
    let live = StagingDir::create(&staging_root).unwrap();
    std::fs::write(live.path().join("data"), b"live").unwrap();
    drop(open(root));
    let mut left = staging_entries(root);
    left.sort();
    let mut expected = vec![
        live.path().to_path_buf(),
        live.path().with_extension("lock"),
    ];
    expected.sort();
    assert_eq!(left, expected);
    assert!(!root.join("overlay/orphan").exists());
    assert!(!root.join("overlay/stray-file").exists());
    drop(live);
    assert!(
        staging_entries(root).is_empty(),
        "a dropped staging dir removes itself"
    );
    assert_eq!(staging::recover(&staging_root).unwrap(), 0);
}

#[test]
fn concurrent_staged_creation_of_one_layer() {
    if role().is_some() {
        let root = PathBuf::from(std::env::var("STORE_ROOT").unwrap());
        let store = open(&root);
        let tar = Tar::default()
            .file("data", &vec![3u8; 8 << 20], 0o644)
            .finish();
        wait_for("go", || root.join("go").exists());
        let req = LayerRequest {
            id: Some("same".into()),
            ..Default::default()
        };
        let l = store
            .create_layer_with_mode(&req, &tar[..], ExtractMode::Staged)
            .unwrap();
        std::fs::write(
            root.join(format!("created-{}", std::process::id())),
            l.created.to_string(),
        )
        .unwrap();
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    drop(open(root));
    let env = [("STORE_ROOT", root.display().to_string())];
    let kids: Vec<_> = (0..3)
        .map(|_| spawn_self("concurrent_staged_creation_of_one_layer", "create", &env))
        .collect();
    std::fs::write(root.join("go"), b"").unwrap();
    kids.into_iter().for_each(wait_ok);
    // Everyone got the same (single) layer back and nothing is left in staging.
    let created: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            e.file_name()
                .to_string_lossy()
                .starts_with("created-")
                .then(|| std::fs::read_to_string(e.path()).unwrap())
        })
        .collect();
    assert_eq!(created.len(), 3);
    assert!(created.iter().all(|c| *c == created[0]), "{created:?}");
    let store = open(root);
    assert_eq!(store.layers().unwrap().len(), 1);
    assert!(staging_entries(root).is_empty());
    assert_eq!(
        std::fs::read(store.diff_path("same").join("data"))
            .unwrap()
            .len(),
        8 << 20
    );
}

/// The write locks one `Store::open` of `root` took (lock file names).
fn write_locks_taken_by_open(root: &Path) -> Vec<String> {
    use std::sync::{Arc, Mutex};
    use store_core::{EventKind, Observer, StoreEvent};
    #[derive(Default)]
    struct Writes(Mutex<Vec<String>>);
    impl Observer for Writes {
        fn event(&self, ev: &StoreEvent) {
            if let EventKind::LockHold { lock, write: true } = &ev.kind {
                let name = lock.file_name().unwrap().to_string_lossy().into_owned();
                self.0.lock().unwrap().push(name);
            }
        }
    }
    let writes = Arc::new(Writes::default());
    let opts = StoreOptions {
        observer: Some(writes.clone()),
        ..StoreOptions::default()
    };
    drop(Store::open(root, opts).unwrap());
    writes.0.lock().unwrap().clone()
}

#[test]
fn opening_a_clean_store_takes_no_write_lock_and_a_crashed_one_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = open(root);
    let tar = Tar::default().file("f", b"x", 0o644).finish();
    let req = LayerRequest {
        id: Some("a".repeat(64)),
        ..Default::default()
    };
    store.create_layer(&req, &tar[..]).unwrap();
    drop(store);
    // Read locks only: a reader opening the store never queues behind, or blocks, a commit.
    assert_eq!(write_locks_taken_by_open(root), Vec::<String>::new());
    // What a crash leaves makes the next open take the write locks and clean up.
    std::fs::create_dir_all(root.join("overlay/orphan/diff")).unwrap();
    let writes = write_locks_taken_by_open(root);
    assert!(writes.contains(&"layers.lock".to_string()), "{writes:?}");
    assert!(!root.join("overlay/orphan").exists());
    std::fs::write(root.join("overlay-layers/.layers.json.tmp"), b"{").unwrap();
    assert!(write_locks_taken_by_open(root).contains(&"layers.lock".to_string()));
    assert!(!root.join("overlay-layers/.layers.json.tmp").exists());
    assert_eq!(write_locks_taken_by_open(root), Vec::<String>::new());
}
