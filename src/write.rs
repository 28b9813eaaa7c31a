//! Files on disk change only by a complete, atomic replace: a dot-named temp file in the target
//! directory (dnsmasq's conf-dir skips dot-files), write, fsync, rename over the target, fsync the
//! directory. A failure at any step leaves the old file as it was. A file that must go is
//! removed after the replacements, and the removal is made durable the same way.

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
    pub(crate) fn new<'a>(
        action: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(io::Error) -> FileError + 'a {
        move |source| FileError {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// Whether `path` holds anything but exactly `contents` (a missing file differs). Reads in
/// chunks, so that comparing a 4 MB file costs no 4 MB buffer.
pub fn differs(path: &Path, contents: &[u8]) -> Result<bool, FileError> {
    use std::io::Read;
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(error) => return Err(FileError::new("cannot read", path)(error)),
    };
    let mut chunk = vec![0u8; 64 * 1024];
    let mut rest = contents;
    loop {
        let n = file
            .read(&mut chunk)
            .map_err(FileError::new("cannot read", path))?;
        if n == 0 {
            return Ok(!rest.is_empty());
        }
        if n > rest.len() || chunk[..n] != rest[..n] {
            return Ok(true);
        }
        rest = &rest[n..];
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

/// A replace of several files that stopped part-way: the first `renamed` files were replaced
/// (replacements first, then removals, in the order staged), the others are untouched.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct PartialReplace {
    pub renamed: usize,
    #[source]
    pub error: FileError,
}

/// New contents written to dot-named temporary files beside their targets, not yet in place:
/// what a check may look at before anything on disk changes. Dropping it removes the
/// temporary files and leaves the targets untouched.
///
/// The temporary files are closed once written: a compaction of the incremental layout stages
/// every shard file at once, tens of thousands of them, far more than a process may hold open.
/// Closing them before the rename also matters to dnsmasq, whose inotify reads a file at
/// IN_MOVED_TO and again at IN_CLOSE_WRITE: a file closed after its rename is read twice.
pub struct Staged {
    files: Vec<(PathBuf, tempfile::TempPath)>,
    /// Removed after the replacements.
    removals: Vec<PathBuf>,
}

/// Writes each `(path, contents)` to a temporary file beside `path`, with permission bits `mode`.
pub fn stage_files(files: &[(&Path, &[u8])], mode: u32) -> Result<Staged, FileError> {
    remove_leftovers(files.iter().map(|(path, _)| *path));
    let files = files
        .iter()
        .map(|(path, contents)| {
            let temp = stage(path, contents, mode)?.into_temp_path();
            Ok((path.to_path_buf(), temp))
        })
        .collect::<Result<_, FileError>>()?;
    Ok(Staged {
        files,
        removals: Vec::new(),
    })
}

impl Staged {
    /// Where the staged content for `target` is, if it is staged.
    pub fn temp_path(&self, target: &Path) -> Option<&Path> {
        self.files
            .iter()
            .find(|(path, _)| path == target)
            .map(|(_, temp)| &**temp)
    }

    /// Also removes `paths` at commit, after the replacements (a missing one is no error).
    pub fn removing(mut self, paths: Vec<PathBuf>) -> Staged {
        self.removals.extend(paths);
        self
    }

    /// Puts every staged file in place, each atomically and durably, then removes the files
    /// to remove.
    ///
    /// Every temporary file is fsynced before the first rename, and the fsyncs run in parallel,
    /// as do the directory fsyncs after the renames: a flush costs milliseconds, and paying it
    /// once per round rather than once per file halves the time to a consistent set of files.
    pub fn commit(self) -> Result<(), PartialReplace> {
        let untouched = |error| PartialReplace { renamed: 0, error };
        // fsync through a new descriptor: it flushes the file, whoever wrote it.
        in_parallel(self.files.iter(), |(path, temp)| {
            File::open(temp)
                .and_then(|file| file.sync_all())
                .map_err(FileError::new("cannot fsync the temporary file for", path))
        })
        .map_err(untouched)?;
        let count = self.files.len() + self.removals.len();
        let mut dirs: Vec<PathBuf> = Vec::with_capacity(count);
        // On failure the remaining temporary files are removed when they drop.
        for (renamed, (path, temp)) in self.files.into_iter().enumerate() {
            temp.persist(&path).map_err(|e| PartialReplace {
                renamed,
                error: FileError::new("cannot rename the temporary file over", &path)(e.error),
            })?;
            dirs.push(parent_dir(&path).to_path_buf());
        }
        let replaced = dirs.len();
        for (removed, path) in self.removals.iter().enumerate() {
            remove(path).map_err(|error| PartialReplace {
                renamed: replaced + removed,
                error,
            })?;
            dirs.push(parent_dir(path).to_path_buf());
        }
        dirs.sort();
        dirs.dedup();
        in_parallel(dirs.iter(), |dir| sync_dir(dir)).map_err(|error| PartialReplace {
            renamed: count,
            error,
        })
    }
}

/// Random characters in a temporary file's name: `.NAME.XXXXXX.tmp`.
const TEMP_RANDOM_LEN: usize = 6;
const TEMP_SUFFIX: &str = ".tmp";

/// A dot-named temporary file beside `path` holding `contents` with mode `mode`, not yet synced.
fn stage(path: &Path, contents: &[u8], mode: u32) -> Result<tempfile::NamedTempFile, FileError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut temp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(TEMP_SUFFIX)
        .rand_bytes(TEMP_RANDOM_LEN)
        .tempfile_in(parent_dir(path))
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
    Ok(temp)
}

