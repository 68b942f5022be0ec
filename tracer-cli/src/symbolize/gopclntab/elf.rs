//! Finding the pclntab and its textStart in a 64-bit ELF file.

use std::collections::HashMap;

use object::elf::{
    PT_LOAD, R_AARCH64_RELATIVE, R_X86_64_RELATIVE, SHF_ALLOC, SHF_EXECINSTR, SHT_PROGBITS,
    SHT_RELA,
};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader, Rela, SectionHeader};
use object::{Endian, Endianness, ReadRef};

use super::{GoTable, GoTableError, Header, MAGIC_GO118, MAGIC_GO120, Reader};

/// Section names the Go linker uses for the table (the second when it lands in RELRO data).
const SECTION_NAMES: [&[u8]; 2] = [b".gopclntab", b".data.rel.ro.gopclntab"];

/// Word indexes in the runtime's moduledata (the same from Go 1.18 to at least 1.27):
/// pcHeader, then six slices (funcnametab, cutab, filetab, pctab, pclntable, ftab), findfunctab,
/// minpc, maxpc, text.
const MD_FTAB: u64 = 16;
const MD_MINPC: u64 = 20;
const MD_TEXT: u64 = 22;

type Elf<'data, R> = ElfFile64<'data, Endianness, R>;

impl GoTable {
    /// Reads the table of a 64-bit ELF file (a byte slice, or an `object::ReadCache` over a file).
    ///
    /// The table is found by its section name; failing that (an external linker merges it into
    /// `.data.rel.ro` of PIE binaries), by scanning read-only data for a valid pcHeader.
    pub fn from_elf<'data, R: ReadRef<'data>>(data: R) -> Result<Self, GoTableError> {
        let elf = Elf::<R>::parse(data)?;
        let endian = elf.endian();
        let relocs = relative_relocs(&elf, data);
        let sections = elf.elf_section_table();
        if let Some((_, section)) = SECTION_NAMES
            .iter()
            .find_map(|name| sections.section_by_name(endian, name))
        {
            let bytes = section
                .data(endian, data)
                .map_err(|_| GoTableError::Corrupt("section data out of the file"))?;
            return read_at(&elf, data, &relocs, bytes, section.sh_addr(endian));
        }
        let mut error = GoTableError::NoSection;
        for section in data_sections(&elf) {
            let Ok(bytes) = section.data(endian, data) else {
                continue;
            };
            // The table is pointer-aligned; check the first 8 header bytes before parsing.
            for at in (0..bytes.len().saturating_sub(8)).step_by(8) {
                if !looks_like_header(&bytes[at..], endian.is_big_endian()) {
                    continue;
                }
                let Some(vaddr) = section.sh_addr(endian).checked_add(at as u64) else {
                    continue;
                };
                match read_at(&elf, data, &relocs, &bytes[at..], vaddr) {
                    Ok(table) if !table.is_empty() => return Ok(table),
                    Ok(_) => {}
                    Err(e) => error = e,
                }
            }
        }
        Err(error)
    }
}

/// Reads the table at `bytes`, loaded at link-time address `vaddr`.
fn read_at<'data, R: ReadRef<'data>>(
    elf: &Elf<'data, R>,
    data: R,
    relocs: &HashMap<u64, u64>,
    bytes: &[u8],
    vaddr: u64,
) -> Result<GoTable, GoTableError> {
    let header = Header::parse(bytes, elf.endian().is_big_endian())?;
    let field = vaddr
        .checked_add(header.text_start_field as u64)
        .ok_or(GoTableError::Corrupt("section address"))?;
    let text_start = relocs.get(&field).copied().unwrap_or(header.text_start);
    let table = GoTable::build(bytes, &header, text_start)?;
    if text_start != 0 {
        return Ok(table);
    }
    let text = moduledata_text(elf, data, relocs, vaddr, &header, &table).ok_or(
        GoTableError::Corrupt("textStart is zero and no moduledata names the text"),
    )?;
    table.at(text)
}

