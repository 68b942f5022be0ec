//! Micro-benchmarks under the demo: what one lock round trip costs, how fast store-core extracts
//! compared with `tar -x`, and how long layers.lock is held per layer in staged vs locked mode.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lockbench::imagegen::{Compression, ImageSpec, write_layer_tar};
use lockbench::size::ByteSize;
use store_core::lockfile::{LockFile, Rank};
use store_core::{
    EventKind, ExtractMode, LayerRequest, Observer, Op, Store, StoreEvent, StoreOptions,
};

fn layer_tar(size: u64, seed: u64) -> Vec<u8> {
    let spec = ImageSpec {
        layers: 1,
        layer_size: ByteSize(size),
        files_per_layer: (size / (256 << 10)).max(1) as usize,
        compression: Compression::Plain,
        seed,
    };
    let mut tar = Vec::with_capacity(size as usize + (1 << 20));
    write_layer_tar(&mut tar, &spec, 0, &|_| {}).expect("in-memory tar");
    tar
}

/// Uncontended acquire + release of a lock file through store-core's lock API: open, fcntl, close.
fn lock_round_trip(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let lock = LockFile::new(&dir.path().join("layers.lock"), Rank::Layers, None);
    let mut group = c.benchmark_group("lock_uncontended");
    group.bench_function("read", |b| {
        b.iter(|| drop(lock.read(Op::ReadLayers).unwrap()))
    });
    group.bench_function("write", |b| {
        b.iter(|| drop(lock.write(Op::CreateLayer).unwrap()))
    });
    group.finish();
}

/// Creates a layer, timing only the creation; the deletion afterwards keeps the store small.
fn time_create(store: &Store, tar: &[u8], mode: ExtractMode) -> Duration {
    let start = Instant::now();
    let layer = store
        .create_layer_with_mode(&LayerRequest::default(), tar, mode)
        .expect("create_layer");
    let took = start.elapsed();
    store.delete_layer(&layer.id).expect("delete_layer");
    took
}

fn tar_x(tar: &[u8], into: &Path) -> Duration {
    std::fs::create_dir_all(into).unwrap();
    let start = Instant::now();
    let mut child = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(into)
        .stdin(Stdio::piped())
        .spawn()
        .expect("tar is installed");
    child.stdin.take().unwrap().write_all(tar).unwrap();
    assert!(child.wait().unwrap().success(), "tar -x failed");
    let took = start.elapsed();
    std::fs::remove_dir_all(into).unwrap();
    took
}

/// store-core's extraction (digesting, recording) next to plain `tar -x` of the same tarball.
fn extraction(c: &mut Criterion) {
    let size = 16u64 << 20;
    let tar = layer_tar(size, 1);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), StoreOptions::default()).unwrap();
    let mut group = c.benchmark_group("extract_16MiB");
    group.throughput(Throughput::Bytes(tar.len() as u64));
    group.sample_size(10);
    for mode in [ExtractMode::Locked, ExtractMode::Staged] {
        group.bench_function(format!("store-core {mode}"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| time_create(&store, &tar, mode)).sum())
        });
    }
    let scratch = dir.path().join("tar-x");
    group.bench_function("tar -x", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| tar_x(&tar, &scratch)).sum())
    });
    group.finish();
}

/// Collects layers.lock write holds as store-core reports them.
#[derive(Default)]
struct Holds(Mutex<Vec<u64>>);

impl Observer for Holds {
    fn event(&self, ev: &StoreEvent) {
        if let EventKind::LockHold { lock, write: true } = &ev.kind
            && lock.ends_with("layers.lock")
        {
            self.0.lock().unwrap().push(ev.duration_ns);
        }
    }
}

/// layers.lock write hold while creating one layer, by layer size: the staged commit should stay
/// flat (a rename) while the locked hold grows with the extraction.
fn commit_hold(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let holds = Arc::new(Holds::default());
    let observer: Arc<dyn Observer> = holds.clone();
    let opts = StoreOptions {
        observer: Some(observer),
        ..StoreOptions::default()
    };
    let store = Store::open(&dir.path().join("store"), opts).unwrap();
    let mut group = c.benchmark_group("layers_lock_hold_per_layer");
    group.sample_size(10);
    for size in [1u64 << 20, 8 << 20, 32 << 20] {
        let tar = layer_tar(size, size);
        for mode in [ExtractMode::Locked, ExtractMode::Staged] {
            let id = BenchmarkId::new(mode.to_string(), ByteSize(size).to_string());
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let layer = store
                            .create_layer_with_mode(&LayerRequest::default(), tar.as_slice(), mode)
                            .expect("create_layer");
                        let held: u64 = holds.0.lock().unwrap().drain(..).sum();
                        total += Duration::from_nanos(held);
                        store.delete_layer(&layer.id).expect("delete_layer");
                        holds.0.lock().unwrap().clear();
                    }
                    total
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, lock_round_trip, extraction, commit_hold);
criterion_main!(benches);
