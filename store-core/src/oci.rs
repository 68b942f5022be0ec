//! A "pull" from an OCI image layout directory: `index.json` → manifest → config and layer blobs, every blob
//! checked against its descriptor's digest and size, layers created in parent order with their chain ID as
//! layer ID (existing ones reused), then the image record (ID = config digest hex).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::observer::Op;
use crate::options::ExtractMode;
use crate::record::{Image, LayerRequest};
use crate::store::Store;
use crate::sys;

/// The annotation that names an image in an index (a tag such as `latest` or a full reference).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Manifests and configs are small; refuse absurd ones instead of reading them into memory.
const MAX_JSON_BLOB: u64 = 16 << 20;

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullOutcome {
    pub image: Image,
    /// Layers this pull extracted.
    pub layers_created: usize,
    /// Layers already in the store (including ones another process committed while we extracted).
    pub layers_reused: usize,
    /// Uncompressed bytes of the layers this pull created.
    pub bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Config {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// The hex part of a `sha256:` digest, checked so it is safe to use as a file or layer name.
fn digest_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(hex)
}

/// Reads a layout, naming the layout directory in every error. Every file is opened under the layout
/// directory's fd without following symlinks and must be a regular file: a symlink (to `/dev/zero`, out
/// of the layout), a FIFO or a device is refused at once instead of read forever or waited on.
struct Layout<'a> {
    dir: &'a Path,
    fd: OwnedFd,
}

impl<'a> Layout<'a> {
    fn open(dir: &'a Path) -> Result<Layout<'a>, StoreError> {
        let err = |msg: String| StoreError::Oci {
            dir: dir.to_path_buf(),
            msg,
        };
        let fd = sys::open(dir, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(|e| {
            err(match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => "no such directory".into(),
                _ => e.to_string(),
            })
        })?;
        Ok(Layout { dir, fd })
    }

    fn err(&self, msg: impl Into<String>) -> StoreError {
        StoreError::Oci {
            dir: self.dir.to_path_buf(),
            msg: msg.into(),
        }
    }

    /// Opens the regular file at `rel` (components under the layout directory, none a symlink).
    fn open_file(&self, rel: &[&str]) -> io::Result<File> {
        let Some((name, dirs)) = rel.split_last() else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let mut dir: Option<OwnedFd> = None;
        for d in dirs {
            let at = dir.as_ref().unwrap_or(&self.fd).as_raw_fd();
            let fd =
                sys::openat(at, OsStr::new(d), flags, 0).map_err(|e| match e.raw_os_error() {
                    Some(libc::ELOOP) | Some(libc::ENOTDIR) => io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{d}/ is not a directory of the layout (a symlink?)"),
                    ),
                    _ => e,
                })?;
            dir = Some(fd);
        }
        sys::open_regular(
            dir.as_ref().unwrap_or(&self.fd).as_raw_fd(),
            OsStr::new(name),
        )
    }

    fn blob_hex<'d>(&self, digest: &'d str) -> Result<&'d str, StoreError> {
        digest_hex(digest)
            .ok_or_else(|| self.err(format!("unsupported or malformed digest {digest:?}")))
    }

    fn open_blob(&self, desc: &Descriptor) -> Result<File, StoreError> {
        let hex = self.blob_hex(&desc.digest)?;
        let f = self
            .open_file(&["blobs", "sha256", hex])
            .map_err(|e| self.err(format!("blob {}: {e}", desc.digest)))?;
        let len = f
            .metadata()
            .map_err(|e| self.err(format!("blob {}: {e}", desc.digest)))?
            .len();
        if len != desc.size {
            return Err(StoreError::BlobMismatch {
                blob: desc.digest.clone(),
                msg: format!("size is {len} bytes but the descriptor says {}", desc.size),
            });
        }
        Ok(f)
    }

    /// `index.json`, read up to [`MAX_JSON_BLOB`] bytes.
    fn index(&self) -> Result<Index, StoreError> {
        let data = match self.open_file(&["index.json"]) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(self.err("index.json is missing"));
            }
            r => r.and_then(|f| sys::read_limited(f, MAX_JSON_BLOB)),
        }
        .map_err(|e| self.err(format!("index.json: {e}")))?;
        serde_json::from_slice(&data).map_err(|e| self.err(format!("index.json: {e}")))
    }

    /// A small JSON blob, verified and parsed.
    fn json_blob<T: DeserializeOwned>(
        &self,
        desc: &Descriptor,
        what: &str,
    ) -> Result<T, StoreError> {
        if desc.size > MAX_JSON_BLOB {
            return Err(self.err(format!(
                "{what} {} is {} bytes; too large",
                desc.digest, desc.size
            )));
        }
        // Bounded by what is read, not by the size the file had when it was opened.
        let data = sys::read_limited(self.open_blob(desc)?, MAX_JSON_BLOB)
            .map_err(|e| self.err(format!("blob {}: {e}", desc.digest)))?;
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
        if actual != desc.digest {
            return Err(StoreError::BlobMismatch {
                blob: desc.digest.clone(),
                msg: format!("content hashes to {actual}"),
            });
        }
        serde_json::from_slice(&data).map_err(|e| self.err(format!("{what} {}: {e}", desc.digest)))
    }

    fn select(&self, index: &Index, reference: Option<&str>) -> Result<Descriptor, StoreError> {
        let found = match reference {
            None if index.manifests.len() == 1 => return Ok(index.manifests[0].clone()),
            None => {
                return Err(self.err(format!(
                    "index.json lists {} manifests; give a reference (tag or sha256: digest)",
                    index.manifests.len()
                )));
            }
            Some(r) if r.starts_with("sha256:") => index.manifests.iter().find(|m| m.digest == r),
            Some(r) => index
                .manifests
                .iter()
                .find(|m| m.annotations.get(REF_NAME).is_some_and(|n| n == r)),
        };
        found.cloned().ok_or_else(|| {
            let available: Vec<&str> = index
                .manifests
                .iter()
                .map(|m| {
                    m.annotations
                        .get(REF_NAME)
                        .map_or(m.digest.as_str(), String::as_str)
                })
                .collect();
            StoreError::UnknownReference {
                dir: self.dir.to_path_buf(),
                reference: reference.unwrap_or_default().to_string(),
                available: if available.is_empty() {
                    "none".into()
                } else {
                    available.join(", ")
                },
            }
        })
    }
}

