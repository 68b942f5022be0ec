//! Writing output files whole: reports, and the plots, pages and stamps the tools write beside them.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// How many symlinks a target may go through, as the kernel's own limit (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// Writes `bytes` to `path` as what `path` is:
/// - a regular file, or nothing yet: through a hidden sibling temp file and a rename, so a crash
///   or a concurrent reader (a cache check, a browser reloading report.html) never sees half a file;
/// - a symlink: the file it points to, replaced the same way in that file's directory (the link stays);
/// - a character device or a FIFO (`/dev/stdout`, `/dev/null`, a pipe): written straight through,
///   its write errors (e.g. `ENOSPC` from `/dev/full`) returned;
/// - a directory or anything else: refused, nothing written.
///
/// The error is the bare I/O error; callers name the path in their own error type.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let target = resolve_symlinks(path)?;
    let file_type = match fs::metadata(&target) {
        Ok(meta) => Some(meta.file_type()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    match file_type {
        None => replace(&target, bytes),
        Some(t) if t.is_file() => replace(&target, bytes),
        Some(t) if t.is_char_device() || t.is_fifo() => write_through(&target, bytes),
        Some(t) if t.is_dir() => Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "is a directory; give a file name",
        )),
        Some(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file, character device or FIFO",
        )),
    }
}

/// `path` with every symlink in its last component followed, so the file replaced is the one the
/// link names, not the link. A dangling link resolves to the file it would create.
fn resolve_symlinks(path: &Path) -> io::Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_SYMLINKS {
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link = fs::read_link(&current)?;
                current = match current.parent() {
                    Some(dir) => dir.join(link),
                    None => link,
                };
            }
            Ok(_) => return Ok(current),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(current),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        "too many levels of symbolic links",
    ))
}

fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Devices and pipes cannot be replaced and need no fsync (a pipe refuses it).
fn write_through(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut out = OpenOptions::new().write(true).open(path)?;
    out.write_all(bytes)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn names(dir: &Path) -> Vec<OsString> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temp_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(names(dir.path()), vec![OsString::from("report.json")]);
    }

    #[test]
    fn a_directory_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.svg");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), b"x").unwrap();
        let err = write_atomic(&path, b"svg").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::IsADirectory, "{err}");
        assert!(err.to_string().contains("is a directory"), "{err}");
        assert_eq!(names(dir.path()), vec![OsString::from("out.svg")]);
        assert_eq!(names(&path), vec![OsString::from("keep")]);
        assert!(write_atomic(Path::new("/"), b"x").is_err());
    }

    #[test]
    fn a_symlink_stays_a_symlink_and_its_target_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let real_dir = dir.path().join("real");
        fs::create_dir(&real_dir).unwrap();
        let target = real_dir.join("report.json");
        fs::write(&target, b"old").unwrap();
        let link = dir.path().join("link.json");
        symlink("real/report.json", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(&target).unwrap(), b"new");
        // The temp file lived beside the target, and is gone.
        assert_eq!(names(&real_dir), vec![OsString::from("report.json")]);

        // A dangling link creates the file it names.
        let dangling = dir.path().join("dangling.json");
        symlink("real/new.json", &dangling).unwrap();
        write_atomic(&dangling, b"created").unwrap();
        assert!(
            fs::symlink_metadata(&dangling)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(real_dir.join("new.json")).unwrap(), b"created");
    }

    #[test]
    fn a_symlink_loop_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        symlink("b", &a).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        let err = write_atomic(&a, b"x").unwrap_err();
        assert!(err.to_string().contains("symbolic links"), "{err}");
    }

    #[test]
    fn a_fifo_is_written_through_to_its_reader() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                File::open(fifo).unwrap().read_to_end(&mut got).unwrap();
                got
            })
        };
        let written = write_atomic(&fifo, b"through the pipe");
        if written.is_err() {
            // Let the reader see end of file instead of waiting forever.
            drop(OpenOptions::new().write(true).open(&fifo));
        }
        written.unwrap();
        // Checked before joining: a FIFO replaced by a file would leave the reader waiting.
        assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        assert_eq!(names(dir.path()), vec![OsString::from("pipe")]);
    }

    #[test]
    fn dev_full_reports_no_space_and_stays_a_device() {
        let full = Path::new("/dev/full");
        assert!(fs::metadata(full).unwrap().file_type().is_char_device());
        let err = write_atomic(full, b"anything").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
        assert!(fs::metadata(full).unwrap().file_type().is_char_device());
        // Writing to /dev/null succeeds and leaves it a device too.
        write_atomic(Path::new("/dev/null"), b"discarded").unwrap();
        assert!(
            fs::metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device()
        );
    }
}
