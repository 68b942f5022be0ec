//! Names for the user stacks that `locktrace record --stacks` captures.
//!
//! A stack is a list of absolute instruction addresses of a live process, leaf first. We map each
//! address to a module file and file offset through the process's `/proc/<pid>/maps`, then name
//! it: from Go's own function table when the module is a Go binary and the address is in Go's
//! text (stripped Go binaries keep only a few dynamic symbols, so any other guess would be a
//! wrong name), else through blazesym (ELF symbols, DWARF, demangling). A frame we cannot name
//! is kept as `module+0xoffset` or `[unknown] 0xaddr`, never dropped.
//!
//! Stands alone; `session` uses it.

pub mod gopclntab;

mod binary;
mod maps;

use std::collections::HashMap;
use std::rc::Rc;

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized};

use self::binary::{Binary, FileKey, Opened};
use self::maps::{AddressSpace, Mapping};

/// Past this many processes (or binaries) cached, the cache starts over: exited processes are
/// not announced to us, and this bounds the memory they hold.
const MAX_PIDS: usize = 4096;
const MAX_BINARIES: usize = 512;

/// Counts of frames named so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames symbolized (named or not).
    pub frames: u64,
    /// Frames left without a function name.
    pub unknown: u64,
}

/// Symbolizes user stacks, caching each process's layout and each binary's parsed tables.
///
/// Not `Send` (blazesym's caches use `Rc`): keep it on the thread of the event loop.
pub struct Symbolizer {
    spaces: HashMap<u32, AddressSpace>,
    binaries: HashMap<FileKey, Rc<Binary>>,
    blaze: blazesym::symbolize::Symbolizer,
    stats: Stats,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("pids", &self.spaces.len())
            .field("binaries", &self.binaries.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// Where one frame's name comes from, before blazesym runs for the frames that need it.
enum Frame {
    Named(String),
    /// In a module file; `lookup` is the offset to name (return addresses step back one byte).
    InModule {
        module: String,
        offset: u64,
        lookup: u64,
        opened: Option<Rc<Opened>>,
    },
    Unknown,
}

/// The frames of one stack that blazesym names in one call: those in one module file.
struct Batch {
    opened: Rc<Opened>,
    frames: Vec<usize>,
    offsets: Vec<u64>,
}

impl Symbolizer {
    pub fn new() -> Self {
        Self {
            spaces: HashMap::new(),
            binaries: HashMap::new(),
            blaze: new_blaze(),
            stats: Stats::default(),
        }
    }

    /// Names the frames of one user stack of live process `pid`, leaf first, one String per
    /// address: the function name when known, else `module+0xoffset` (offset in the module's
    /// file) or `[unknown] 0xaddr`.
    ///
    /// Frames after the first are return addresses, so they are looked up one byte back (inside
    /// the call), which names the caller right even when the call was its last instruction.
    pub fn symbolize(&mut self, pid: u32, addrs: &[u64]) -> Vec<String> {
        self.refresh(pid, addrs);
        let frames: Vec<Frame> = addrs
            .iter()
            .enumerate()
            .map(|(i, &addr)| self.frame(pid, addr, i > 0))
            .collect();
        let named = self.name(frames, addrs);
        self.stats.frames += named.len() as u64;
        self.stats.unknown += named.iter().filter(|(_, known)| !known).count() as u64;
        named.into_iter().map(|(name, _)| name).collect()
    }

    /// Frames named / left unknown so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Re-reads `pid`'s mappings when it is new or an address falls outside all known mappings
    /// (it may have dlopened a library or exec'd since).
    fn refresh(&mut self, pid: u32, addrs: &[u64]) {
        let stale = match self.spaces.get(&pid) {
            None => true,
            Some(space) => addrs.iter().any(|&a| a != 0 && space.find(a).is_none()),
        };
        if !stale {
            return;
        }
        if self.spaces.len() >= MAX_PIDS {
            self.spaces.clear();
            // blazesym keeps one small entry per path (and our paths name pids): start it over.
            self.blaze = new_blaze();
        }
        match AddressSpace::read(pid) {
            Some(space) => {
                self.spaces.insert(pid, space);
            }
            None => {
                self.spaces.remove(&pid);
            }
        }
    }

    fn frame(&mut self, pid: u32, addr: u64, return_addr: bool) -> Frame {
        let lookup_addr = if return_addr {
            addr.saturating_sub(1)
        } else {
            addr
        };
        let Some(space) = self.spaces.get(&pid) else {
            return Frame::Unknown;
        };
        let Some(mapping) = space.find(lookup_addr).or_else(|| space.find(addr)) else {
            return Frame::Unknown;
        };
        let Some(module) = mapping.module_name().map(str::to_owned) else {
            return Frame::Unknown;
        };
        // Saturating: the offset comes from /proc and is trusted no further than that.
        let offset = (addr - mapping.start).saturating_add(mapping.offset);
        let lookup =
            (lookup_addr.max(mapping.start) - mapping.start).saturating_add(mapping.offset);
        let opened = if mapping.is_file() {
            let binaries = &mut self.binaries;
            mapping
                .opened
                .get_or_init(|| open(binaries, pid, mapping))
                .clone()
        } else {
            None
        };
        if let Some(name) = opened.as_ref().and_then(|o| o.binary.go_name(lookup)) {
            return Frame::Named(name.to_owned());
        }
        Frame::InModule {
            module,
            offset,
            lookup,
            opened,
        }
    }

    /// Runs blazesym once per module for the frames still unnamed, then formats every frame;
    /// each with whether it got a function name.
    fn name(&self, frames: Vec<Frame>, addrs: &[u64]) -> Vec<(String, bool)> {
        // One batch per module file of this process, in order of first frame.
        let mut batches: Vec<Batch> = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            if let Frame::InModule {
                opened: Some(o),
                lookup,
                ..
            } = frame
            {
                let batch = match batches.iter_mut().position(|b| Rc::ptr_eq(&b.opened, o)) {
                    Some(at) => &mut batches[at],
                    None => {
                        batches.push(Batch {
                            opened: o.clone(),
                            frames: vec![],
                            offsets: vec![],
                        });
                        batches.last_mut().expect("just pushed")
                    }
                };
                batch.frames.push(i);
                batch.offsets.push(*lookup);
            }
        }
        let mut names: Vec<Option<String>> = vec![None; frames.len()];
        for batch in batches {
            let found = self.blaze_names(&batch.opened, &batch.offsets);
            for (i, name) in batch.frames.into_iter().zip(found) {
                names[i] = name;
            }
        }
        frames
            .into_iter()
            .zip(names)
            .zip(addrs)
            .map(|((frame, name), addr)| match (frame, name) {
                (Frame::Named(name), _) | (_, Some(name)) => (name, true),
                (Frame::InModule { module, offset, .. }, None) => {
                    (format!("{module}+{offset:#x}"), false)
                }
                (Frame::Unknown, None) => (format!("[unknown] {addr:#x}"), false),
            })
            .collect()
    }

    /// blazesym's names for file offsets in a module; `None` for each it cannot name.
    fn blaze_names(&self, opened: &Opened, offsets: &[u64]) -> Vec<Option<String>> {
        let src = Source::Elf(Elf::new(&opened.path));
        match self.blaze.symbolize(&src, Input::FileOffset(offsets)) {
            Ok(syms) => syms
                .into_iter()
                .map(|s| match s {
                    Symbolized::Sym(sym) if !sym.name.is_empty() => Some(sym.name.into_owned()),
                    _ => None,
                })
                .collect(),
            Err(_) => vec![None; offsets.len()],
        }
    }
}

fn new_blaze() -> blazesym::symbolize::Symbolizer {
    // Function names are all we show: no file/line lookups, no inlined frames.
    blazesym::symbolize::Symbolizer::builder()
        .enable_code_info(false)
        .enable_inlined_fns(false)
        .build()
}

/// Opens the file behind `mapping` through a path valid from our root, sharing the parsed
/// binary with every other mapping of the same file.
fn open(
    binaries: &mut HashMap<FileKey, Rc<Binary>>,
    pid: u32,
    mapping: &Mapping,
) -> Option<Rc<Opened>> {
    for path in mapping.open_paths(pid) {
        let Some(key) = FileKey::of(&path) else {
            continue;
        };
        // The same file under its own path in our namespace (no chroot between us) outlives the
        // process, and blazesym parses it once for every process that maps it.
        let path = match mapping.plain_path() {
            Some(plain) if FileKey::of(&plain) == Some(key) => plain,
            _ => path,
        };
        let binary = match binaries.get(&key) {
            Some(binary) => binary.clone(),
            None => {
                let binary = Rc::new(Binary::load(&path)?);
                if binaries.len() >= MAX_BINARIES {
                    binaries.clear();
                }
                binaries.insert(key, binary.clone());
                binary
            }
        };
        return Some(Rc::new(Opened { binary, path }));
    }
    None
}

#[cfg(test)]
mod testprog;
#[cfg(test)]
mod tests;
