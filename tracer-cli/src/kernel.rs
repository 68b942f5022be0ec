//! What the running kernel looks like: struct offsets from its BTF, tracepoint field offsets from
//! tracefs. Nothing here is baked in at build time, so one binary works across kernels.

use std::{
    fs,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use btf_rs::{Btf, BtfType, Type};
use tracer_common::Offsets;

pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// What the running kernel lacks for tracing; each renders as one line that says what is missing.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("tracefs is not mounted at {TRACEFS} and mounting it failed: {0}")]
    Tracefs(std::io::Error),
    #[error("cannot read tracepoint format {}: {error}", path.display())]
    Format {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("tracepoint {tracepoint} has no field {field} on this kernel")]
    Field { tracepoint: String, field: String },
    #[error(
        "this kernel has no BTF ({BTF_PATH}); locktrace needs it to find struct offsets \
         (kernels built with CONFIG_DEBUG_INFO_BTF=y have it)"
    )]
    NoBtf,
    #[error("reading kernel BTF: {0}")]
    Btf(btf_rs::Error),
    #[error("reading kernel BTF: struct {root} has no member {member}")]
    Member { root: String, member: String },
}

/// Makes sure tracefs is mounted at [`TRACEFS`]; mounts it when it is not. Returns whether it mounted.
pub fn ensure_tracefs() -> Result<bool, KernelError> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(false);
    }
    // SAFETY: every pointer is a NUL-terminated C string literal or NULL (no mount data), all
    // valid for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(KernelError::Tracefs(std::io::Error::last_os_error()));
    }
    Ok(true)
}

/// Whether a tracepoint exists on this kernel.
pub fn has_tracepoint(category: &str, name: &str) -> bool {
    Path::new(TRACEFS)
        .join("events")
        .join(category)
        .join(name)
        .is_dir()
}

/// Offset of the first of `names` found among a tracepoint's fields (field names change across
/// kernels, e.g. `fl_type` became `type` in 6.9).
pub fn tracepoint_field(category: &str, event: &str, names: &[&str]) -> Result<u64, KernelError> {
    let path = Path::new(TRACEFS)
        .join("events")
        .join(category)
        .join(event)
        .join("format");
    let text = fs::read_to_string(&path).map_err(|error| KernelError::Format {
        path: path.clone(),
        error,
    })?;
    let missing = |field: String| KernelError::Field {
        tracepoint: format!("{category}:{event}"),
        field,
    };
    for line in text.lines() {
        let Some(decl) = line.trim().strip_prefix("field:") else {
            continue;
        };
        let mut parts = decl.split(';');
        let declaration = parts.next().unwrap_or("");
        let field = declaration
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .unwrap_or("")
            .split('[')
            .next()
            .unwrap_or("");
        if !names.contains(&field) {
            continue;
        }
        for part in parts {
            if let Some(off) = part.trim().strip_prefix("offset:") {
                return off.parse().map_err(|_| missing(field.to_owned()));
            }
        }
    }
    Err(missing(names.join("|")))
}

/// Byte offset of `path` (e.g. `["f_path", "dentry"]`) inside `struct root`, looking through
/// anonymous structs and unions the way C member access does.
fn member_offset(btf: &Btf, root: &str, path: &[&str]) -> Result<u64, KernelError> {
    let missing = || KernelError::Member {
        root: root.to_owned(),
        member: path.join("."),
    };
    let mut ty = btf
        .resolve_types_by_name(root)
        .map_err(|_| missing())?
        .into_iter()
        .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))
        .ok_or_else(missing)?;
    let mut total = 0u64;
    for name in path {
        let (off, next) = find_member(btf, &ty, name)?.ok_or_else(missing)?;
        total += off;
        ty = next;
    }
    Ok(total)
}

/// Finds `name` in a struct/union, descending into anonymous members; returns (byte offset, type).
fn find_member(btf: &Btf, ty: &Type, name: &str) -> Result<Option<(u64, Type)>, KernelError> {
    let members = match ty {
        Type::Struct(s) | Type::Union(s) => &s.members,
        _ => return Ok(None),
    };
    for m in members {
        let member_name = btf.resolve_name(m).unwrap_or_default();
        let mty = strip_modifiers(btf, btf.resolve_chained_type(m).map_err(KernelError::Btf)?)?;
        let off = u64::from(m.bit_offset() / 8);
        if member_name == name {
            return Ok(Some((off, mty)));
        }
        if member_name.is_empty()
            && let Some((inner, t)) = find_member(btf, &mty, name)?
        {
            return Ok(Some((off + inner, t)));
        }
    }
    Ok(None)
}

