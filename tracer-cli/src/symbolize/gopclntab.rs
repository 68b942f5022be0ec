//! Go function names from `.gopclntab`, the table the Go runtime keeps for its own tracebacks.
//!
//! Stripped Go binaries (`-ldflags='-s -w'`, as Debian builds podman) have no symbol table and no
//! DWARF, but they keep `.gopclntab` and their section headers. No maintained crate does this job
//! as a library: blazesym reads ELF symbols and DWARF only, and `unstrip` is a young
//! reverse-engineering tool (goblin, exporters for disassemblers) rather than a small reader. So
//! this module reads the function table itself, for Go 1.18–1.19 (magic `0xfffffff0`) and Go
//! 1.20+ (magic `0xfffffff1`); older layouts are reported as unsupported.
//!
//! Layout (Go's `runtime/symtab.go`): an 8-byte header (magic, two zero pads, instruction quantum,
//! pointer size), then eight pointer-sized words: nfunc, nfiles, textStart, and the offsets of
//! funcnametab, cutab, filetab, pctab and the function table, all relative to the header. The
//! function table holds `nfunc + 1` pairs of `u32` (entry offset from textStart, offset of the
//! function's `_func` record from the table); the last pair's entry is the end of Go's text.
//! Each `_func` starts with its entry offset and the offset of its name in funcnametab.
//!
//! The trap is textStart: in a PIE binary the word in the file is filled at load time by an
//! `R_X86_64_RELATIVE` (or `R_AARCH64_RELATIVE`) dynamic relocation whose addend is the value, so
//! the file may hold zero; and recent Go linkers leave it zero altogether. With external linking
//! (cgo) C code precedes Go's text, so the start of `.text` would be wrong too. `elf` takes the
//! relocation's addend, else the word itself, else `text` from the runtime's moduledata.

use std::ops::Range;

mod elf;

const MAGIC_GO118: u32 = 0xffff_fff0;
const MAGIC_GO120: u32 = 0xffff_fff1;
/// Magics of Go 1.2–1.15 and 1.16–1.17, recognised only to say "unsupported" clearly.
const MAGIC_OLDER: [u32; 2] = [0xffff_fffb, 0xffff_fffa];

/// Why a binary yields no Go function table.
#[derive(Debug, thiserror::Error)]
pub enum GoTableError {
    #[error("not a 64-bit ELF file: {0}")]
    Elf(#[from] object::Error),
    #[error("no .gopclntab section")]
    NoSection,
    #[error("pclntab magic {0:#010x} is from a Go release before 1.18 (not supported)")]
    Unsupported(u32),
    #[error("not a pclntab (magic {0:#010x})")]
    BadMagic(u32),
    #[error("corrupt pclntab: {0}")]
    Corrupt(&'static str),
}

/// One Go function: its name and its address range (link-time virtual addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoFunc<'a> {
    pub name: &'a str,
    pub entry: u64,
    pub end: u64,
}

/// The function table of one Go binary, parsed once and kept for lookups.
#[derive(Debug)]
pub struct GoTable {
    /// Link-time virtual address of `runtime.text`; entries are offsets from it.
    text_start: u64,
    /// Entry offsets, ascending; `entries[i]`'s name starts at `name_offs[i]` in `names`.
    entries: Vec<u32>,
    name_offs: Vec<u32>,
    /// End of Go's text, as an offset from `text_start`.
    end: u32,
    /// A copy of funcnametab (NUL-terminated names).
    names: Vec<u8>,
}

impl GoTable {
    /// Reads a bare pclntab whose textStart is `text_start` (the value after relocation).
    pub fn from_pclntab(
        bytes: &[u8],
        text_start: u64,
        big_endian: bool,
    ) -> Result<Self, GoTableError> {
        let header = Header::parse(bytes, big_endian)?;
        Self::build(bytes, &header, text_start)
    }

    fn build(bytes: &[u8], h: &Header, text_start: u64) -> Result<Self, GoTableError> {
        let functab = bytes
            .get(h.pcln_offset..)
            .ok_or(GoTableError::Corrupt("function table offset"))?;
        let ft = Reader {
            bytes: functab,
            big: h.big,
        };
        // Each function takes at least 8 bytes of table; this bounds nfunc before allocating.
        if h.nfunc > functab.len() / 8 {
            return Err(GoTableError::Corrupt("nfunc larger than the table"));
        }
        let names = bytes
            .get(h.funcname_offset..)
            .ok_or(GoTableError::Corrupt("funcnametab offset"))?;
        // funcnametab ends where cutab starts (the linker lays them out in this order).
        let names = match h.cu_offset.checked_sub(h.funcname_offset) {
            Some(len) if len > 0 && len <= names.len() => &names[..len],
            _ => names,
        };
        let mut entries = Vec::with_capacity(h.nfunc);
        let mut name_offs = Vec::with_capacity(h.nfunc);
        for i in 0..h.nfunc {
            let entry = ft
                .u32(8 * i)
                .ok_or(GoTableError::Corrupt("function table"))?;
            let func_off =
                ft.u32(8 * i + 4)
                    .ok_or(GoTableError::Corrupt("function table"))? as usize;
            if entries.last().is_some_and(|&last| entry < last) {
                return Err(GoTableError::Corrupt("function table not sorted"));
            }
            let name_off = ft
                .u32(func_off.saturating_add(4))
                .ok_or(GoTableError::Corrupt("_func record"))?;
            if name_off as usize >= names.len() {
                return Err(GoTableError::Corrupt("function name offset"));
            }
            entries.push(entry);
            name_offs.push(name_off);
        }
        let end = ft
            .u32(8 * h.nfunc)
            .ok_or(GoTableError::Corrupt("function table end"))?;
        if entries.last().is_some_and(|&last| end < last) {
            return Err(GoTableError::Corrupt(
                "end of text before the last function",
            ));
        }
        Self {
            text_start: 0,
            entries,
            name_offs,
            end,
            names: names.to_vec(),
        }
        .at(text_start)
    }

