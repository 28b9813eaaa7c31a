//! The incremental layout's two shard directories (`dhcp-hostsdir`, `hostsdir`) as the agent
//! keeps them: which files a compaction or a plan writes or removes there, and the marker that
//! records a compaction owed across agent restarts.
//!
//! dnsmasq reads every file in these directories except dot-files (and `*~`, `#*#`), so the
//! agent's temporary files and its marker are dot-files, and a file of someone else's is
//! warned about (once) but never removed: it may be there on purpose. Shard-named files (four
//! lowercase hex digits) are the agent's own; one that should not exist goes at a compaction.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::warn;

use super::error_chain;
use super::worker::Target;
use crate::activate::Activation;
use crate::plan::Plan;
use crate::render::check::FileKind;
use crate::render::{shard_file_name, Layout, LayoutKind, Sharded};
use crate::write::{self, FileError};

/// The marker's name in `hosts_dir`: a dot-file, so dnsmasq skips it.
const DEBT_MARKER: &str = ".ipmanager-compaction-owed";

pub(super) struct ShardDirs {
    hosts_dir: PathBuf,
    names_dir: PathBuf,
    /// Present from before a write that leaves dnsmasq owing a compaction until one is done.
    debt_marker: PathBuf,
    /// Foreign files already warned about, so that each is warned about once.
    warned: Mutex<BTreeSet<PathBuf>>,
}

impl ShardDirs {
    /// The directories of `layout`; `None` unless it is the incremental layout.
    pub(super) fn new(layout: &Layout) -> Option<ShardDirs> {
        (layout.kind == LayoutKind::Incremental).then(|| ShardDirs {
            hosts_dir: layout.hosts_dir.clone(),
            names_dir: layout.names_dir.clone(),
            debt_marker: layout.hosts_dir.join(DEBT_MARKER),
            warned: Mutex::new(BTreeSet::new()),
        })
    }

    /// Whether the marker says a compaction is owed.
    pub(super) fn owes(&self) -> bool {
        self.debt_marker.exists()
    }

    /// Records, durably, that a compaction is owed: done before the write that owes it, so
    /// that an agent killed right after still compacts at its next start.
    pub(super) fn record_debt(&self) -> Result<(), FileError> {
        if self.owes() {
            return Ok(());
        }
        create_dir(&self.hosts_dir)?;
        write::replace_durable(&self.debt_marker, b"", 0o644)
    }

    /// dnsmasq has read every file whole: nothing is owed. A marker that cannot be removed
    /// only costs one needless compaction at the next start.
    pub(super) fn clear_debt(&self) {
        if let Err(error) = write::remove(&self.debt_marker) {
            warn!(error = %error_chain(&error), "cannot remove the compaction marker");
        }
    }

    /// Every file to write or remove so that both directories hold exactly `sharded`: the
    /// shard files that differ from it, and the shard-named files it has no lines for. Each
    /// needs a reload (dnsmasq re-reads everything). Creates missing directories.
    pub(super) fn exact<'a>(&self, sharded: &'a Sharded) -> Result<Vec<Target<'a>>, FileError> {
        let mut targets = Vec::new();
        for (dir, files, kind) in [
            (&self.hosts_dir, &sharded.dhcp, FileKind::HostsFile),
            (&self.names_dir, &sharded.dns, FileKind::AddnHosts),
        ] {
            for (shard, content) in files {
                let path = dir.join(shard_file_name(*shard));
                if write::differs(&path, content.as_bytes())? {
                    targets.push(shard_target(
                        path,
                        Some(content),
                        kind,
                        Some(Activation::Reload),
                    ));
                }
            }
            for name in self.shard_names(dir)? {
                let wanted = u32::from_str_radix(&name, 16).is_ok_and(|s| files.contains_key(&s));
                if !wanted {
                    let path = dir.join(name);
                    targets.push(shard_target(path, None, kind, Some(Activation::Reload)));
                }
            }
        }
        Ok(targets)
    }

    /// The files of `plan`, which dnsmasq picks up by itself: no activation.
    pub(super) fn planned<'a>(&self, plan: &'a Plan) -> Vec<Target<'a>> {
        let mut targets = Vec::with_capacity(plan.dhcp.len() + plan.dns.len());
        for (dir, files, kind) in [
            (&self.hosts_dir, &plan.dhcp, FileKind::HostsFile),
            (&self.names_dir, &plan.dns, FileKind::AddnHosts),
        ] {
            for (shard, content) in files {
                let path = dir.join(shard_file_name(*shard));
                targets.push(shard_target(path, content.as_deref(), kind, None));
            }
        }
        targets
    }

    /// The names of the shard files in `dir` (created when missing); warns once about each
    /// other file dnsmasq would read there.
    fn shard_names(&self, dir: &Path) -> Result<Vec<String>, FileError> {
        create_dir(dir)?;
        let entries = fs::read_dir(dir).map_err(|e| dir_error(dir, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let name = entry.map_err(|e| dir_error(dir, e))?.file_name();
            match classify(&name) {
                Name::Shard(name) => names.push(name),
                Name::Ignored => {}
                Name::Foreign => self.warn_foreign(dir.join(&name)),
            }
        }
        Ok(names)
    }

    fn warn_foreign(&self, path: PathBuf) {
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if !warned.contains(&path) {
            warn!(
                path = %path.display(),
                "a file that is not ipmanager's is in a shard directory: dnsmasq reads it as \
                 hosts; ipmanager leaves it alone"
            );
            warned.insert(path);
        }
    }
}

fn shard_target<'a>(
    path: PathBuf,
    content: Option<&'a str>,
    kind: FileKind,
    activation: Option<Activation>,
) -> Target<'a> {
    Target {
        path: Cow::Owned(path),
        content,
        kind,
        activation,
    }
}

/// What a directory entry is to the agent.
#[derive(Debug, PartialEq, Eq)]
enum Name {
    /// A shard file: four lowercase hex digits.
    Shard(String),
    /// A file dnsmasq skips: dot-files (the agent's temporary files and marker), `*~`, `#*#`.
    Ignored,
    /// Anything else: dnsmasq reads it.
    Foreign,
}

fn classify(name: &OsString) -> Name {
    let Some(name) = name.to_str() else {
        return Name::Foreign;
    };
    let is_shard = name.len() == 4
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if is_shard {
        Name::Shard(name.to_owned())
    } else if name.starts_with('.')
        || name.ends_with('~')
        || (name.len() > 1 && name.starts_with('#') && name.ends_with('#'))
    {
        Name::Ignored
    } else {
        Name::Foreign
    }
}

fn create_dir(dir: &Path) -> Result<(), FileError> {
    match fs::create_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(dir_error(dir, error)),
    }
}

fn dir_error(dir: &Path, error: io::Error) -> FileError {
    FileError::new("cannot read the directory", dir)(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_are_ours_dot_files_are_skipped_and_the_rest_is_foreign() {
        let name = |n: &str| classify(&OsString::from(n));
        assert_eq!(name("00a3"), Name::Shard("00a3".to_owned()));
        assert_eq!(name("ffff"), Name::Shard("ffff".to_owned()));
        for ignored in [".00a3.abc123.tmp", DEBT_MARKER, "00a3~", "#00a3#"] {
            assert_eq!(name(ignored), Name::Ignored, "{ignored}");
        }
        for foreign in ["00A3", "0a3", "00a30", "hosts", "#"] {
            assert_eq!(name(foreign), Name::Foreign, "{foreign}");
        }
    }
}
