//! The syncs each [`SyncLevel`] issues around real store operations, observed through [`Durability`]'s
//! log: what the level promises, in the order that makes the promise hold.

use super::Store;
use crate::durability::SyncCall::{self, Directory, FileData, Filesystem};
use crate::options::{ExtractMode, StoreOptions, SyncLevel};
use crate::record::LayerRequest;

fn tar_of_one_file() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, "f", &b"hello"[..]).unwrap();
    b.into_inner().unwrap()
}

fn req(id: &str, parent: Option<&str>) -> LayerRequest {
    LayerRequest {
        id: Some(id.into()),
        parent: parent.map(str::to_string),
        ..Default::default()
    }
}

/// The syncs one layer creation in `mode` issues at `level` (on a store with a parent layer already).
fn syncs_of_create(level: SyncLevel, mode: ExtractMode) -> Vec<SyncCall> {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_with_base(tmp.path(), level);
    store
        .create_layer_with_mode(&req("child", Some("base")), &tar_of_one_file()[..], mode)
        .unwrap();
    store.durability.take_log()
}

/// A store at `root` syncing at `level` with one layer, `base`, and an empty sync log.
fn store_with_base(root: &std::path::Path, level: SyncLevel) -> Store {
    let opts = StoreOptions {
        sync: level,
        ..StoreOptions::default()
    };
    let store = Store::open(root, opts).unwrap();
    store
        .create_layer(&req("base", None), &tar_of_one_file()[..])
        .unwrap();
    store.durability.take_log();
    store
}

#[test]
fn sync_none_issues_no_sync() {
    for mode in [ExtractMode::Staged, ExtractMode::Locked] {
        assert_eq!(syncs_of_create(SyncLevel::None, mode), vec![], "{mode}");
    }
}

#[test]
fn sync_metadata_fdatasyncs_each_layers_json_write_only() {
    assert_eq!(
        syncs_of_create(SyncLevel::Metadata, ExtractMode::Staged),
        vec![FileData]
    );
    // Locked creation writes layers.json twice: the incomplete record, then the complete one.
    assert_eq!(
        syncs_of_create(SyncLevel::Metadata, ExtractMode::Locked),
        vec![FileData, FileData]
    );
}

#[test]
fn sync_filesystem_makes_contents_durable_before_the_layer_is_recorded() {
    // syncfs of the contents and layers.json's temp file (both before layers.lock is taken), then
    // under it fsync of overlay/ (the layer's directory entry) and, after the rename, of layers.json's
    // directory: the record can only survive a power loss with everything it names.
    assert_eq!(
        syncs_of_create(SyncLevel::Filesystem, ExtractMode::Staged),
        vec![Filesystem, FileData, Directory, Directory]
    );
    assert_eq!(
        syncs_of_create(SyncLevel::Filesystem, ExtractMode::Locked),
        vec![
            FileData, Directory, Filesystem, Directory, FileData, Directory
        ]
    );
}

#[test]
fn every_metadata_file_is_synced_at_metadata_level() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_with_base(tmp.path(), SyncLevel::Metadata);
    store
        .create_image(&"1".repeat(64), Some("base"), &["img".into()], None)
        .unwrap();
    assert_eq!(store.durability.take_log(), vec![FileData], "images.json");
    let c = store.create_container("img", Some("c")).unwrap();
    assert_eq!(
        store.durability.take_log(),
        vec![FileData],
        "containers.json"
    );
    store.delete_container(&c.id).unwrap();
    assert_eq!(
        store.durability.take_log(),
        vec![FileData],
        "containers.json"
    );
}