    /// The same table with Go's text starting at `text_start`.
    fn at(mut self, text_start: u64) -> Result<Self, GoTableError> {
        if text_start.checked_add(self.end as u64).is_none() {
            return Err(GoTableError::Corrupt("text range overflows"));
        }
        self.text_start = text_start;
        Ok(self)
    }

    /// Number of functions in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Go's text, as link-time virtual addresses.
    pub fn text_range(&self) -> Range<u64> {
        self.text_start..self.text_start + self.end as u64
    }

    /// The function containing link-time virtual address `vaddr`, if it is in Go's text.
    pub fn lookup(&self, vaddr: u64) -> Option<GoFunc<'_>> {
        let off = u32::try_from(vaddr.checked_sub(self.text_start)?).ok()?;
        if off >= self.end {
            return None;
        }
        let i = self.entries.partition_point(|&e| e <= off).checked_sub(1)?;
        self.func(i)
    }

    /// Every function, in address order.
    pub fn functions(&self) -> impl Iterator<Item = GoFunc<'_>> {
        (0..self.entries.len()).filter_map(|i| self.func(i))
    }

    fn func(&self, i: usize) -> Option<GoFunc<'_>> {
        let entry = *self.entries.get(i)?;
        let end = self.entries.get(i + 1).copied().unwrap_or(self.end);
        let name = self.names.get(*self.name_offs.get(i)? as usize..)?;
        let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        let name = std::str::from_utf8(&name[..len]).ok()?;
        Some(GoFunc {
            name,
            entry: self.text_start + entry as u64,
            end: self.text_start + end as u64,
        })
    }
}

/// The parts of the pcHeader we use, with offsets already bounds-checked as numbers.
struct Header {
    big: bool,
    nfunc: usize,
    text_start: u64,
    /// Offset of the textStart word within the table (where its relocation points).
    text_start_field: usize,
    funcname_offset: usize,
    cu_offset: usize,
    pcln_offset: usize,
}

impl Header {
    fn parse(bytes: &[u8], big: bool) -> Result<Self, GoTableError> {
        let r = Reader { bytes, big };
        let magic = r
            .u32(0)
            .ok_or(GoTableError::Corrupt("shorter than its header"))?;
        match magic {
            MAGIC_GO118 | MAGIC_GO120 => {}
            m if MAGIC_OLDER.contains(&m) => return Err(GoTableError::Unsupported(m)),
            m => return Err(GoTableError::BadMagic(m)),
        }
        let [pad1, pad2, quantum, ptr] = r
            .array::<4>(4)
            .ok_or(GoTableError::Corrupt("shorter than its header"))?;
        if pad1 != 0 || pad2 != 0 || ![1, 2, 4].contains(&quantum) {
            return Err(GoTableError::Corrupt("header pads or instruction size"));
        }
        if ptr != 8 {
            return Err(GoTableError::Corrupt("pointer size is not 8"));
        }
        let word = |i: usize| -> Result<u64, GoTableError> {
            r.u64(8 + 8 * i)
                .ok_or(GoTableError::Corrupt("shorter than its header"))
        };
        let offset = |i: usize| -> Result<usize, GoTableError> {
            usize::try_from(word(i)?).map_err(|_| GoTableError::Corrupt("offset too large"))
        };
        Ok(Self {
            big,
            nfunc: offset(0)?,
            text_start: word(2)?,
            text_start_field: 8 + 8 * 2,
            funcname_offset: offset(3)?,
            cu_offset: offset(4)?,
            pcln_offset: offset(7)?,
        })
    }
}

/// Bounds-checked integer reads in the table's byte order.
struct Reader<'a> {
    bytes: &'a [u8],
    big: bool,
}

impl Reader<'_> {
    fn array<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        self.bytes.get(at..at.checked_add(N)?)?.try_into().ok()
    }

    fn u32(&self, at: usize) -> Option<u32> {
        let b = self.array::<4>(at)?;
        Some(if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn u64(&self, at: usize) -> Option<u64> {
        let b = self.array::<8>(at)?;
        Some(if self.big {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        })
    }
}

#[cfg(test)]
mod tests;
