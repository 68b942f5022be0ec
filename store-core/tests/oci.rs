//! Pulling from OCI image layouts: chain IDs, reuse, verification errors, concurrent pulls.

mod common;

use std::path::{Path, PathBuf};

use common::{
    Tar, TestImage, gzip, role, sha256, spawn_self, wait_for, wait_ok, write_layout, zstd,
};
use sha2::{Digest, Sha256};
use store_core::oci::{PullOutcome, pull};
use store_core::{ExtractMode, Store, StoreError, StoreOptions};

fn open(root: &Path) -> Store {
    Store::open(root, StoreOptions::default()).unwrap()
}

fn layer_tar(n: u8) -> Vec<u8> {
    Tar::default()
        .dir(&format!("d{n}"), 0o755)
        .file(&format!("d{n}/file"), &vec![n; 100_000 + n as usize], 0o644)
        .finish()
}

fn no_compression(d: &[u8]) -> Vec<u8> {
    d.to_vec()
}

/// Chain IDs computed independently of the store: the layer IDs a pull must use.
fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(p) => format!("sha256:{}", hex::encode(Sha256::digest(format!("{p} {d}")))),
        };
        out.push(next);
    }
    out.into_iter().map(|c| c[7..].to_string()).collect()
}

fn two_image_layout(dir: &Path) -> Vec<common::Written> {
    write_layout(
        dir,
        &[
            TestImage {
                tag: Some("v1".into()),
                layers: vec![layer_tar(1), layer_tar(2)],
                compress: gzip,
            },
            TestImage {
                tag: Some("v2".into()),
                layers: vec![layer_tar(1), layer_tar(2), layer_tar(3)],
                compress: zstd,
            },
        ],
    )
}

#[test]
fn pull_creates_layers_in_order_and_reuses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let w = two_image_layout(&layout);
    for mode in [ExtractMode::Locked, ExtractMode::Staged] {
        let store = open(&tmp.path().join(format!("store-{mode}")));
        let v1 = pull(&store, &layout, Some("v1"), mode).unwrap();
        let ids = chain_ids(&w[0].diff_ids);
        assert_eq!(v1.image.id, w[0].config_digest[7..]);
        assert_eq!(v1.image.top_layer.as_deref(), Some(ids[1].as_str()));
        assert_eq!(v1.image.names, vec!["v1".to_string()]);
        assert_eq!(
            v1.image.digest.as_deref(),
            Some(w[0].manifest_digest.as_str())
        );
        let top = store.layer(&ids[1]).unwrap();
        assert_eq!(top.parent.as_deref(), Some(ids[0].as_str()));
        assert_eq!(top.uncompressed_digest, w[0].diff_ids[1]);
        assert_eq!(
            top.compressed_digest.as_deref(),
            Some(w[0].layer_digests[1].as_str())
        );
        assert_eq!(
            std::fs::read(store.diff_path(&ids[1]).join("d2/file")).unwrap(),
            vec![2u8; 100_002]
        );

        let v2 = pull(&store, &layout, Some("v2"), mode).unwrap();
        assert_eq!((v2.layers_created, v2.layers_reused), (1, 2));
        assert_eq!(v2.bytes, layer_tar(3).len() as u64);
        let again = pull(&store, &layout, Some(&w[0].manifest_digest), mode).unwrap();
        assert_eq!(
            (again.layers_created, again.layers_reused, again.bytes),
            (0, 2, 0)
        );
        assert_eq!(again.image.id, v1.image.id);
        assert_eq!((v1.layers_created, v1.layers_reused), (2, 0));
        assert_eq!(store.images().unwrap().len(), 2);
        assert_eq!(
            store.image("v2").unwrap().top_layer,
            Some(chain_ids(&w[1].diff_ids)[2].clone())
        );
    }
}

#[test]
fn pull_first_time_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let w = write_layout(
        &layout,
        &[TestImage {
            tag: None,
            layers: vec![layer_tar(1), layer_tar(2)],
            compress: no_compression,
        }],
    );
    let store = open(&tmp.path().join("store"));
    let out = pull(&store, &layout, None, ExtractMode::Staged).unwrap();
    assert_eq!((out.layers_created, out.layers_reused), (2, 0));
    assert_eq!(out.bytes, (layer_tar(1).len() + layer_tar(2).len()) as u64);
    assert!(out.image.names.is_empty());
    let layers = store.layers().unwrap();
    assert_eq!(layers.len(), 2);
    assert!(layers.iter().all(|l| l.compressed_digest.is_none()));
    assert_eq!(
        layers
            .iter()
            .map(|l| l.uncompressed_digest.clone())
            .collect::<Vec<_>>(),
        w[0].diff_ids
    );
}