/// `text` from the runtime's moduledata that points at the pcHeader at `header_vaddr`; only
/// trusted when its ftab slice is this table's and its minpc is the first function's entry.
fn moduledata_text<'data, R: ReadRef<'data>>(
    elf: &Elf<'data, R>,
    data: R,
    relocs: &HashMap<u64, u64>,
    header_vaddr: u64,
    header: &Header,
    table: &GoTable,
) -> Option<u64> {
    let endian = elf.endian();
    let word = |vaddr: u64| {
        relocs
            .get(&vaddr)
            .copied()
            .or_else(|| file_word(elf, data, vaddr))
    };
    // Pointers to the header: relocated ones (PIE), then plain words in the data sections.
    let mut candidates: Vec<u64> = relocs
        .iter()
        .filter(|&(_, &value)| value == header_vaddr)
        .map(|(&at, _)| at)
        .collect();
    let big = endian.is_big_endian();
    for section in data_sections(elf) {
        let Ok(bytes) = section.data(endian, data) else {
            continue;
        };
        let r = Reader { bytes, big };
        for at in (0..bytes.len()).step_by(8) {
            if r.u64(at) == Some(header_vaddr) {
                candidates.extend(section.sh_addr(endian).checked_add(at as u64));
            }
        }
    }
    let ftab = header_vaddr.checked_add(header.pcln_offset as u64)?;
    let first = u64::from(*table.entries.first()?);
    candidates.into_iter().find_map(|md| {
        let field = |i: u64| word(md.checked_add(8 * i)?);
        let nftab = field(MD_FTAB + 1)?;
        if field(MD_FTAB)? != ftab || nftab != header.nfunc as u64 + 1 {
            return None;
        }
        let text = field(MD_TEXT)?;
        (field(MD_MINPC)? == text.checked_add(first)?).then_some(text)
    })
}

/// Allocated, non-executable PROGBITS sections: where Go keeps its tables and moduledata.
fn data_sections<'data, 'file, R: ReadRef<'data>>(
    elf: &'file Elf<'data, R>,
) -> impl Iterator<Item = &'data object::elf::SectionHeader64<Endianness>> + 'file {
    let endian = elf.endian();
    elf.elf_section_table().iter().filter(move |s| {
        let flags = s.sh_flags(endian);
        s.sh_type(endian) == SHT_PROGBITS
            && flags & u64::from(SHF_ALLOC) != 0
            && flags & u64::from(SHF_EXECINSTR) == 0
    })
}

/// The 8-byte word at link-time address `vaddr`, as stored in the file.
fn file_word<'data, R: ReadRef<'data>>(elf: &Elf<'data, R>, data: R, vaddr: u64) -> Option<u64> {
    let endian = elf.endian();
    // Checked arithmetic throughout: the headers may be corrupt.
    let offset = elf.elf_program_headers().iter().find_map(|p| {
        let into = vaddr.checked_sub(p.p_vaddr(endian))?;
        let fits = p.p_type(endian) == PT_LOAD && into.checked_add(8)? <= p.p_filesz(endian);
        fits.then(|| p.p_offset(endian).checked_add(into)).flatten()
    })?;
    let bytes = data.read_bytes_at(offset, 8).ok()?;
    Reader {
        bytes,
        big: endian.is_big_endian(),
    }
    .u64(0)
}

/// Whether `bytes` starts like a Go 1.18+ pcHeader: magic, two zero pads, quantum, 8-byte pointers.
fn looks_like_header(bytes: &[u8], big: bool) -> bool {
    let r = Reader { bytes, big };
    matches!(r.u32(0), Some(MAGIC_GO118 | MAGIC_GO120))
        && matches!(r.array::<4>(4), Some([0, 0, 1 | 2 | 4, 8]))
}

/// Every RELATIVE dynamic relocation: the address it writes → the value (its addend).
fn relative_relocs<'data, R: ReadRef<'data>>(elf: &Elf<'data, R>, data: R) -> HashMap<u64, u64> {
    let endian = elf.endian();
    let mips = elf.elf_header().is_mips64el(endian);
    elf.elf_section_table()
        .iter()
        .filter(|s| s.sh_type(endian) == SHT_RELA)
        .filter_map(|s| s.rela(endian, data).ok().flatten())
        .flat_map(|(relas, _)| relas.iter())
        .filter(|r| {
            matches!(
                r.r_type(endian, mips),
                R_X86_64_RELATIVE | R_AARCH64_RELATIVE
            )
        })
        .map(|r| (r.r_offset(endian), r.r_addend(endian) as u64))
        .collect()
}
