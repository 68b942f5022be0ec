//! Which files and processes are traced: the filters, the file's name, and the path sent once per
//! inode.

use tracer_common::{
    COMPONENT_LEN, Config, Event, F_OFD_SETLK, F_OFD_SETLKW, F_SETLK, F_SETLKW, InodeKey, NAME_LEN,
    PATH_DEPTH, PathRecord, event_flag, filter,
};

use super::{
    BPF_NOEXIST, Miss, Outcome,
    maps::{EVENTS, INODES, NAMES, PATH_SCRATCH, PIDS, SEEN},
    require, submit_flags,
};
use crate::kernel::{current_cgroup_id, read_at, read_kernel_str};

pub(super) fn is_lock_cmd(cmd: u32) -> bool {
    matches!(cmd, F_SETLK | F_SETLKW | F_OFD_SETLK | F_OFD_SETLKW)
}

/// Process filters that need no file: pid tree and cgroup.
pub(super) fn process_wanted(cfg: &Config, tgid: u32) -> bool {
    if cfg.flags & filter::BY_PID != 0 && PIDS.get_ptr(&tgid).is_none() {
        return false;
    }
    if cfg.flags & filter::BY_CGROUP != 0 && current_cgroup_id() != cfg.cgroup_id {
        return false;
    }
    true
}

/// The address of the basename of `file`, read through `file->f_path.dentry->d_name.name`.
pub(super) fn name_of(cfg: &Config, file: u64) -> Option<u64> {
    let o = &cfg.offsets;
    read_at::<u64>(file, o.file_dentry).and_then(|dentry| read_at::<u64>(dentry, o.dentry_name))
}

/// Copies the basename at `name` into `ev.name`; a name that cannot be read is flagged.
pub(super) fn set_name(name: Option<u64>, ev: &mut Event) {
    ev.name = [0; NAME_LEN];
    if name
        .and_then(|p| read_kernel_str(p, &mut ev.name))
        .is_some()
    {
        ev.flags &= !event_flag::NAME_MISSING;
    } else {
        ev.flags |= event_flag::NAME_MISSING;
    }
}

/// Whether the file filters need the basename to decide.
pub(super) fn filter_by_name(cfg: &Config) -> bool {
    cfg.flags & filter::ALL_LOCKS == 0 && cfg.flags & filter::BY_NAME != 0
}

/// Applies the file filters to the file `ev` describes (its name is only looked at when
/// [`filter_by_name`]).
pub(super) fn file_wanted(cfg: &Config, ev: &Event) -> Outcome {
    if cfg.flags & filter::ALL_LOCKS != 0 {
        return Ok(());
    }
    if filter_by_name(cfg)
        && ev.flags & event_flag::NAME_MISSING == 0
        && NAMES.get_ptr(&ev.name).is_some()
    {
        return Ok(());
    }
    let key = InodeKey {
        dev: ev.dev,
        ino: ev.ino,
    };
    require(cfg.flags & filter::BY_INODE != 0 && INODES.get_ptr(&key).is_some())
}

/// Sends the path of a traced inode the first time it is seen; `named` says whether `ev.name`
/// holds the basename already (else it is read here, once per inode).
pub(super) fn send_path_once(cfg: &Config, file: u64, ev: &mut Event, named: bool) -> Outcome {
    let (dev, ino) = (ev.dev, ev.ino);
    let key = InodeKey { dev, ino };
    // A lookup first: an LRU insert takes a free node (and its lock) before it finds the key
    // exists, which on every lock call of a known file cost more than the rest of this check.
    require(SEEN.get_ptr(&key).is_none())?;
    // One insert both checks and claims: two CPUs cannot both send the path.
    SEEN.insert(&key, &1, BPF_NOEXIST)
        .map_err(|_| Miss::Ignored)?;
    if !named {
        set_name(name_of(cfg, file), ev);
    }
    let rec = PATH_SCRATCH.get_ptr_mut(0).ok_or(Miss::Ignored)?;
    // SAFETY: the lookup succeeded, so this is this CPU's scratch slot; programs do not nest on a
    // CPU, so this is the only reference to it while the program runs.
    let rec = unsafe { &mut *rec };
    let o = &cfg.offsets;
    rec.dev = dev;
    rec.ino = ino;
    rec.depth = 0;
    rec.incomplete = 1;
    rec.name = ev.name;
    rec.flags = ev.flags & event_flag::NAME_MISSING;
    rec._reserved = 0;
    let mut dentry = read_at::<u64>(file, o.file_dentry).ok_or(Miss::Ignored)?;
    for i in 0..PATH_DEPTH {
        let Some(parent) = read_at::<u64>(dentry, o.dentry_parent) else {
            break;
        };
        if parent == dentry {
            // The filesystem root: its "/" is implied.
            rec.incomplete = 0;
            break;
        }
        let slot = &mut rec.components[i];
        *slot = [0; COMPONENT_LEN];
        let read = read_at::<u64>(dentry, o.dentry_name).and_then(|p| read_kernel_str(p, slot));
        match read {
            // A full slot means the name may have been cut.
            Some(len) if len < COMPONENT_LEN - 1 => rec.depth = i as u32 + 1,
            _ => break,
        }
        dentry = parent;
    }
    EVENTS
        .output::<PathRecord>(&*rec, submit_flags())
        .map_err(|_| Miss::RingbufFull)
}
