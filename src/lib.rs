//! ipmanager keeps dnsmasq's DHCP reservations and DNS names equal to a PostgreSQL database.
//!
//! The flow is one-way: database → snapshot → rendered files → atomic write → dnsmasq activation.
//!
//! - [`config`]: the TOML/environment configuration.
//! - [`db`]: connection pool, schema migrations, the consistent snapshot and the agent's status
//!   reports ([`db::status`]).
//! - [`listen`]: the dedicated LISTEN connection that turns database triggers into wake-ups.
//! - [`model`]: the plain values a snapshot holds.
//! - [`lease`]: the one lease time parser (seconds, durations, `infinite`), shared like [`mac`].
//! - [`mac`]: the one MAC address grammar, shared by the CLI, every import format and the SQL.
//! - [`render`]: pure functions from a snapshot to file contents, with their own validation.
//! - [`plan`](mod@plan): the incremental layout's planner: which shard files change, and what
//!   dnsmasq serves after re-reading them.
//! - [`write`](mod@write): compare-then-atomic-replace of files on disk.
//! - [`activate`]: making dnsmasq pick up new files (SIGHUP, reload or restart command).
//! - [`agent`]: the long-running loop that ties them together.
//! - [`notify`]: READY, STATUS, WATCHDOG and STOPPING for systemd (`Type=notify`).
//! - [`memory`]: allocator settings that keep an idle agent small.
//! - [`admin`]: subnets, reservations, sync status, audit log and import, as the CLI uses them.
//! - [`exchange`]: import and export formats (dnsmasq, ethers, dhcp-hostsfile, ISC Kea).
//! - [`cli`]: the `ipmanager` command line; only `main.rs` uses it.

pub mod activate;
pub mod admin;
pub mod agent;
pub mod cli;
pub mod config;
pub mod connection;
pub mod db;
pub mod exchange;
pub mod lease;
pub mod listen;
pub mod mac;
pub mod memory;
pub mod model;
pub mod notify;
pub mod plan;
pub mod render;
pub mod write;
