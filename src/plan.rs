//! The planner of the incremental layout: which shard files a new render changes, and what
//! dnsmasq serves once it has read them. Pure: no database, no I/O.
//!
//! # The model (dnsmasq 2.90, `--dhcp-hostsdir`)
//!
//! - A file written or renamed into the directory is re-read whole: each of its lines is loaded
//!   as a new entry, newer than every entry loaded before (later lines of a file are newer).
//!   Entries are never dropped, except by a full read (start, SIGHUP), which clears them all and
//!   reads every file.
//! - A deleted file changes nothing: its entries stay loaded.
//! - An entry with an IPv4 address is refused when any loaded entry already holds that address,
//!   dead ones included, and the same line loaded earlier too: a re-read file refuses its
//!   unchanged IPv4 lines (harmless), and a renamed host or a new lease time on the same address
//!   is refused (the old line stays in force). IPv6 entries are never refused.
//! - A client with MAC M in subnet S is offered the address of the newest loaded entry for
//!   (S, M). Every loaded IPv4 address is reserved: never given from the pool.
//! - Names (`--hostsdir`) always equal the files: a re-read file's names replace its old ones,
//!   a deleted file's names go. They need no model.
//!
//! A subnet is identified by its id: a loaded entry counts for the subnet of the host it was
//! rendered for.
//!
//! # Representation
//!
//! [`Loaded`] keeps the shard files and only what dnsmasq's memory holds beyond them: the set of
//! loaded IPv4 addresses (for refusals), the (subnet, MAC) keys whose newest entry is not the
//! files' line for that key, and two counters. Everything else is, by that invariant, exactly
//! the files, so [`plan`] touches only the keys of the shards that changed.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::render::Sharded;

/// dnsmasq's DHCP memory since its last full read of the hosts directory, plus the shard files
/// on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    files: Sharded,
    memory: Memory,
}

/// What dnsmasq's DHCP memory holds beyond the files; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Memory {
    /// Every loaded IPv4 address (each is loaded at most once: a second one is refused).
    v4: HashSet<u32>,
    /// The keys whose newest loaded entry is not the files' line for the key, or that have only
    /// one of the two.
    differs: HashMap<u128, Differs>,
    /// Entries loaded since the last full read.
    loaded: usize,
    /// Keys with at least one loaded entry.
    effective: usize,
}

/// A key whose newest loaded entry is not its line in the files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Differs {
    /// The newest loaded entry, if any.
    served: Option<Entry>,
    /// The host whose line in the files has the key, if any.
    wanted: Option<i64>,
}

/// A loaded entry that is not in the files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    host_id: i64,
    ip: IpAddr,
    line: Box<str>,
}

/// The shard files that differ from [`Loaded::files`], and the state once they are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// dhcp-hostsdir shards to write (`Some(content)`) or delete (`None`), by shard number.
    pub dhcp: Vec<(u32, Option<String>)>,
    /// hostsdir shards to write or delete.
    pub dns: Vec<(u32, Option<String>)>,
    /// What dnsmasq holds once every file of the plan is written and it has re-read them.
    pub after: Loaded,
}

impl Loaded {
    /// The state after dnsmasq read `files` from scratch: at its start, on SIGHUP, or after a
    /// compaction that wrote them.
    pub fn full_read(files: Sharded) -> Loaded {
        todo!("{files:?}")
    }

    /// The shard files on disk.
    pub fn files(&self) -> &Sharded {
        &self.files
    }

    /// The ids of the hosts whose served DHCP state differs from the files, sorted: a host whose
    /// line is not the newest entry for its (subnet, MAC) (it was refused, or an older line
    /// wins), and the host of a newest entry whose (subnet, MAC) the files hold no longer or
    /// with another line (a removed or moved reservation).
    pub fn pending(&self) -> Vec<i64> {
        todo!()
    }

    /// Whether dnsmasq's memory differs from a full read of the files: something is pending, or
    /// dead entries (older lines, removed hosts) still reserve addresses. A compaction clears it.
    pub fn debt(&self) -> bool {
        todo!()
    }

    /// The address dnsmasq offers the client with `mac` in subnet `subnet_id` now, if any.
    /// Looks the files up linearly: meant for tests and diagnostics.
    pub fn served(&self, subnet_id: i64, mac: [u8; 6]) -> Option<IpAddr> {
        todo!("{subnet_id} {mac:?}")
    }
}

/// The shard files to change to go from `before` to `desired`, and the state after dnsmasq
/// re-read every written DHCP file whole. Costs a comparison of the shard maps plus work in
/// proportion to the changed shards.
pub fn plan(before: &Loaded, desired: Sharded) -> Plan {
    todo!("{before:?} {desired:?}")
}
