//! A commit of more files than the process may hold open at once, as a compaction of the
//! incremental layout stages every shard file (tens of thousands at large sites).

use std::fs;

use ipmanager::write::stage_files;
use nix::sys::resource::{getrlimit, setrlimit, Resource};

#[test]
fn staging_and_committing_holds_no_file_open_per_staged_file() {
    // This test binary holds this one test, so the lower limit reaches nothing else.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, 64, hard).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(std::path::PathBuf, String)> = (0..500)
        .map(|n| (dir.path().join(format!("{n:04x}")), format!("line {n}\n")))
        .collect();
    let staged: Vec<(&std::path::Path, &[u8])> = files
        .iter()
        .map(|(path, content)| (path.as_path(), content.as_bytes()))
        .collect();
    stage_files(&staged, 0o644).unwrap().commit().unwrap();
    for (path, content) in &files {
        assert_eq!(&fs::read_to_string(path).unwrap(), content);
    }
    // Nothing but the targets is left: no temporary file.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), files.len());
}