#[test]
fn layout_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&tmp.path().join("store"));
    let missing = tmp.path().join("missing");
    let err = pull(&store, &missing, None, ExtractMode::Staged).unwrap_err();
    assert!(
        matches!(err, StoreError::Oci { .. }) && err.to_string().contains("no such directory"),
        "{err}"
    );

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = pull(&store, &empty, None, ExtractMode::Staged).unwrap_err();
    assert!(err.to_string().contains("index.json is missing"), "{err}");

    let layout = tmp.path().join("layout");
    two_image_layout(&layout);
    let err = pull(&store, &layout, Some("v9"), ExtractMode::Staged).unwrap_err();
    match &err {
        StoreError::UnknownReference {
            reference,
            available,
            ..
        } => {
            assert_eq!(reference, "v9");
            assert_eq!(available, "v1, v2");
        }
        other => panic!("expected UnknownReference, got {other}"),
    }
    let err = pull(&store, &layout, None, ExtractMode::Staged).unwrap_err();
    assert!(err.to_string().contains("2 manifests"), "{err}");
    assert!(store.layers().unwrap().is_empty());
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs/sha256").join(&digest[7..])
}

fn assert_nothing_left(store: &Store) {
    assert!(
        store.layers().unwrap().is_empty(),
        "{:?}",
        store.layers().unwrap()
    );
    assert!(store.images().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(store.root().join("overlay/staging"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn corrupted_blobs_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    for mode in [ExtractMode::Locked, ExtractMode::Staged] {
        let store = open(&tmp.path().join(format!("store-{mode}")));
        let w = two_image_layout(&layout);
        // Same size, one byte flipped, deep inside the compressed data.
        let bad = &w[0].layer_digests[1];
        let mut data = std::fs::read(blob(&layout, bad)).unwrap();
        let n = data.len();
        data[n - 20] ^= 0xff;
        std::fs::write(blob(&layout, bad), &data).unwrap();
        let err = pull(&store, &layout, Some("v1"), mode).unwrap_err();
        match &err {
            StoreError::BlobMismatch { blob, .. } => assert_eq!(blob, bad),
            other => panic!("expected BlobMismatch, got {other}"),
        }
        assert!(err.to_string().contains(bad.as_str()));
        // The first layer was fine and stays; the bad one left nothing behind.
        assert_eq!(store.layers().unwrap().len(), 1);
        assert_eq!(
            std::fs::read_dir(store.root().join("overlay/staging"))
                .unwrap()
                .count(),
            0
        );

        // A blob of the wrong size.
        let other = &w[1].layer_digests[2];
        let mut data = std::fs::read(blob(&layout, other)).unwrap();
        data.push(0);
        std::fs::write(blob(&layout, other), &data).unwrap();
        let err = pull(&store, &layout, Some("v2"), mode).unwrap_err();
        assert!(
            matches!(&err, StoreError::BlobMismatch { blob, msg } if blob == other && msg.contains("size")),
            "{err}"
        );
        std::fs::remove_dir_all(&layout).unwrap();
    }
}

#[test]
fn well_formed_blob_with_other_content_is_refused_before_commit() {
    let tmp = tempfile::tempdir().unwrap();
    for mode in [ExtractMode::Locked, ExtractMode::Staged] {
        let layout = tmp.path().join(format!("layout-{mode}"));
        let w = write_layout(
            &layout,
            &[TestImage {
                tag: Some("t".into()),
                layers: vec![layer_tar(1)],
                compress: no_compression,
            }],
        );
        // One byte of file content changed: still a valid tar, so only the digest check can notice.
        let digest = &w[0].layer_digests[0];
        let mut data = std::fs::read(blob(&layout, digest)).unwrap();
        let at = data.windows(4).position(|x| x == [1, 1, 1, 1]).unwrap();
        data[at] = 2;
        std::fs::write(blob(&layout, digest), &data).unwrap();
        let store = open(&tmp.path().join(format!("store-{mode}")));
        let err = pull(&store, &layout, Some("t"), mode).unwrap_err();
        let actual = sha256(&data);
        assert!(
            matches!(&err, StoreError::BlobMismatch { blob, msg }
                if blob == digest && msg == &format!("content hashes to {actual}")),
            "{mode}: {err}"
        );
        assert_nothing_left(&store);
        let overlay: Vec<_> = std::fs::read_dir(store.root().join("overlay"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(overlay, ["staging"], "{mode}");
    }
}

#[test]
fn corrupt_tarball_with_valid_digest_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    // The blob matches its descriptor but is not a tar stream.
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 256) as u8).collect();
    write_layout(
        &layout,
        &[TestImage {
            tag: Some("bad".into()),
            layers: vec![garbage],
            compress: gzip,
        }],
    );
    let store = open(&tmp.path().join("store"));
    let err = pull(&store, &layout, Some("bad"), ExtractMode::Staged).unwrap_err();
    assert!(matches!(err, StoreError::Archive(_)), "{err}");
    assert_nothing_left(&store);
}

#[test]
fn diff_id_mismatch_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let w = write_layout(
        &layout,
        &[TestImage {
            tag: Some("t".into()),
            layers: vec![layer_tar(1)],
            compress: gzip,
        }],
    );
    // Rewrite the config with a wrong diff ID, and the manifest and index to match.
    let config =
        serde_json::json!({"rootfs": {"type": "layers", "diff_ids": [sha256(b"not the layer")]}});
    let cdata = serde_json::to_vec(&config).unwrap();
    std::fs::write(blob(&layout, &sha256(&cdata)), &cdata).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&layout, &w[0].manifest_digest)).unwrap())
            .unwrap();
    manifest["config"]["digest"] = sha256(&cdata).into();
    manifest["config"]["size"] = cdata.len().into();
    let mdata = serde_json::to_vec(&manifest).unwrap();
    std::fs::write(blob(&layout, &sha256(&mdata)), &mdata).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&mdata), "size": mdata.len()}]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let store = open(&tmp.path().join("store"));
    let err = pull(&store, &layout, None, ExtractMode::Locked).unwrap_err();
    assert!(
        matches!(&err, StoreError::BlobMismatch { msg, .. } if msg.contains("diff_id")),
        "{err}"
    );
    assert_nothing_left(&store);
}

