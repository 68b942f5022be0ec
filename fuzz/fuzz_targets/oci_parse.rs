//! An OCI image layout built from the input, pulled into a store: `index.json`, manifest, config and
//! reference, separated by NUL bytes (JSON never contains a raw NUL). So that the fuzzer gets past the
//! digest checks, placeholders are replaced before the blobs are written:
//! `@MANIFEST@`/`@MANIFEST_SIZE@` (in the index), `@CONFIG@`/`@CONFIG_SIZE@` and
//! `@LAYER@`/`@LAYER_SIZE@` (in the manifest), `@DIFF_ID@` (in the config), where the layer is a
//! fixed one-file tar written once; an empty or missing reference is none. A pull must succeed or
//! fail with one clean line, never panic.
#![no_main]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use store_core::{ExtractMode, Store, StoreOptions};

struct Fixture {
    dir: tempfile::TempDir,
    layout: PathBuf,
    layer_digest: String,
    layer_size: usize,
    /// A store that no pull has succeeded in yet; replaced after a success so images do not pile up.
    store: Option<Store>,
    generation: u64,
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs/sha256").join(&digest["sha256:".len()..])
}

fn one_file_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("etc/hostname").expect("a short path");
    h.set_size(5);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_704_067_200);
    h.set_cksum();
    b.append(&h, &b"fuzz\n"[..]).expect("writing to memory");
    b.into_inner().expect("writing to memory")
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let layout = dir.path().join("layout");
        fs::create_dir_all(layout.join("blobs/sha256")).expect("creating the layout");
        let layer = one_file_tar();
        let layer_digest = digest(&layer);
        fs::write(blob_path(&layout, &layer_digest), &layer).expect("writing the layer blob");
        Fixture {
            dir,
            layout,
            layer_digest,
            layer_size: layer.len(),
            store: None,
            generation: 0,
        }
    }

    fn store(&mut self) -> &Store {
        if self.store.is_none() {
            self.generation += 1;
            let root = self.dir.path().join(format!("store-{}", self.generation));
            let store = Store::open(&root, StoreOptions::default()).expect("opening a fresh store");
            self.store = Some(store);
        }
        self.store.as_ref().expect("just opened")
    }

    fn discard_store(&mut self) {
        if let Some(store) = self.store.take() {
            let root = store.root().to_path_buf();
            drop(store);
            fs::remove_dir_all(&root).expect("removing a used store");
        }
    }
}

fn replace(data: &[u8], from: &str, to: &str) -> Vec<u8> {
    let from = from.as_bytes();
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    while let Some(i) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to.as_bytes());
        rest = &rest[i + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Writes `data` as a blob and returns its digest.
fn write_blob(layout: &Path, data: &[u8], written: &mut Vec<PathBuf>) -> String {
    let d = digest(data);
    let path = blob_path(layout, &d);
    fs::write(&path, data).expect("writing a blob");
    written.push(path);
    d
}

fn assert_clean_refusal(store: &Store, msg: &str) {
    assert!(
        !msg.chars().any(char::is_control),
        "error is not one clean line: {msg:?}"
    );
    let overlay = store.root().join("overlay");
    let recorded = store.layers().expect("listing layers").len();
    let dirs = fs::read_dir(&overlay).expect("listing overlay").count();
    assert_eq!(dirs, recorded + 1, "layer directories left behind: {msg}");
    let staged = fs::read_dir(overlay.join("staging"))
        .expect("listing staging")
        .count();
    assert_eq!(staged, 0, "staging left behind: {msg}");
}

fuzz_target!(|data: &[u8]| {
    static FIXTURE: Mutex<Option<Fixture>> = Mutex::new(None);
    let mut guard = FIXTURE.lock().unwrap_or_else(|p| p.into_inner());
    let fx = guard.get_or_insert_with(Fixture::new);

    let mut parts = data.splitn(4, |&b| b == 0);
    let index = parts.next().unwrap_or_default();
    let manifest = parts.next().unwrap_or_default();
    let config = parts.next().unwrap_or_default();
    // No fourth part, or an empty one: no reference (the index must then list one manifest).
    let reference = parts
        .next()
        .filter(|r| !r.is_empty())
        .map(String::from_utf8_lossy);

    let mut written = Vec::new();
    let config = replace(config, "@DIFF_ID@", &fx.layer_digest);
    let config_digest = write_blob(&fx.layout, &config, &mut written);
    let mut manifest = replace(manifest, "@CONFIG_SIZE@", &config.len().to_string());
    manifest = replace(&manifest, "@CONFIG@", &config_digest);
    manifest = replace(&manifest, "@LAYER_SIZE@", &fx.layer_size.to_string());
    manifest = replace(&manifest, "@LAYER@", &fx.layer_digest);
    let manifest_digest = write_blob(&fx.layout, &manifest, &mut written);
    let mut index = replace(index, "@MANIFEST_SIZE@", &manifest.len().to_string());
    index = replace(&index, "@MANIFEST@", &manifest_digest);
    fs::write(fx.layout.join("index.json"), &index).expect("writing index.json");

    let layout = fx.layout.clone();
    let store = fx.store();
    match store_core::oci::pull(store, &layout, reference.as_deref(), ExtractMode::Staged) {
        Ok(out) => {
            let images = store.images().expect("listing images");
            assert!(images.contains(&out.image), "pulled image is not recorded");
            fx.discard_store();
        }
        Err(e) => assert_clean_refusal(store, &e.to_string()),
    }
    let layer_blob = blob_path(&fx.layout, &fx.layer_digest);
    for path in written.into_iter().filter(|p| *p != layer_blob) {
        // The manifest and config may be the same bytes, hence the same file.
        let _ = fs::remove_file(path);
    }
});