fn strip_modifiers(btf: &Btf, mut ty: Type) -> Result<Type, KernelError> {
    loop {
        match &ty {
            Type::Typedef(_)
            | Type::Const(_)
            | Type::Volatile(_)
            | Type::Restrict(_)
            | Type::TypeTag(_) => {
                let inner: &dyn BtfType = ty.as_btf_type().expect("modifier types are BtfTypes");
                ty = btf.resolve_chained_type(inner).map_err(KernelError::Btf)?;
            }
            _ => return Ok(ty),
        }
    }
}

/// Reads every offset the programs need from the running kernel.
pub fn offsets() -> Result<Offsets, KernelError> {
    if !Path::new(BTF_PATH).exists() {
        return Err(KernelError::NoBtf);
    }
    let btf = Btf::from_file(BTF_PATH).map_err(KernelError::Btf)?;
    let m = |root: &str, path: &[&str]| member_offset(&btf, root, path);
    let release = "posix_lock_inode";
    // 6.9 moved the members every lock kind shares into `struct file_lock_core c`.
    let flock = |core: &[&str], old: &[&str]| {
        member_offset(&btf, "file_lock", &[&["c"], core].concat())
            .or_else(|_| member_offset(&btf, "file_lock", old))
    };
    Ok(Offsets {
        task_flags: m("task_struct", &["flags"])?,
        file_dentry: m("file", &["f_path", "dentry"])?,
        dentry_name: m("dentry", &["d_name", "name"])?,
        dentry_parent: m("dentry", &["d_parent"])?,
        inode_ino: m("inode", &["i_ino"])?,
        inode_sb: m("inode", &["i_sb"])?,
        sb_dev: m("super_block", &["s_dev"])?,
        pl_request: tracepoint_field("filelock", release, &["fl"])?,
        pl_ino: tracepoint_field("filelock", release, &["i_ino"])?,
        pl_dev: tracepoint_field("filelock", release, &["s_dev"])?,
        pl_owner: tracepoint_field("filelock", release, &["owner", "fl_owner"])?,
        pl_flags: tracepoint_field("filelock", release, &["flags", "fl_flags"])?,
        pl_type: tracepoint_field("filelock", release, &["type", "fl_type"])?,
        pl_ret: tracepoint_field("filelock", release, &["ret"])?,
        flock_file: flock(&["flc_file"], &["fl_file"])?,
        flock_owner: flock(&["flc_owner"], &["fl_owner"])?,
        flock_flags: flock(&["flc_flags"], &["fl_flags"])?,
        flock_type: flock(&["flc_type"], &["fl_type"])?,
        fork_child_pid: tracepoint_field("sched", "sched_process_fork", &["child_pid"])?,
        task_signal: m("task_struct", &["signal"])?,
        signal_live: m("signal_struct", &["live"])?,
        exec_old_pid: tracepoint_field("sched", "sched_process_exec", &["old_pid"])?,
    })
}

/// The kernel's internal `dev_t` (major << 20 | minor) as userspace's `st_dev`.
pub fn user_dev(kdev: u64) -> u64 {
    libc::makedev((kdev >> 20) as u32, (kdev & 0xfffff) as u32)
}

/// Userspace `st_dev` as the kernel's internal `dev_t`.
pub fn kernel_dev(st_dev: u64) -> u64 {
    (u64::from(libc::major(st_dev)) << 20) | u64::from(libc::minor(st_dev))
}

/// One line of `/proc/self/mountinfo`.
struct Mount {
    id: u64,
    /// The superblock's device (`s_dev`), kernel encoding.
    kdev: u64,
    /// The directory of that filesystem mounted here (`/` unless a bind mount or btrfs subvolume).
    root: PathBuf,
    point: PathBuf,
    fstype: String,
}

fn mounts() -> Vec<Mount> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            // id parent major:minor root mount-point options [optional fields] - fstype source ...
            let (head, tail) = line.split_once(" - ")?;
            let f: Vec<&str> = head.split(' ').collect();
            let (major, minor) = f.get(2)?.split_once(':')?;
            Some(Mount {
                id: f[0].parse().ok()?,
                kdev: (major.parse::<u64>().ok()? << 20) | minor.parse::<u64>().ok()?,
                root: unescape_mount(f.get(3)?).into(),
                point: unescape_mount(f.get(4)?).into(),
                fstype: tail.split(' ').next()?.to_owned(),
            })
        })
        .collect()
}

/// Where `rel` (a path from the root of the filesystem with kernel device `kdev`, as the programs
/// walk it) can be opened: one candidate per mount of that filesystem whose root contains it.
pub fn visible_paths(kdev: u64, rel: &Path) -> Vec<PathBuf> {
    mounts()
        .into_iter()
        .filter(|m| m.kdev == kdev)
        .filter_map(|m| {
            let inside = rel.strip_prefix(m.root.strip_prefix("/").ok()?).ok()?;
            Some(m.point.join(inside))
        })
        .collect()
}

