//! Importing parsed reservations ([`crate::exchange`]) in one transaction: every line is tried
//! (each under a savepoint, so that one rejection does not hide the next), and the transaction
//! commits only when no line was rejected and this is not a dry run.

use std::net::IpAddr;

use eui48::MacAddress;
use serde::Serialize;
use tokio_postgres::Client;

use super::hosts::{self, NewHost, Placement};
use super::validate::{format_mac, quote};
use super::{AdminError, Result};
use crate::exchange::{Note, Parsed, Reservation, SubnetHint};

/// What happened to one input line (or Kea object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub line: usize,
    pub what: String,
    /// Why it was skipped or rejected; notes on what was not kept for added ones.
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub added: Vec<Entry>,
    /// Already in the database exactly so; importing a file twice changes nothing.
    pub unchanged: Vec<Entry>,
    pub skipped: Vec<Entry>,
    pub rejected: Vec<Entry>,
    /// True when the changes were committed (not a dry run and nothing rejected).
    pub committed: bool,
}

impl ImportReport {
    fn note(list: &mut Vec<Entry>, note: &Note) {
        list.push(Entry {
            line: note.line,
            what: note.text.clone(),
            reason: note.reason.clone(),
        });
    }
}

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Subnet to allocate addresses in for entries that have none (ethers lines with a name).
    pub subnet: Option<String>,
    pub dry_run: bool,
}

/// Imports `parsed`; see the module documentation for the all-or-nothing rule.
pub async fn import(
    client: &mut Client,
    parsed: &Parsed,
    options: &ImportOptions,
) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    for note in &parsed.skipped {
        ImportReport::note(&mut report.skipped, note);
    }
    for note in &parsed.rejected {
        ImportReport::note(&mut report.rejected, note);
    }
    let mut tx = client.transaction().await?;
    for subnet in &parsed.subnets {
        let entry = |reason: String| Entry {
            line: subnet.line,
            what: format!("subnet {}", subnet.cidr),
            reason,
        };
        let exists: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM ipmanager.subnets WHERE cidr = $1::cidr)",
                &[&subnet.cidr],
            )
            .await?
            .try_get(0)?;
        if exists {
            report.unchanged.push(entry("subnet exists".to_owned()));
            continue;
        }
        let savepoint = tx.savepoint("subnet").await?;
        match add_subnet(&savepoint, subnet).await {
            Ok(name) => {
                savepoint.commit().await?;
                report
                    .added
                    .push(entry(format!("new subnet {}", quote(&name))));
            }
            Err(AdminError::Invalid(reason)) => report.rejected.push(entry(reason)),
            Err(other) => return Err(other),
        }
    }
    for reservation in &parsed.reservations {
        let what = describe(reservation);
        let entry = |reason: String| Entry {
            line: reservation.line,
            what: what.clone(),
            reason,
        };
        let Some(new) = new_host(reservation, options) else {
            let reason = if reservation.hostname.is_none() {
                "no host name: a reservation needs one".to_owned()
            } else {
                "no IP address, and no --subnet to allocate one in".to_owned()
            };
            report.rejected.push(entry(reason));
            continue;
        };
        if already_present(&tx, &new).await? {
            report
                .unchanged
                .push(entry("already reserved so".to_owned()));
            continue;
        }
        let savepoint = tx.savepoint("host").await?;
        match hosts::add(&savepoint, &new).await {
            Ok(row) => {
                savepoint.commit().await?;
                let mut notes = reservation.notes.clone();
                if reservation.ip.is_none() {
                    notes.insert(0, format!("allocated {}", row.ip));
                }
                report.added.push(entry(notes.join("; ")));
            }
            Err(AdminError::Invalid(reason) | AdminError::NotFound(reason)) => {
                report.rejected.push(entry(reason))
            }
            Err(other) => return Err(other),
        }
    }
    // Rejections found while parsing and those from the database, in file order.
    report.rejected.sort_by_key(|entry| entry.line);
    if options.dry_run || !report.rejected.is_empty() {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
        report.committed = true;
    }
    Ok(report)
}

fn describe(reservation: &Reservation) -> String {
    let mut what = format_mac(&reservation.mac);
    if let Some(ip) = reservation.ip {
        what.push_str(&format!(" {ip}"));
    }
    if let Some(name) = &reservation.hostname {
        what.push_str(&format!(" {name}"));
    }
    what
}

fn new_host(reservation: &Reservation, options: &ImportOptions) -> Option<NewHost> {
    // --subnet is where addresses are allocated; an entry's own address finds its own subnet.
    let placement = match (reservation.ip, &options.subnet) {
        (Some(ip), _) => Placement::Ip { ip, subnet: None },
        (None, Some(subnet)) => Placement::Allocate {
            subnet: subnet.clone(),
        },
        (None, None) => return None,
    };
    Some(NewHost {
        mac: reservation.mac,
        hostname: reservation.hostname.clone()?,
        placement,
        lease: reservation
            .lease_seconds
            .map(|s| std::time::Duration::from_secs(s as u64)),
        comment: None,
        enabled: true,
    })
}

/// Whether the database already holds this reservation exactly so (address, name, lease time,
/// enabled), so that importing a file twice changes nothing. An entry whose address would be
/// allocated matches a reservation of its MAC and name in the allocation subnet.
async fn already_present(
    client: &impl tokio_postgres::GenericClient,
    new: &NewHost,
) -> Result<bool> {
    let (ip, subnet): (Option<IpAddr>, Option<&str>) = match &new.placement {
        Placement::Ip { ip, .. } => (Some(*ip), None),
        Placement::Allocate { subnet } => (None, Some(subnet)),
    };
    let subnet_id = super::subnets::resolve_id(client, subnet).await?;
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM ipmanager.hosts \
                            WHERE ($1::inet IS NULL OR ip = $1) \
                              AND ($2::bigint IS NULL OR subnet_id = $2) \
                              AND mac = $3 AND lower(hostname) = lower($4) \
                              AND lease_time IS NOT DISTINCT FROM $5::bigint * interval '1 second' \
                              AND enabled = $6)",
            &[
                &ip,
                &subnet_id,
                &MacAddress::new(new.mac),
                &new.hostname,
                &super::seconds(new.lease),
                &new.enabled,
            ],
        )
        .await?
        .try_get(0)?)
}

/// Adds a subnet found in the import (Kea) under a name made from its address; returns it.
async fn add_subnet(
    client: &impl tokio_postgres::GenericClient,
    subnet: &SubnetHint,
) -> Result<String> {
    let name = format!("{:#}", subnet.cidr).replace(['/', ':'], "_");
    let fields = super::subnets::SubnetFields {
        name: Some(name.clone()),
        cidr: Some(subnet.cidr),
        range: Some(subnet.range),
        gateway: Some(subnet.gateway),
        domain: Some(subnet.domain.clone()),
        lease: Some(
            subnet
                .lease_seconds
                .map(|s| std::time::Duration::from_secs(s as u64)),
        ),
        enabled: Some(true),
        comment: Some(Some("imported".to_owned())),
        site: None,
    };
    super::subnets::add(client, &fields).await?;
    Ok(name)
}
