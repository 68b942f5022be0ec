//! One tar entry's header turned into checked, mapped metadata: path components, mode, owner, mtime,
//! xattrs, device numbers. Numeric fields are read the way real tar writers fill them (an empty field
//! is 0), and PAX records the archive relies on must parse.

use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;

use crate::error::StoreError;
use crate::record::{IdMap, map_id};

/// A tar or decompression error: the layer is not a readable archive.
pub(super) fn corrupt(e: io::Error) -> StoreError {
    StoreError::Archive(e.to_string())
}

/// One entry's header fields, already mapped. `display` is the entry's path for messages.
pub(super) struct Meta {
    pub display: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub xattrs: Vec<(CString, Vec<u8>)>,
}

impl Meta {
    pub fn unsafe_entry(&self, reason: impl Into<String>) -> StoreError {
        StoreError::UnsafeEntry {
            path: self.display.clone(),
            reason: reason.into(),
        }
    }
}

/// Splits an archive path into components; refuses absolute paths and `..`.
pub(super) fn components(raw: &[u8], what: &str) -> Result<Vec<OsString>, String> {
    if raw.starts_with(b"/") {
        return Err(format!("{what} is an absolute path"));
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(format!("{what} contains '..'")),
            _ => out.push(OsStr::from_bytes(c).to_os_string()),
        }
    }
    Ok(out)
}

/// Reads and maps the header of `e`, whose path is `display`.
pub(super) fn read_meta<R: Read>(
    e: &mut tar::Entry<R>,
    display: String,
    uid_map: &[IdMap],
    gid_map: &[IdMap],
) -> Result<Meta, StoreError> {
    let h = e.header();
    let mode = h.mode().map_err(corrupt)? & 0o7777;
    // The tar crate has already applied valid PAX uid/gid records; invalid ones are refused below.
    let (uid, gid) = (h.uid().map_err(corrupt)?, h.gid().map_err(corrupt)?);
    let mtime = h.mtime().unwrap_or(0);
    let uid = map_id(uid_map, uid).ok_or_else(|| unmappable(&display, "UID", uid))?;
    let gid = map_id(gid_map, gid).ok_or_else(|| unmappable(&display, "GID", gid))?;
    let mut xattrs = Vec::new();
    if let Some(exts) = e.pax_extensions().map_err(corrupt)? {
        for ext in exts {
            let ext = ext.map_err(corrupt)?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                let name = CString::new(name).map_err(|_| StoreError::UnsafeEntry {
                    path: display.clone(),
                    reason: "NUL in xattr name".into(),
                })?;
                xattrs.push((name, ext.value_bytes().to_vec()));
            } else {
                check_pax_number(&display, key, ext.value_bytes())?;
            }
        }
    }
    Ok(Meta {
        display,
        mode,
        uid,
        gid,
        mtime,
        xattrs,
    })
}

fn unmappable(display: &str, what: &str, id: u64) -> StoreError {
    StoreError::Invalid(format!(
        "{display}: {what} {id} does not fit the store's {what} mapping \
         (IDs outside it, and {}, the \"no owner\" ID, are refused)",
        u32::MAX
    ))
}

/// PAX records whose value the tar reader uses as a number: a value it cannot parse would silently
/// fall back to the ustar header (another size, another owner), so the archive is refused instead.
fn check_pax_number(display: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
    let valid = match key {
        "size" | "uid" | "gid" => {
            std::str::from_utf8(value).is_ok_and(|v| v.parse::<u64>().is_ok())
        }
        "mtime" | "atime" | "ctime" => std::str::from_utf8(value).is_ok_and(is_pax_time),
        _ => return Ok(()),
    };
    if valid {
        return Ok(());
    }
    Err(StoreError::Archive(format!(
        "{display}: PAX {key}={} is not a valid number",
        String::from_utf8_lossy(value)
    )))
}

/// `[-]SECONDS[.FRACTION]`, as POSIX pax writes times.
fn is_pax_time(v: &str) -> bool {
    let v = v.strip_prefix('-').unwrap_or(v);
    let (secs, frac) = v.split_once('.').unwrap_or((v, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(secs) && digits(frac) && secs.len() <= 19
}

/// The device numbers of a character or block device entry.
pub(super) fn device(h: &tar::Header, display: &str) -> Result<(u32, u32), StoreError> {
    let (major, minor) = if let Some(u) = h.as_ustar() {
        (&u.dev_major, &u.dev_minor)
    } else if let Some(g) = h.as_gnu() {
        (&g.dev_major, &g.dev_minor)
    } else {
        // Old (v7) headers have no device fields.
        return Ok((0, 0));
    };
    let field = |raw: &[u8; 8], what: &str| {
        numeric_field(raw)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                StoreError::Archive(format!(
                    "{display}: device {what} field {:?} is not a number",
                    String::from_utf8_lossy(raw)
                ))
            })
    };
    Ok((field(major, "major")?, field(minor, "minor")?))
}

/// A tar numeric field: octal digits padded with spaces or NULs, GNU base-256 (high bit set), or empty
/// (all NULs or spaces), which Python's `tarfile` and others write for "not applicable" and read as 0.
fn numeric_field(raw: &[u8]) -> Option<u64> {
    if raw.first().is_some_and(|b| b & 0x80 != 0) {
        if raw[0] & 0x40 != 0 {
            return None; // negative
        }
        let mut n: u64 = u64::from(raw[0] & 0x3f);
        for &b in &raw[1..] {
            n = n.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(n);
    }
    let text = raw.split(|&b| b == 0).next().unwrap_or_default();
    let text = std::str::from_utf8(text).ok()?.trim_matches(' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields_read_like_tar_writers_write_them() {
        assert_eq!(numeric_field(b"0000003\0"), Some(3));
        assert_eq!(numeric_field(b"     17 "), Some(15));
        assert_eq!(
            numeric_field(&[0; 8]),
            Some(0),
            "Python tarfile's empty field"
        );
        assert_eq!(numeric_field(b"        "), Some(0));
        assert_eq!(numeric_field(&[0x80, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(numeric_field(b"12x4\0\0\0\0"), None);
        assert_eq!(numeric_field(&[0xff; 8]), None, "negative base-256");
    }

    #[test]
    fn pax_numbers_must_parse() {
        assert!(check_pax_number("f", "size", b"12").is_ok());
        assert!(check_pax_number("f", "size", b"99999999999999999999").is_err());
        assert!(check_pax_number("f", "size", b"-1").is_err());
        assert!(check_pax_number("f", "uid", b"").is_err());
        assert!(check_pax_number("f", "mtime", b"1600000000.5").is_ok());
        assert!(check_pax_number("f", "mtime", b"-12").is_ok());
        assert!(check_pax_number("f", "mtime", b"soon").is_err());
        assert!(check_pax_number("f", "comment", b"anything").is_ok());
    }
}
