//! Lock files across threads and real processes, and the lock order check.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use common::{Collect, role, spawn_self, wait_for, wait_ok};
use store_core::lockfile::{LockFile, Rank};
use store_core::{EventKind, Op};

fn lock_at(dir: &Path, rank: Rank) -> LockFile {
    LockFile::new(&dir.join("test.lock"), rank, None)
}

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var(name).unwrap())
}

#[test]
fn readers_share_across_processes() {
    if let Some(r) = role() {
        // Child: take a read lock while the parent holds one, and say so.
        assert_eq!(r, "reader");
        let dir = env_path("LOCK_DIR");
        let g = lock_at(&dir, Rank::Layers).read(Op::ReadLayers).unwrap();
        std::fs::write(dir.join("child-has-read"), b"").unwrap();
        drop(g);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let g = lock_at(tmp.path(), Rank::Layers)
        .read(Op::ReadLayers)
        .unwrap();
    let child = spawn_self(
        "readers_share_across_processes",
        "reader",
        &[("LOCK_DIR", tmp.path().display().to_string())],
    );
    // The child gets its read lock while ours is still held.
    wait_for("child read lock", || {
        tmp.path().join("child-has-read").exists()
    });
    drop(g);
    wait_ok(child);
}

#[test]
fn writer_excludes_other_processes() {
    if let Some(r) = role() {
        let dir = env_path("LOCK_DIR");
        let lock = lock_at(&dir, Rank::Layers);
        std::fs::write(dir.join(format!("{r}-waiting")), b"").unwrap();
        if r == "writer" {
            let _g = lock.write(Op::CreateLayer).unwrap();
        } else {
            let _g = lock.read(Op::ReadLayers).unwrap();
        }
        std::fs::write(dir.join(format!("{r}-acquired")), b"").unwrap();
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let g = lock_at(d, Rank::Layers).write(Op::CreateLayer).unwrap();
    let env = [("LOCK_DIR", d.display().to_string())];
    let writer = spawn_self("writer_excludes_other_processes", "writer", &env);
    let reader = spawn_self("writer_excludes_other_processes", "reader", &env);
    wait_for("children to start waiting", || {
        d.join("writer-waiting").exists() && d.join("reader-waiting").exists()
    });
    // Give them ample time to (wrongly) get in while we hold the write lock.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !d.join("writer-acquired").exists(),
        "a writer got in while we held the write lock"
    );
    assert!(
        !d.join("reader-acquired").exists(),
        "a reader got in while we held the write lock"
    );
    drop(g); // closing the fd must release the kernel lock
    wait_ok(writer);
    wait_ok(reader);
    assert!(d.join("writer-acquired").exists() && d.join("reader-acquired").exists());
}

const INCREMENTS: usize = 50;
const THREADS: usize = 3;

/// Read-modify-write of a counter file under the write lock: any exclusion gap loses increments.
fn bump_counter(dir: &Path) {
    let lock = lock_at(dir, Rank::Layers);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..INCREMENTS {
                    let _g = lock.write(Op::CreateLayer).unwrap();
                    let p = dir.join("counter");
                    let n: usize = std::fs::read_to_string(&p)
                        .map(|s| s.parse().unwrap())
                        .unwrap_or(0);
                    std::thread::yield_now();
                    std::fs::write(&p, (n + 1).to_string()).unwrap();
                }
            });
        }
    });
}

#[test]
fn writers_serialize_threads_and_processes() {
    if role().is_some() {
        bump_counter(&env_path("LOCK_DIR"));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let env = [("LOCK_DIR", tmp.path().display().to_string())];
    let children: Vec<_> = (0..3)
        .map(|_| spawn_self("writers_serialize_threads_and_processes", "bump", &env))
        .collect();
    bump_counter(tmp.path());
    children.into_iter().for_each(wait_ok);
    let n: usize = std::fs::read_to_string(tmp.path().join("counter"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(n, 4 * THREADS * INCREMENTS);
}

#[test]
fn one_kernel_lock_per_process_for_concurrent_readers() {
    let tmp = tempfile::tempdir().unwrap();
    let obs = Arc::new(Collect::default());
    let path = tmp.path().join("shared.lock");
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let lock = LockFile::new(&path, Rank::Images, Some(obs.clone()));
                let g = lock.read(Op::ReadImages).unwrap();
                barrier.wait(); // both hold the read lock here
                barrier.wait();
                drop(g);
            });
        }
    });
    let events = obs.0.lock().unwrap();
    let waits = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::LockWait { .. }))
        .count();
    let holds = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::LockHold { .. }))
        .count();
    assert_eq!((waits, holds), (1, 1), "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e.op == Op::ReadImages && e.pid == std::process::id())
    );
}

#[test]
fn last_write_token_changes_on_record_write() {
    let tmp = tempfile::tempdir().unwrap();
    let lock = lock_at(tmp.path(), Rank::Layers);
    let before = lock.read(Op::ReadLayers).unwrap().last_write().unwrap();
    let recorded = lock.write(Op::CreateLayer).unwrap().record_write().unwrap();
    let after = lock.read(Op::ReadLayers).unwrap().last_write().unwrap();
    assert_ne!(before, recorded);
    assert_eq!(after, recorded);
}

#[test]
fn locks_in_order_are_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let l = LockFile::new(&tmp.path().join("l.lock"), Rank::Layers, None);
    let i = LockFile::new(&tmp.path().join("i.lock"), Rank::Images, None);
    let c = LockFile::new(&tmp.path().join("c.lock"), Rank::Containers, None);
    let _l = l.read(Op::CreateContainer).unwrap();
    let _i = i.read(Op::CreateContainer).unwrap();
    let _c = c.write(Op::CreateContainer).unwrap();
}

#[test]
#[cfg_attr(debug_assertions, should_panic(expected = "lock order violation"))]
fn out_of_order_lock_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let c = LockFile::new(&tmp.path().join("c.lock"), Rank::Containers, None);
    let l = LockFile::new(&tmp.path().join("l.lock"), Rank::Layers, None);
    let _c = c.write(Op::CreateContainer).unwrap();
    // Release builds report the violation as an error instead of panicking.
    let err = l
        .read(Op::CreateContainer)
        .err()
        .expect("out-of-order lock must be refused");
    assert!(matches!(err, store_core::StoreError::LockOrder(_)), "{err}");
}

#[test]
#[cfg_attr(debug_assertions, should_panic(expected = "lock order violation"))]
fn same_lock_twice_on_one_thread_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let l = lock_at(tmp.path(), Rank::Layers);
    let _a = l.read(Op::ReadLayers).unwrap();
    let err = l
        .read(Op::ReadLayers)
        .err()
        .expect("recursive lock must be refused");
    assert!(matches!(err, store_core::StoreError::LockOrder(_)), "{err}");
}
