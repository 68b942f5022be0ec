//! A process's address-space layout, from `/proc/<pid>/maps`.
//!
//! We parse it ourselves rather than through blazesym's normalizer so that we decide when to
//! re-read it (only when an address falls outside every known mapping) and which path opens a
//! module's file (the process may run chrooted, so the path it sees is not ours).

use std::cell::OnceCell;
use std::path::PathBuf;
use std::rc::Rc;

use super::binary::Opened;

/// One line of `/proc/<pid>/maps`.
#[derive(Debug)]
pub(super) struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// The file's path as the process sees it, or a pseudo name such as `[vdso]`; `None` when
    /// anonymous.
    pub path: Option<String>,
    inode: u64,
    /// The module's file, opened on first use (`None` inside: could not be read).
    pub opened: OnceCell<Option<Rc<Opened>>>,
}

impl Mapping {
    /// A mapping of a file on disk (not anonymous memory, not `[vdso]`/`[heap]`).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.as_deref().is_some_and(|p| p.starts_with('/'))
    }

    /// The module's base name for `libfoo.so+0x1a2b` frames.
    pub fn module_name(&self) -> Option<&str> {
        let path = self.path.as_deref()?;
        let path = path.strip_suffix(" (deleted)").unwrap_or(path);
        Some(path.rsplit('/').next().unwrap_or(path))
    }

    /// Paths that open this mapping's file from our mount namespace and root, best first:
    /// `map_files` names the very file mapped (even if chrooted or deleted since) but needs
    /// CAP_SYS_ADMIN; `/proc/<pid>/root` resolves the path in the process's root.
    pub fn open_paths(&self, pid: u32) -> Vec<PathBuf> {
        let mut paths = vec![PathBuf::from(format!(
            "/proc/{pid}/map_files/{:x}-{:x}",
            self.start, self.end
        ))];
        if let Some(path) = self.path.as_deref() {
            let path = path.strip_suffix(" (deleted)").unwrap_or(path);
            paths.push(PathBuf::from(format!("/proc/{pid}/root{path}")));
        }
        paths
    }

    /// The path as the process sees it, taken as ours; only trusted once it is shown to name the
    /// same file.
    pub fn plain_path(&self) -> Option<PathBuf> {
        let path = self.path.as_deref()?;
        (self.is_file() && !path.ends_with(" (deleted)")).then(|| PathBuf::from(path))
    }

    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
}

/// All mappings of one process, sorted by start address.
#[derive(Debug, Default)]
pub(super) struct AddressSpace {
    maps: Vec<Mapping>,
}

impl AddressSpace {
    /// Reads `/proc/<pid>/maps`; `None` if the process is gone or the file unreadable.
    pub fn read(pid: u32) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        Some(Self::parse(&text))
    }

    pub fn parse(text: &str) -> Self {
        let mut maps: Vec<Mapping> = text.lines().filter_map(parse_line).collect();
        maps.sort_by_key(|m| m.start);
        Self { maps }
    }

    pub fn find(&self, addr: u64) -> Option<&Mapping> {
        let i = self
            .maps
            .partition_point(|m| m.start <= addr)
            .checked_sub(1)?;
        self.maps.get(i).filter(|m| m.contains(addr))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.maps.len()
    }
}

/// `start-end perms offset dev inode [path]`; the path may contain spaces.
fn parse_line(line: &str) -> Option<Mapping> {
    let mut rest = line;
    let mut field = || {
        let t = rest.trim_start();
        let end = t.find(' ').unwrap_or(t.len());
        let (f, r) = t.split_at(end);
        rest = r;
        f
    };
    let range = field();
    let _perms = field();
    let offset = u64::from_str_radix(field(), 16).ok()?;
    let _dev = field();
    let inode = field().parse().ok()?;
    let path = rest.trim_start();
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if start >= end {
        return None;
    }
    Some(Mapping {
        start,
        end,
        offset,
        path: (!path.is_empty()).then(|| path.to_owned()),
        inode,
        opened: OnceCell::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 08:01 1312 /usr/bin/my prog
55d0c0a02000-55d0c0a05000 r-xp 00002000 08:01 1312 /usr/bin/my prog
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
7f1000000000-7f1000001000 r-xp 00001000 00:1f 99 /tmp/gone.so (deleted)
7ffd1e3f0000-7ffd1e3f2000 r-xp 00000000 00:00 0                          [vdso]
garbage line
";

    #[test]
    fn parses_maps_lines() {
        let space = AddressSpace::parse(MAPS);
        assert_eq!(space.len(), 5);
        let text = space.find(0x55d0c0a03000).expect("text mapping");
        assert_eq!(text.offset, 0x2000);
        assert_eq!(text.module_name(), Some("my prog"));
        assert!(text.is_file());
        assert!(space.find(0x55d0c0a05000).is_none(), "end is exclusive");
        let anon = space.find(0x7f0000000010).expect("anonymous mapping");
        assert!(!anon.is_file());
        assert_eq!(anon.module_name(), None);
        let gone = space.find(0x7f1000000000).expect("deleted mapping");
        assert_eq!(gone.module_name(), Some("gone.so"));
        assert_eq!(
            gone.open_paths(7)[1],
            PathBuf::from("/proc/7/root/tmp/gone.so")
        );
        let vdso = space.find(0x7ffd1e3f0000).expect("vdso");
        assert!(!vdso.is_file());
        assert_eq!(vdso.module_name(), Some("[vdso]"));
        assert!(space.find(0).is_none());
    }
}
