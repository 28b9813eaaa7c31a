//! Files on disk change only by a complete, atomic replace: a dot-named temp file in the target
//! directory (dnsmasq's conf-dir skips dot-files), write, fsync, rename over the target, fsync the
//! directory. A failure at any step leaves the old file as it was.

use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A file operation that failed, with the path it was about.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}")]
pub struct FileError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

impl FileError {
    fn new<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FileError + 'a {
        move |source| FileError {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// The current content of `path`, or `None` when it does not exist.
pub fn read_existing(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(FileError::new("cannot read", path)(error)),
    }
}

/// Replaces `path` with `contents` atomically and durably, with permission bits `mode`.
pub fn replace_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(FileError::new(
            "cannot create a temporary file beside",
            path,
        ))?;
    // tempfile creates 0600; dnsmasq drops privileges and must be able to read the file.
    temp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .map_err(FileError::new(
            "cannot set the mode of the temporary file for",
            path,
        ))?;
    temp.write_all(contents)
        .map_err(FileError::new("cannot write the temporary file for", path))?;
    temp.as_file()
        .sync_all()
        .map_err(FileError::new("cannot fsync the temporary file for", path))?;
    // On failure the temporary file is removed when `temp` drops; the target is untouched.
    temp.persist(path)
        .map_err(|e| FileError::new("cannot rename the temporary file over", path)(e.error))?;
    sync_dir(dir)
}

/// Replaces `path` atomically but without fsync: for state that must survive the process
/// dying, not the machine (after a reboot dnsmasq starts afresh and reads every file anyway).
pub fn replace_volatile(path: &Path, contents: &[u8]) -> Result<(), FileError> {
    let mut temp = tempfile::Builder::new()
        .prefix(".ipmanager.")
        .suffix(".tmp")
        .tempfile_in(parent_dir(path))
        .map_err(FileError::new(
            "cannot create a temporary file beside",
            path,
        ))?;
    temp.write_all(contents)
        .map_err(FileError::new("cannot write the temporary file for", path))?;
    temp.persist(path)
        .map_err(|e| FileError::new("cannot rename the temporary file over", path)(e.error))?;
    Ok(())
}

/// Removes `path` if it exists.
pub fn remove(path: &Path) -> Result<(), FileError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(FileError::new("cannot remove", path)(error)),
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Makes a rename or removal in `dir` survive a crash.
fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(FileError::new("cannot fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_mode_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        assert_eq!(read_existing(&path).unwrap(), None);
        replace_atomically(&path, b"one\n", 0o644).unwrap();
        replace_atomically(&path, b"two\n", 0o640).unwrap();
        assert_eq!(
            read_existing(&path).unwrap().as_deref(),
            Some(&b"two\n"[..])
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("hosts")]);
    }

    #[test]
    fn failed_replace_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        replace_atomically(&path, b"old\n", 0o644).unwrap();
        // A directory in the way of the rename makes the replace fail after the temp file exists.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("inside"), b"x").unwrap();
        let error = replace_atomically(&blocked, b"new\n", 0o644).unwrap_err();
        assert!(error.to_string().contains("cannot rename"), "{error}");
        assert_eq!(fs::read(&path).unwrap(), b"old\n");
        let leftovers = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
    }
}
