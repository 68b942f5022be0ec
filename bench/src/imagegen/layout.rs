//! The image layout's small files: config, manifest, index.json and oci-layout.

use std::fs;
use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::{GenError, ImageSpec, LayerInfo, io_err};

/// `created` of the config and its history: the tar entries' mtime.
const CREATED: &str = "2024-01-01T00:00:00Z";

/// Writes config, manifest and index.json; returns the manifest digest.
pub(super) fn write_metadata(
    dir: &Path,
    spec: &ImageSpec,
    layers: &[LayerInfo],
    tag: &str,
) -> Result<String, GenError> {
    let config = json!({
        "created": CREATED,
        "architecture": oci_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": { "io.locktrace.lockbench.seed": spec.seed.to_string() },
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>(),
        },
        "history": (0..layers.len()).map(|i| json!({
            "created": CREATED,
            "created_by": format!("lockbench gen layer {i}"),
        })).collect::<Vec<_>>(),
    });
    let config = serde_json::to_vec(&config).expect("config serializes");
    let config_digest = write_blob(dir, &config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layers.iter().map(|l| json!({
            "mediaType": spec.compression.media_type(),
            "digest": l.digest,
            "size": l.compressed_size,
        })).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).expect("manifest serializes");
    let manifest_digest = write_blob(dir, &manifest)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    });
    let index_path = dir.join("index.json");
    fs::write(
        &index_path,
        serde_json::to_vec(&index).expect("index serializes"),
    )
    .map_err(io_err(&index_path))?;
    let layout_path = dir.join("oci-layout");
    fs::write(&layout_path, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_err(&layout_path))?;
    Ok(manifest_digest)
}

fn write_blob(dir: &Path, bytes: &[u8]) -> Result<String, GenError> {
    let hex = hex::encode(Sha256::digest(bytes));
    let path = dir.join("blobs/sha256").join(&hex);
    fs::write(&path, bytes).map_err(io_err(&path))?;
    Ok(format!("sha256:{hex}"))
}

/// The OCI architecture name of this host, so podman pulls without a platform mismatch.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}