/// Removes the temporary files (`.NAME.` + random + `.tmp`) of the `targets` that a process
/// killed between staging and rename left beside them; without this every `kill -9` at the
/// wrong moment leaves a full copy of a file behind for good. The agent is the only writer of
/// its files and stages one set at a time, so none of them is in use. Each directory is read
/// once, however many targets it holds (a compaction stages a thousand shards). Best effort: a
/// leftover that cannot be removed only costs disk space, and a real problem with the
/// directory shows in the stage.
fn remove_leftovers<'a>(targets: impl Iterator<Item = &'a Path>) {
    let mut by_dir: std::collections::BTreeMap<&Path, std::collections::HashSet<String>> =
        std::collections::BTreeMap::new();
    for path in targets {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        by_dir.entry(parent_dir(path)).or_default().extend(name);
    }
    for (dir, names) in by_dir {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let is_leftover = entry
                .file_name()
                .to_str()
                .and_then(leftover_target)
                .is_some_and(|target| names.contains(target));
            if is_leftover {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// The target name of a temporary file name `.NAME.XXXXXX.tmp`, if it is one.
fn leftover_target(file_name: &str) -> Option<&str> {
    let rest = file_name.strip_prefix('.')?.strip_suffix(TEMP_SUFFIX)?;
    let (target, random) = rest.split_at(rest.len().checked_sub(TEMP_RANDOM_LEN + 1)?);
    let random = random.strip_prefix('.')?;
    random
        .chars()
        .all(|c| c.is_ascii_alphanumeric())
        .then_some(target)
}

/// Most threads [`in_parallel`] uses: enough to overlap the flushes of a compaction's thousand
/// files, few enough not to swamp a small machine.
const MAX_THREADS: usize = 16;

/// Runs `f` on every item, spread over up to [`MAX_THREADS`] threads when there is more than
/// one; stops at the first error of each thread.
fn in_parallel<T: Send>(
    items: impl Iterator<Item = T>,
    f: impl Fn(T) -> Result<(), FileError> + Sync,
) -> Result<(), FileError> {
    let mut items: Vec<T> = items.collect();
    if items.len() <= 1 {
        return items.pop().map_or(Ok(()), &f);
    }
    let per_thread = items.len().div_ceil(MAX_THREADS);
    let mut chunks: Vec<Vec<T>> = Vec::new();
    while !items.is_empty() {
        let rest = items.split_off(items.len().saturating_sub(per_thread));
        chunks.push(rest);
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || chunk.into_iter().try_for_each(f)))
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("fsync threads do not panic"))
    })
}

/// Replaces `path` atomically but without fsync: for state that must survive the process
/// dying, not the machine (after a reboot dnsmasq starts afresh and reads every file anyway).
pub fn replace_volatile(path: &Path, contents: &[u8]) -> Result<(), FileError> {
    stage(path, contents, 0o644)?
        .persist(path)
        .map_err(|e| FileError::new("cannot rename the temporary file over", path)(e.error))?;
    Ok(())
}

/// Writes `path` durably (atomic replace, file and directory fsynced): for a record that must
/// be on disk before the change it announces.
pub fn replace_durable(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    stage_files(&[(path, contents)], mode)?
        .commit()
        .map_err(|partial| partial.error)
}

