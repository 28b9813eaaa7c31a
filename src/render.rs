//! Pure functions from a snapshot to dnsmasq file contents (being written).
use std::path::PathBuf;

use crate::model::Snapshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutKind {
    Hostsfile,
    Conf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub kind: LayoutKind,
    pub hosts_file: PathBuf,
    pub addn_hosts_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    Host(i64),
    Subnet(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub row: Row,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    pub include: String,
    pub hosts: Option<String>,
    pub addn_hosts: Option<String>,
    pub hosts_served: usize,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostChanges {
    pub added: usize,
    pub removed: usize,
    pub changed: usize,
}

pub fn render(_snapshot: &Snapshot, _layout: &Layout) -> Rendered {
    todo!()
}

pub fn summarize_host_changes(_old: &str, _new: &str) -> HostChanges {
    todo!()
}