/// The identity the programs see for the file at `path`: (`i_sb->s_dev`, `i_ino`). `st_dev` is not
/// it on btrfs subvolumes (an anonymous device per subvolume) or overlayfs; the mount's entry in
/// mountinfo always carries `s_dev`.
pub fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
    let stx = statx(path, 0, libc::STATX_INO | libc::STATX_MNT_ID)?;
    let st_dev = kernel_dev(libc::makedev(stx.stx_dev_major, stx.stx_dev_minor));
    // Kernels before 5.8 do not report the mount ID; st_dev is right everywhere but on the above.
    let kdev = if stx.stx_mask & libc::STATX_MNT_ID != 0 {
        mounts()
            .into_iter()
            .find(|m| m.id == stx.stx_mnt_id)
            .map_or(st_dev, |m| m.kdev)
    } else {
        st_dev
    };
    Ok((kdev, stx.stx_ino))
}

fn statx(path: &Path, flags: libc::c_int, mask: u32) -> std::io::Result<libc::statx> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: an all-zero statx is a valid out-parameter.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated and stx is writable.
    if unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), flags, mask, &mut stx) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stx)
}

/// `st_dev` as `stat -c %d` prints it, as the programs' device: the same number where a mounted
/// filesystem has it; on btrfs subvolumes and overlayfs, the device of a mount that shows that
/// `st_dev`. `None` when no mount does (e.g. a btrfs subvolume not mounted on its own).
pub fn kernel_dev_for(st_dev: u64) -> Option<u64> {
    let plain = kernel_dev(st_dev);
    let all = mounts();
    if all.iter().any(|m| m.kdev == plain) {
        return Some(plain);
    }
    // Only the filesystems whose st_dev differs are asked, without automounting or revalidating,
    // so a dead network mount cannot hang us.
    all.iter()
        .filter(|m| matches!(m.fstype.as_str(), "btrfs" | "overlay"))
        .find(|m| {
            statx(
                &m.point,
                libc::AT_NO_AUTOMOUNT | libc::AT_STATX_DONT_SYNC,
                libc::STATX_BASIC_STATS,
            )
            .is_ok_and(|stx| libc::makedev(stx.stx_dev_major, stx.stx_dev_minor) == st_dev)
        })
        .map(|m| m.kdev)
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mount(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        match rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            Some(b) => {
                out.push(b as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

pub fn release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn mount_points_are_unescaped_and_found() {
        assert_eq!(unescape_mount(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mount(r"/x\134y"), r"/x\y");
        let (kdev, ino) = file_id(Path::new("/")).unwrap();
        assert_eq!(ino, std::fs::metadata("/").unwrap().ino());
        assert_eq!(
            visible_paths(kdev, Path::new(""))
                .first()
                .map(PathBuf::as_path),
            Some(Path::new("/")),
            "the root filesystem is visible at /"
        );
    }

    #[test]
    fn dev_numbers_round_trip() {
        let st = libc::makedev(259, 3);
        assert_eq!(kernel_dev(st), (259 << 20) | 3);
        assert_eq!(user_dev(kernel_dev(st)), st);
    }

    #[test]
    fn offsets_come_from_this_kernel() {
        if !Path::new(BTF_PATH).exists() {
            eprintln!("skipped: no {BTF_PATH} on this kernel");
            return;
        }
        let btf = Btf::from_file(BTF_PATH).unwrap();
        // qstr is { union { struct { hash; len }; hash_len }; name } on every kernel since 3.x.
        assert_eq!(member_offset(&btf, "qstr", &["name"]).unwrap(), 8);
        // `hash` sits inside an anonymous struct inside an anonymous union.
        assert_eq!(member_offset(&btf, "qstr", &["hash"]).unwrap(), 0);
        assert!(member_offset(&btf, "file", &["no_such_member"]).is_err());
        assert!(member_offset(&btf, "file", &["f_path", "dentry"]).unwrap() > 0);
        if has_tracepoint("filelock", "posix_lock_inode") {
            // The lock request's members, through `struct file_lock_core` on 6.9 and later, in
            // the order both layouts declare them.
            let o = offsets().unwrap();
            assert!(0 < o.flock_owner, "{o:?}");
            assert!(
                o.flock_owner < o.flock_flags && o.flock_flags < o.flock_type,
                "{o:?}"
            );
            assert!(o.flock_type < o.flock_file, "{o:?}");
        }
    }
}
