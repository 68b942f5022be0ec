//! A layer tar stream (plain, gzip or zstd) applied to a store in a temp dir, staged when the input's
//! length is even, locked when it is odd (one mode per input doubles the rate; mutations change the
//! length often enough to exercise both). Bad input must be refused with an error, never a panic, and
//! a refused layer must leave nothing behind: no layer directory, no staging directory, no record.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use store_core::{ExtractMode, LayerRequest, Store, StoreOptions};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let store = Store::open(&dir.path().join("store"), StoreOptions::default())
            .expect("opening a store in a fresh temp dir");
        Fixture { _dir: dir, store }
    })
}

/// Names under `dir`, sorted, for the leftover check.
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| {
            e.expect("reading a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    out.sort();
    out
}

fn assert_empty_store(store: &Store, after: &str) {
    let overlay = store.root().join("overlay");
    assert_eq!(
        names(&overlay),
        ["staging"],
        "layer directories left after {after}"
    );
    assert!(
        names(&overlay.join("staging")).is_empty(),
        "staging left after {after}"
    );
    assert!(
        store.layers().expect("listing layers").is_empty(),
        "layer record left after {after}"
    );
}

fuzz_target!(|data: &[u8]| {
    let store = &fixture().store;
    let mode = if data.len().is_multiple_of(2) {
        ExtractMode::Staged
    } else {
        ExtractMode::Locked
    };
    match store.create_layer_with_mode(&LayerRequest::default(), data, mode) {
        Ok(layer) => store
            .delete_layer(&layer.id)
            .unwrap_or_else(|e| panic!("deleting the layer just created ({mode}): {e}")),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                !msg.chars().any(char::is_control),
                "error is not one clean line ({mode}): {msg:?}"
            );
        }
    }
    assert_empty_store(
        store,
        &format!("creating and deleting a layer or refusing it ({mode})"),
    );
});