/// Removes `path` and makes the removal durable; a missing file is no error.
pub fn remove_durable(path: &Path) -> Result<(), FileError> {
    remove(path)?;
    sync_dir(parent_dir(path))
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

    fn replace_files(files: &[(&Path, &[u8])], mode: u32) -> Result<(), PartialReplace> {
        stage_files(files, mode).unwrap().commit()
    }

    #[test]
    fn staged_files_change_nothing_until_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("include.conf");
        replace_files(&[(&path, b"old\n")], 0o644).unwrap();
        let staged = stage_files(&[(&path, b"new\n")], 0o644).unwrap();
        let temp = staged.temp_path(&path).unwrap().to_owned();
        assert!(temp.file_name().unwrap().to_string_lossy().starts_with('.'));
        assert_eq!(fs::read(&temp).unwrap(), b"new\n");
        assert_eq!(fs::read(&path).unwrap(), b"old\n");
        drop(staged);
        assert!(!temp.exists(), "a dropped stage leaves no temporary file");
        assert_eq!(fs::read(&path).unwrap(), b"old\n");
    }

    #[test]
    fn replaces_content_and_mode_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        assert_eq!(read_existing(&path).unwrap(), None);
        assert!(differs(&path, b"").unwrap(), "a missing file differs");
        let other = dir.path().join("other");
        replace_files(&[(&path, b"one\n")], 0o644).unwrap();
        replace_files(&[(&path, b"two\n"), (&other, b"three\n")], 0o640).unwrap();
        assert_eq!(
            read_existing(&path).unwrap().as_deref(),
            Some(&b"two\n"[..])
        );
        assert_eq!(fs::read(&other).unwrap(), b"three\n");
        assert!(!differs(&other, b"three\n").unwrap());
        for different in [&b"three"[..], b"three\n\n", b"thre\n", b""] {
            assert!(differs(&other, different).unwrap(), "{different:?}");
        }
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        replace_files(&[(&other, &big)], 0o644).unwrap();
        assert!(!differs(&other, &big).unwrap());
        let mut changed = big.clone();
        changed[150_000] ^= 1;
        assert!(differs(&other, &changed).unwrap());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["hosts", "other"].map(std::ffi::OsString::from));
    }

    #[test]
    fn staging_removes_the_temporary_files_a_killed_writer_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dhcp-hosts");
        // What a SIGKILL between staging and rename leaves, and dot-files that are not ours.
        let leftover = dir.path().join(".dhcp-hosts.a1B2c3.tmp");
        let keep = [
            ".dhcp-hosts.activation-pending",
            ".dhcp-hosts.toolong1.tmp",
            ".dhcp-hosts.a1B2c3",
            ".hosts.a1B2c3.tmp",
            "..dhcp-hosts.activation-pending.a1B2c3.tmp",
        ];
        fs::write(&leftover, b"stale\n").unwrap();
        for name in keep {
            fs::write(dir.path().join(name), b"other\n").unwrap();
        }
        replace_files(&[(&path, b"new\n")], 0o644).unwrap();
        assert!(!leftover.exists(), "the leftover temporary file is gone");
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut expected: Vec<&str> = keep.into_iter().chain(["dhcp-hosts"]).collect();
        expected.sort();
        assert_eq!(names, expected);
    }

    #[test]
    fn removals_follow_the_replacements_and_a_missing_file_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let keep = dir.path().join("00a3");
        let gone = dir.path().join("00a4");
        let never = dir.path().join("00a5");
        fs::write(&gone, b"old\n").unwrap();
        stage_files(&[(&keep, b"new\n")], 0o644)
            .unwrap()
            .removing(vec![gone.clone(), never])
            .commit()
            .unwrap();
        assert_eq!(fs::read(&keep).unwrap(), b"new\n");
        assert!(!gone.exists());
        let marker = dir.path().join(".owed");
        replace_durable(&marker, b"", 0o644).unwrap();
        assert!(marker.exists());
        remove_durable(&marker).unwrap();
        remove_durable(&marker).unwrap();
        assert!(!marker.exists());
    }

    #[test]
    fn a_failed_replace_keeps_the_files_it_did_not_reach() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        let later = dir.path().join("later");
        replace_files(&[(&path, b"old\n"), (&later, b"old\n")], 0o644).unwrap();
        // A directory in the way of the second rename makes the replace stop after the first.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("inside"), b"x").unwrap();
        let files: [(&Path, &[u8]); 3] =
            [(&path, b"new\n"), (&blocked, b"new\n"), (&later, b"new\n")];
        let partial = replace_files(&files, 0o644).unwrap_err();
        assert_eq!(partial.renamed, 1);
        assert!(partial.to_string().contains("cannot rename"), "{partial}");
        assert_eq!(fs::read(&path).unwrap(), b"new\n");
        assert_eq!(fs::read(&later).unwrap(), b"old\n");
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
