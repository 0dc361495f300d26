//! Atomic file replacement for the registry, the replay state and the trust ledger:
//! write a temporary file in the same directory, `fsync` it, `rename(2)` it over the
//! target (atomic on POSIX file systems), then `fsync` the directory so the rename
//! itself survives a power loss. A reader sees the old file or the new one, never a
//! mix; a failed write leaves the old file untouched.

use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
};

/// A file operation that failed, with the path and what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct FileError {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl FileError {
    pub(crate) fn new(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        FileError {
            what,
            path: path.to_owned(),
            source,
        }
    }
}

/// Replaces `path` with `bytes` atomically (see the module docs). `mode` is the new
/// file's permission bits (e.g. `0o600` for secrets).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let err = |what| move |e| FileError::new(what, path, e);
    let mut tmp = tempfile::Builder::new()
        .prefix(".tad-tmp-")
        .tempfile_in(&dir)
        .map_err(err("create a temporary file beside"))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(err("set permissions of the temporary file for"))?;
    tmp.write_all(bytes).map_err(err("write"))?;
    tmp.as_file().sync_all().map_err(err("fsync"))?;
    tmp.persist(path)
        .map_err(|e| FileError::new("rename over", path, e.error))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FileError::new("fsync the directory of", path, e))?;
    Ok(())
}

/// Reads `path`; `Ok(None)` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FileError::new("read", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_file_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.json");
        write_atomic(&p, b"old contents", 0o644).unwrap();
        write_atomic(&p, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn failure_names_the_path_and_keeps_nothing() {
        let p = Path::new("/nonexistent-dir-tad/x.json");
        let e = write_atomic(p, b"x", 0o644).unwrap_err();
        assert!(e.to_string().contains("/nonexistent-dir-tad/x.json"), "{e}");
        assert_eq!(read_optional(p).unwrap(), None);
    }
}
