//! `lockbench::imagegen`: determinism, caching, and layouts that store-core's OCI pull accepts.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use lockbench::imagegen::{self, Compression, GenSpec, ImageSpec};
use lockbench::size::ByteSize;
use store_core::{ExtractMode, Store, StoreOptions};

fn spec(seed: u64) -> GenSpec {
    GenSpec {
        images: 2,
        layers: 2,
        layer_size: ByteSize(300 << 10),
        files_per_layer: 20,
        compression: Compression::Gzip,
        seed,
    }
}

/// Every file under `dir`, by relative path.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(
                    path.strip_prefix(dir).unwrap().to_path_buf(),
                    fs::read(&path).unwrap(),
                );
            }
        }
    }
    out
}

fn layer_digests(set: &imagegen::GenSet) -> Vec<String> {
    set.images
        .iter()
        .flat_map(|i| i.layers.iter().map(|l| l.digest.clone()))
        .collect()
}

#[test]
fn same_seed_gives_identical_bytes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (set_a, _) = imagegen::ensure(a.path(), &spec(7), &|_| {}).unwrap();
    let (set_b, _) = imagegen::ensure(b.path(), &spec(7), &|_| {}).unwrap();
    for image in ["img-00", "img-01"] {
        let (ta, tb) = (tree(&a.path().join(image)), tree(&b.path().join(image)));
        assert!(ta.len() >= 6, "{image}: layout has {} files", ta.len());
        assert_eq!(
            ta, tb,
            "{image} differs between two runs with the same seed"
        );
    }
    assert_eq!(layer_digests(&set_a), layer_digests(&set_b));
}

#[test]
fn different_seeds_and_images_never_share_layers() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (set_a, _) = imagegen::ensure(a.path(), &spec(1), &|_| {}).unwrap();
    let (set_b, _) = imagegen::ensure(b.path(), &spec(2), &|_| {}).unwrap();
    let mut all = layer_digests(&set_a);
    all.extend(layer_digests(&set_b));
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        n,
        "a layer digest repeats across images or seeds"
    );
}

#[test]
fn cache_is_reused_only_for_same_parameters_and_intact_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let (first, cached) = imagegen::ensure(dir.path(), &spec(3), &|_| {}).unwrap();
    assert!(!cached);
    let (_, cached) = imagegen::ensure(dir.path(), &spec(3), &|_| {}).unwrap();
    assert!(cached, "same parameters must reuse the images");

    let blob = first.images[1].layers[0]
        .digest
        .trim_start_matches("sha256:")
        .to_string();
    let blob_path = first.images[1].dir.join("blobs/sha256").join(&blob);
    fs::remove_file(&blob_path).unwrap();
    let (_, cached) = imagegen::ensure(dir.path(), &spec(3), &|_| {}).unwrap();
    assert!(!cached, "a missing blob must trigger regeneration");
    assert!(blob_path.is_file());

    let mut bigger = spec(3);
    bigger.images = 1;
    let (set, cached) = imagegen::ensure(dir.path(), &bigger, &|_| {}).unwrap();
    assert!(!cached, "changed parameters must regenerate");
    assert_eq!(set.images.len(), 1);
    assert!(
        !dir.path().join("img-01").exists(),
        "stale image left behind"
    );
}

#[test]
fn index_carries_the_tag_annotation_and_config_the_diff_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (set, _) = imagegen::ensure(dir.path(), &spec(4), &|_| {}).unwrap();
    let image = &set.images[0];
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(image.dir.join("index.json")).unwrap()).unwrap();
    let desc = &index["manifests"][0];
    assert_eq!(
        desc["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    let blob = |digest: &str| {
        fs::read(
            image
                .dir
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(desc["digest"].as_str().unwrap())).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let expected: Vec<&str> = image.layers.iter().map(|l| l.diff_id.as_str()).collect();
    assert_eq!(diff_ids, expected);
    assert_eq!(
        manifest["layers"][1]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
}

#[test]
fn store_core_pulls_every_compression_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    for (i, compression) in [Compression::Gzip, Compression::Zstd, Compression::Plain]
        .into_iter()
        .enumerate()
    {
        let image_spec = ImageSpec {
            layers: 3,
            layer_size: ByteSize(200 << 10),
            files_per_layer: 10,
            compression,
            seed: 100 + i as u64,
        };
        let image_dir = dir.path().join(format!("image-{compression}"));
        let image = imagegen::generate_image(&image_dir, &image_spec, "v1").unwrap();
        for mode in [ExtractMode::Locked, ExtractMode::Staged] {
            let root = dir.path().join(format!("store-{compression}-{mode}"));
            let store = Store::open(&root, StoreOptions::default()).unwrap();
            let outcome = store_core::oci::pull(&store, &image_dir, Some("v1"), mode)
                .unwrap_or_else(|e| panic!("{compression} {mode}: {e}"));
            assert_eq!(outcome.layers_created, 3, "{compression} {mode}");
            assert!(
                outcome.bytes >= 3 * (200 << 10),
                "{compression} {mode}: {} bytes",
                outcome.bytes
            );
            assert_eq!(store.layers().unwrap().len(), 3);
            let top = store
                .layers()
                .unwrap()
                .into_iter()
                .find(|l| l.uncompressed_digest == image.layers[2].diff_id);
            assert!(
                top.is_some(),
                "{compression} {mode}: top layer's diff_id not recorded"
            );
        }
    }
}
