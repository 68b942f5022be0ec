//! What we keep of one module file: its load segments (file offset → virtual address) and, for
//! Go binaries, the function table. Keyed by the file's identity, not its path, so the same
//! binary in many processes (or under many chroots) is parsed once.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use object::elf::PT_LOAD;
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, ReadCache};

use super::gopclntab::GoTable;

/// Identifies a file's contents: device, inode, size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileKey {
    /// The key of the file at `path` (following symlinks, as `map_files` entries are).
    pub fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        m.is_file().then(|| Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    offset: u64,
    filesz: u64,
    vaddr: u64,
}

/// A module file as one process maps it: the shared parsed binary and the path that opens it
/// from our root (blazesym reads symbols and DWARF through it; it names a pid, so it is not
/// shared between processes).
#[derive(Debug)]
pub(super) struct Opened {
    pub binary: Rc<Binary>,
    pub path: PathBuf,
}

/// One parsed module file.
#[derive(Debug)]
pub(super) struct Binary {
    segments: Vec<Segment>,
    pub go: Option<GoTable>,
}

impl Binary {
    /// Reads the parts we need (headers, `.gopclntab`, relocations) without reading the whole
    /// file: Go binaries are tens of megabytes. A file that is not a 64-bit ELF still yields a
    /// `Binary` (blazesym may know more), just without segments or Go table.
    pub fn load(path: &Path) -> Option<Self> {
        let file = File::open(path).ok()?;
        let cache = ReadCache::new(file);
        let segments = segments(&cache).unwrap_or_default();
        let go = GoTable::from_elf(&cache).ok();
        Some(Self { segments, go })
    }

    /// The link-time virtual address of file offset `offset`, through the PT_LOAD segments.
    pub fn vaddr(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| s.offset <= offset && offset - s.offset < s.filesz)
            .and_then(|s| s.vaddr.checked_add(offset - s.offset))
    }

    /// The Go function name at file offset `offset`, if it is inside Go's text.
    pub fn go_name(&self, offset: u64) -> Option<&str> {
        let go = self.go.as_ref()?;
        Some(go.lookup(self.vaddr(offset)?)?.name)
    }
}

fn segments(cache: &ReadCache<File>) -> Option<Vec<Segment>> {
    let elf = ElfFile64::<Endianness, _>::parse(cache).ok()?;
    let endian = elf.endian();
    let segments = elf
        .elf_program_headers()
        .iter()
        .filter(|p| p.p_type(endian) == PT_LOAD)
        .map(|p| Segment {
            offset: p.p_offset(endian),
            filesz: p.p_filesz(endian),
            vaddr: p.p_vaddr(endian),
        })
        .collect();
    Some(segments)
}