#[test]
fn two_processes_pull_the_same_image() {
    if let Some(mode) = role() {
        let root = PathBuf::from(std::env::var("STORE_ROOT").unwrap());
        let layout = PathBuf::from(std::env::var("LAYOUT").unwrap());
        let store = open(&root);
        wait_for("go", || root.join("go").exists());
        let out: PullOutcome = pull(&store, &layout, Some("v2"), mode.parse().unwrap()).unwrap();
        std::fs::write(
            root.join(format!("created-{}", std::process::id())),
            out.layers_created.to_string(),
        )
        .unwrap();
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let w = two_image_layout(&layout);
    for mode in [ExtractMode::Locked, ExtractMode::Staged] {
        let root = tmp.path().join(format!("store-{mode}"));
        drop(open(&root));
        let env = [
            ("STORE_ROOT", root.display().to_string()),
            ("LAYOUT", layout.display().to_string()),
        ];
        let kids: Vec<_> = (0..2)
            .map(|_| spawn_self("two_processes_pull_the_same_image", &mode.to_string(), &env))
            .collect();
        std::fs::write(root.join("go"), b"").unwrap();
        kids.into_iter().for_each(wait_ok);
        let created: usize = std::fs::read_dir(&root)
            .unwrap()
            .filter_map(|e| {
                let e = e.unwrap();
                e.file_name()
                    .to_string_lossy()
                    .starts_with("created-")
                    .then(|| std::fs::read_to_string(e.path()).unwrap())
            })
            .map(|s| s.parse::<usize>().unwrap())
            .sum();
        assert_eq!(
            created, 3,
            "{mode}: each layer is created exactly once across both pulls"
        );
        let store = open(&root);
        let mut ids: Vec<String> = store.layers().unwrap().into_iter().map(|l| l.id).collect();
        ids.sort();
        let mut expected = chain_ids(&w[1].diff_ids);
        expected.sort();
        assert_eq!(ids, expected);
        assert_eq!(store.images().unwrap().len(), 1);
        assert_eq!(
            std::fs::read_dir(root.join("overlay/staging"))
                .unwrap()
                .count(),
            0
        );
        let dirs = std::fs::read_dir(root.join("overlay")).unwrap().count();
        assert_eq!(dirs, 4, "three layer dirs plus staging");
    }
}