/// Hashes a whole file (used to tell a corrupt blob from a corrupt-but-correctly-hashed tarball).
fn file_digest(f: File) -> io::Result<String> {
    let mut h = Sha256::new();
    io::copy(&mut BufReader::new(f), &mut h)?;
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// Imports the image `reference` (a `org.opencontainers.image.ref.name` value or a `sha256:` manifest digest;
/// `None` when the index has exactly one manifest) from the OCI layout at `layout_dir` into `store`.
pub fn pull(
    store: &Store,
    layout_dir: &Path,
    reference: Option<&str>,
    mode: ExtractMode,
) -> Result<PullOutcome, StoreError> {
    let layout = Layout::open(layout_dir)?;
    let index = layout.index()?;
    let mdesc = layout.select(&index, reference)?;
    if mdesc.media_type.ends_with("image.index.v1+json")
        || mdesc.media_type.ends_with("manifest.list.v2+json")
    {
        return Err(layout.err(format!(
            "{} is a nested index; only single-platform manifests are supported",
            mdesc.digest
        )));
    }
    let manifest: Manifest = layout.json_blob(&mdesc, "manifest")?;
    let config: Config = layout.json_blob(&manifest.config, "config")?;
    let image_id = digest_hex(&manifest.config.digest).ok_or_else(|| {
        layout.err(format!(
            "malformed config digest {:?}",
            manifest.config.digest
        ))
    })?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(layout.err(format!(
            "manifest {} has {} layers but its config lists {} diff_ids",
            mdesc.digest,
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }

    let mut out = PullOutcome {
        image: Image {
            id: String::new(),
            names: Vec::new(),
            top_layer: None,
            digest: None,
            created: 0,
        },
        layers_created: 0,
        layers_reused: 0,
        bytes: 0,
    };
    let mut parent: Option<String> = None;
    for (ldesc, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        if digest_hex(diff_id).is_none() {
            return Err(layout.err(format!("malformed diff_id {diff_id:?}")));
        }
        // Chain ID: the diff ID for the base layer, else sha256(parent chain ID + " " + diff ID).
        let chain = match &parent {
            None => diff_id.clone(),
            Some(p) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("sha256:{p} {diff_id}")))
            ),
        };
        let id = chain["sha256:".len()..].to_string();
        match store.layer_for(Op::Pull, &id) {
            Ok(_) => {
                out.layers_reused += 1;
                parent = Some(id);
                continue;
            }
            Err(StoreError::LayerNotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let blob = layout.open_blob(ldesc)?;
        let req = LayerRequest {
            id: Some(id.clone()),
            parent: parent.clone(),
            ..LayerRequest::default()
        };
        // The store checks the blob digest (it hashes the stream anyway) before committing the layer.
        let (layer, created) = match store.create_layer_inner(&req, blob, Some(&ldesc.digest), mode)
        {
            Ok(r) => r,
            Err(e @ StoreError::BlobMismatch { .. }) => return Err(e),
            Err(e) => {
                // The tar parser may have failed before EOF: a damaged blob is the better explanation.
                return match layout.open_blob(ldesc).and_then(|f| {
                    file_digest(f).map_err(|e| layout.err(format!("blob {}: {e}", ldesc.digest)))
                }) {
                    Ok(actual) if actual != ldesc.digest => Err(StoreError::BlobMismatch {
                        blob: ldesc.digest.clone(),
                        msg: format!("content hashes to {actual}"),
                    }),
                    _ => Err(e),
                };
            }
        };
        if created {
            if layer.uncompressed_digest != *diff_id {
                let msg = format!(
                    "uncompressed content hashes to {} but the config's diff_id is {diff_id}",
                    layer.uncompressed_digest
                );
                store.delete_layer(&id)?;
                return Err(StoreError::BlobMismatch {
                    blob: ldesc.digest.clone(),
                    msg,
                });
            }
            out.layers_created += 1;
            out.bytes += layer.uncompressed_size;
        } else {
            out.layers_reused += 1;
        }
        parent = Some(id);
    }
    let names: Vec<String> = reference
        .filter(|r| !r.starts_with("sha256:"))
        .map(str::to_string)
        .into_iter()
        .collect();
    out.image = store.create_image(image_id, parent.as_deref(), &names, Some(&mdesc.digest))?;
    Ok(out)
}
