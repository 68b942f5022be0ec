//! Creates one layer from a tarball and prints how long extraction took, for comparing with `tar -x`:
//!
//! ```text
//! cargo run --release -p store-core --example extract -- LAYER.tar[.gz|.zst] GRAPH_ROOT [locked|staged]
//! ```

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use store_core::{EventKind, LayerRequest, Observer, Store, StoreEvent, StoreOptions};

#[derive(Default)]
struct Timings(Mutex<Vec<StoreEvent>>);

impl Observer for Timings {
    fn event(&self, ev: &StoreEvent) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ev.clone());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let usage = "usage: extract LAYER.tar[.gz|.zst] GRAPH_ROOT [locked|staged]";
    let tarball = PathBuf::from(args.next().ok_or(usage)?);
    let root = PathBuf::from(args.next().ok_or(usage)?);
    let mode = match args.next() {
        Some(m) => m.to_str().ok_or(usage)?.parse()?,
        None => store_core::ExtractMode::default(),
    };
    let timings = Arc::new(Timings::default());
    let opts = StoreOptions {
        extract_mode: mode,
        observer: Some(timings.clone()),
        ..StoreOptions::default()
    };
    let store = Store::open(&root, opts)?;
    let start = Instant::now();
    let layer = store.create_layer(&LayerRequest::default(), File::open(&tarball)?)?;
    let total = start.elapsed();
    let mb = layer.uncompressed_size as f64 / 1e6;
    let rate = mb / total.as_secs_f64();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "layer {} ({mode}): {mb:.1} MB in {total:.2?} ({rate:.0} MB/s)",
        layer.id
    )?;
    for ev in timings.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let what = match &ev.kind {
            EventKind::LockWait { lock, write } => format!("wait {} write={write}", lock.display()),
            EventKind::LockHold { lock, write } => format!("hold {} write={write}", lock.display()),
            EventKind::Extract => "extract".to_string(),
            EventKind::Commit => "commit".to_string(),
        };
        writeln!(out, "  {what}: {:.3} ms", ev.duration_ns as f64 / 1e6)?;
    }
    Ok(())
}
