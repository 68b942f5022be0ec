//! Which locks and processes are traced. Applied in the kernel: userspace only fills the tables.

use std::{os::unix::fs::MetadataExt, path::PathBuf};

use tracer_common::{InodeKey, NAME_LEN, filter};

use crate::{Error, kernel};

/// containers/storage's lock files, traced when no other lock filter is given.
pub const DEFAULT_LOCKS: [&str; 4] = [
    "storage.lock",
    "layers.lock",
    "images.lock",
    "containers.lock",
];

#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Trace every fcntl lock, whatever the file.
    pub all_locks: bool,
    /// Lock file basenames.
    pub names: Vec<String>,
    /// Exact files (resolved to dev:inode so equally named files elsewhere stay out).
    pub paths: Vec<PathBuf>,
    /// Exact `st_dev:st_ino` pairs, as `stat -c %d:%i` prints them.
    pub inodes: Vec<(u64, u64)>,
    /// Processes whose whole tree (present children excluded, future ones included) is traced.
    pub pids: Vec<u32>,
    /// A cgroup v2 directory.
    pub cgroup: Option<PathBuf>,
}

/// The kernel-side form of a [`Filter`].
pub struct Compiled {
    pub flags: u32,
    pub cgroup_id: u64,
    pub names: Vec<[u8; NAME_LEN]>,
    pub inodes: Vec<InodeKey>,
    pub pids: Vec<u32>,
}

impl Filter {
    pub fn compile(&self) -> Result<Compiled, Error> {
        let mut flags = 0;
        let mut names = Vec::new();
        let mut inodes = Vec::new();
        if self.all_locks {
            flags |= filter::ALL_LOCKS;
        } else {
            let defaults = self.names.is_empty() && self.paths.is_empty() && self.inodes.is_empty();
            let wanted: Vec<&str> = if defaults {
                DEFAULT_LOCKS.to_vec()
            } else {
                self.names.iter().map(String::as_str).collect()
            };
            for name in wanted {
                names.push(name_key(name)?);
            }
            if !names.is_empty() {
                flags |= filter::BY_NAME;
            }
            for path in &self.paths {
                let (dev, ino) = kernel::file_id(path).map_err(|e| {
                    Error::Filter(format!("--path {}", path.display()), e.to_string())
                })?;
                inodes.push(InodeKey { dev, ino });
            }
            for &(dev, ino) in &self.inodes {
                let dev = kernel::kernel_dev_for(dev).ok_or_else(|| {
                    Error::Filter(
                        format!("--inode {dev}:{ino}"),
                        "no mounted filesystem has this device; for a file on a btrfs \
                         subvolume that is not mounted on its own, use --path"
                            .into(),
                    )
                })?;
                inodes.push(InodeKey { dev, ino });
            }
            if !inodes.is_empty() {
                flags |= filter::BY_INODE;
            }
        }
        if !self.pids.is_empty() {
            flags |= filter::BY_PID;
        }
        let mut cgroup_id = 0;
        if let Some(dir) = &self.cgroup {
            // On cgroup v2 a cgroup's id is its directory's inode number.
            let meta = std::fs::metadata(dir)
                .map_err(|e| Error::Filter(format!("--cgroup {}", dir.display()), e.to_string()))?;
            cgroup_id = meta.ino();
            flags |= filter::BY_CGROUP;
        }
        Ok(Compiled {
            flags,
            cgroup_id,
            names,
            inodes,
            pids: self.pids.clone(),
        })
    }
}

fn name_key(name: &str) -> Result<[u8; NAME_LEN], Error> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= NAME_LEN || name.contains('/') {
        return Err(Error::Filter(
            format!("--lock {name}"),
            format!("a lock name is a basename of 1 to {} bytes", NAME_LEN - 1),
        ));
    }
    let mut key = [0u8; NAME_LEN];
    key[..bytes.len()].copy_from_slice(bytes);
    Ok(key)
}

/// Parses `DEV:INO` (decimal `st_dev`, as `stat -c %d:%i` prints).
pub fn parse_inode(s: &str) -> Result<(u64, u64), Error> {
    let bad = || {
        Error::Filter(
            s.to_owned(),
            "expected DEV:INO as printed by `stat -c %d:%i`".into(),
        )
    };
    let (dev, ino) = s.split_once(':').ok_or_else(bad)?;
    Ok((
        dev.parse().map_err(|_| bad())?,
        ino.parse().map_err(|_| bad())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_containers_storage_locks() {
        let c = Filter::default().compile().unwrap();
        assert_eq!(c.flags, filter::BY_NAME);
        assert_eq!(c.names.len(), 4);
        assert_eq!(&c.names[1][..12], b"layers.lock\0");
    }

    #[test]
    fn paths_become_inodes_and_replace_the_default_names() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let meta = f.path().metadata().unwrap();
        let c = Filter {
            paths: vec![f.path().into()],
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert_eq!(c.flags, filter::BY_INODE);
        assert_eq!(c.inodes[0].ino, meta.ino());
        assert_eq!(
            (c.inodes[0].dev, c.inodes[0].ino),
            kernel::file_id(f.path()).unwrap()
        );
    }

    #[test]
    fn bad_filters_are_refused() {
        assert!(
            Filter {
                names: vec!["a/b".into()],
                ..Default::default()
            }
            .compile()
            .is_err()
        );
        assert!(
            Filter {
                paths: vec!["/no/such/file".into()],
                ..Default::default()
            }
            .compile()
            .is_err()
        );
        assert!(parse_inode("12").is_err());
        assert_eq!(parse_inode("2049:77").unwrap(), (2049, 77));
    }
}
