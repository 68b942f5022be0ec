//! Helpers shared by the integration tests: tarball and OCI layout builders, tree snapshots, child processes.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use store_core::{Observer, StoreEvent};

pub const CHILD_ENV: &str = "STORE_CORE_TEST_CHILD";

/// The child role this process was spawned for, if any.
pub fn role() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// Re-runs this test binary as a child process executing only `test` in role `role`.
pub fn spawn_self(test: &str, role: &str, env: &[(&str, String)]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, role)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawning child test process")
}

pub fn wait_ok(mut c: Child) {
    let st = c.wait().unwrap();
    assert!(st.success(), "child failed: {st}");
}

/// Polls `cond` every 10 ms for up to 30 s (a liveness bound, not a speed assertion).
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if cond() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 1).unwrap()
}

/// Builds tar streams, including entries `tar::Builder` would refuse (raw names for malicious cases).
pub struct Tar(tar::Builder<Vec<u8>>);

impl Default for Tar {
    fn default() -> Self {
        Tar(tar::Builder::new(Vec::new()))
    }
}

impl Tar {
    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }

    pub fn owned_file(&mut self, path: &str, data: &[u8], uid: u64, gid: u64) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.0.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn node(&mut self, path: &str, kind: tar::EntryType, major: u32, minor: u32) -> &mut Self {
        let mut h = Self::header(kind, 0o600, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.0.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    pub fn xattr(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.pax(&format!("SCHILY.xattr.{name}"), value)
    }

    /// A PAX header with one record, for the next entry.
    pub fn pax(&mut self, key: &str, value: &[u8]) -> &mut Self {
        self.0.append_pax_extensions([(key, value)]).unwrap();
        self
    }

    /// An entry with an unvalidated name and link name.
    pub fn raw(
        &mut self,
        name: &[u8],
        kind: tar::EntryType,
        link: &[u8],
        data: &[u8],
    ) -> &mut Self {
        let mut h = Self::header(kind, 0o644, data.len() as u64);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

/// Everything about one path in a tree that extraction is supposed to reproduce.
#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub mtime: i64,
    pub content: Option<String>,
    pub link: Option<PathBuf>,
    /// First path (in walk order) sharing this inode: hard links.
    pub same_inode_as: Option<PathBuf>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 65536];
    // SAFETY: buffers are valid for their lengths.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}", path.display());
    let mut out = BTreeMap::new();
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
    {
        let cname = CString::new(name).unwrap();
        let mut val = vec![0u8; 65536];
        // SAFETY: buffers are valid for their lengths.
        let m = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                val.as_mut_ptr().cast(),
                val.len(),
            )
        };
        assert!(m >= 0);
        val.truncate(m as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), val);
    }
    out
}

/// A walk of `root`: relative path → node, including the root itself as "".
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let ft = md.file_type();
        let same_inode_as = if ft.is_file() && md.nlink() > 1 {
            let first = inodes.entry(md.ino()).or_insert_with(|| rel.clone());
            (*first != rel).then(|| first.clone())
        } else {
            None
        };
        if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        out.insert(
            rel,
            Node {
                mode: md.mode(),
                uid: md.uid(),
                gid: md.gid(),
                rdev: md.rdev(),
                // Directories the archive creates implicitly get the current time, as with `tar -x`.
                mtime: if ft.is_symlink() || ft.is_dir() {
                    0
                } else {
                    md.mtime()
                },
                content: ft.is_file().then(|| sha256(&std::fs::read(&p).unwrap())),
                link: ft.is_symlink().then(|| std::fs::read_link(&p).unwrap()),
                same_inode_as,
                xattrs: xattrs(&p),
            },
        );
    }
    out
}

/// Remembers every event.
#[derive(Default)]
pub struct Collect(pub Mutex<Vec<StoreEvent>>);

impl Observer for Collect {
    fn event(&self, ev: &StoreEvent) {
        self.0.lock().unwrap().push(ev.clone());
    }
}

/// One image for [`write_layout`]: optional tag, uncompressed layer tars, and how to compress each.
pub struct TestImage {
    pub tag: Option<String>,
    pub layers: Vec<Vec<u8>>,
    pub compress: fn(&[u8]) -> Vec<u8>,
}

/// What [`write_layout`] wrote for one image.
pub struct Written {
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub diff_ids: Vec<String>,
}

fn write_blob(dir: &Path, data: &[u8]) -> (String, u64) {
    let digest = sha256(data);
    let path = dir.join("blobs/sha256").join(&digest[7..]);
    std::fs::write(path, data).unwrap();
    (digest, data.len() as u64)
}

/// Writes an OCI image layout with `images` into `dir`.
pub fn write_layout(dir: &Path, images: &[TestImage]) -> Vec<Written> {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut manifests = Vec::new();
    let mut written = Vec::new();
    for img in images {
        let diff_ids: Vec<String> = img.layers.iter().map(|l| sha256(l)).collect();
        let mut layer_descs = Vec::new();
        let mut layer_digests = Vec::new();
        for l in &img.layers {
            let (d, s) = write_blob(dir, &(img.compress)(l));
            layer_descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s}));
            layer_digests.push(d);
        }
        let config = serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}});
        let (cd, cs) = write_blob(dir, &serde_json::to_vec(&config).unwrap());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": layer_descs,
        });
        let (md, ms) = write_blob(dir, &serde_json::to_vec(&manifest).unwrap());
        let mut desc = serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms});
        if let Some(t) = &img.tag {
            desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": t});
        }
        manifests.push(desc);
        written.push(Written {
            manifest_digest: md,
            config_digest: cd,
            layer_digests,
            diff_ids,
        });
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    written
}
