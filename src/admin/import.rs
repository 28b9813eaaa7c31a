//! Importing parsed reservations ([`crate::exchange`]) in one transaction that commits only when
//! no line was rejected and this is not a dry run.
//!
//! The work is set-based, so that its cost does not grow with savepoints or locks per line (a
//! savepoint per line once exhausted the server's lock table at 177k lines):
//!
//! 1. Imports queue behind one another on an advisory lock, so that a second identical import
//!    sees the first one's rows as already present instead of colliding with them.
//! 2. Subnets a Kea file describes are created (a savepoint each: files have few).
//! 3. One statement judges every reservation against the database and the rest of the file:
//!    already present, or the problem the triggers and unique constraints would report, in
//!    their words ([`super::duplicate`], `ipmanager.host_address_problem`).
//! 4. A line the triggers would refuse for its own values (a lease time out of bounds) is tried
//!    alone under a savepoint that is always rolled back, which releases its lock, to report the
//!    trigger's words. One `INSERT … SELECT` then adds every reservation with an address; the
//!    triggers check them once more. Should it still fail, every line is tried alone that way
//!    and the rest inserted again. Entries to allocate get the next free address of `--subnet`
//!    one by one (each needs the previous one's), without savepoints.
//!
//! 5. Names (`host-record=`, `address=/name/ip`, hosts-file lines) become aliases of the host
//!    with their address, or DNS-only names; `cname=` lines aliases of the host they name. Files
//!    hold few, so each is added alone under a savepoint and a refusal is the database's words.
//!
//! A concurrent writer that takes an address between steps 3 and 4 makes the insert fail with a
//! unique violation: the whole import is then tried again (a bounded number of times), and the
//! judgement now sees that row.

use std::net::IpAddr;

use eui48::MacAddress;
use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Transaction};

use super::validate::{format_mac, quote};
use super::{duplicate, AdminError, Result};
use crate::exchange::{AliasRecord, NameRecord, Note, Parsed, Reservation, SubnetHint};

/// The reason given for an entry the database already holds exactly as the file asks.
pub const ALREADY_PRESENT: &str = "the database already holds this reservation with the same \
                                   address, name and lease time";

/// Key of the transaction-level advisory lock that queues imports (ASCII "ipm-impt").
const IMPORT_LOCK: i64 = 0x6970_6d2d_696d_7074;

/// Reservations are numbered with PostgreSQL `int`s in the statements.
const MAX_RESERVATIONS: usize = i32::MAX as usize;

/// How many times an import starts over after losing a race with a concurrent writer.
const ATTEMPTS: usize = 3;

/// What happened to one input line (or Kea object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Entry {
    pub line: usize,
    pub what: String,
    /// Why it was skipped or rejected; notes on what was not kept for added ones.
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
    /// The API token the import is made with: its transactions run with the token's role and
    /// the audit log names it ([`super::tokens::begin_as`]).
    pub caller: Option<super::tokens::TokenIdentity>,
}

/// Imports `parsed`; see the module documentation for how.
pub async fn import(
    client: &mut Client,
    parsed: &Parsed,
    options: &ImportOptions,
) -> Result<ImportReport> {
    if parsed.reservations.len() > MAX_RESERVATIONS {
        return Err(AdminError::Invalid(format!(
            "the file holds {} reservations; one import takes at most {MAX_RESERVATIONS}",
            parsed.reservations.len()
        )));
    }
    let mut attempt = 1;
    loop {
        match import_once(client, parsed, options).await? {
            Attempt::Done(report) => return Ok(report),
            Attempt::Raced(_) if attempt < ATTEMPTS => attempt += 1,
            Attempt::Raced(error) => return Err(error.into()),
        }
    }
}

enum Attempt {
    Done(ImportReport),
    /// A concurrent writer took an address, MAC or name after the judgement: start over.
    Raced(tokio_postgres::Error),
}

async fn import_once(
    client: &mut Client,
    parsed: &Parsed,
    options: &ImportOptions,
) -> Result<Attempt> {
    let mut report = ImportReport::default();
    for note in &parsed.skipped {
        ImportReport::note(&mut report.skipped, note);
    }
    for note in &parsed.rejected {
        ImportReport::note(&mut report.rejected, note);
    }
    let mut tx = client.transaction().await?;
    if let Some(caller) = &options.caller {
        super::tokens::begin_as(&tx, caller).await?;
    }
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&IMPORT_LOCK])
        .await?;
    // The judgement sorts every line four ways; in memory rather than in temporary files.
    tx.batch_execute("SET LOCAL work_mem = '64MB'").await?;
    for subnet in &parsed.subnets {
        add_subnet(&mut tx, subnet, &mut report).await?;
    }
    let allocation = allocation_subnet(&mut tx, parsed, options).await?;
    let plan = plan(&tx, parsed, &allocation, &mut report).await?;
    if let Err(error) = add_hosts(&mut tx, plan, &allocation, &mut report).await {
        return raced_or_failed(error);
    }
    for record in &parsed.names {
        add_name(&mut tx, record, &mut report).await?;
    }
    for record in &parsed.aliases {
        add_alias(&mut tx, record, &mut report).await?;
    }
    // Rejections found while parsing and those from the database, in file order.
    report.rejected.sort_by_key(|entry| entry.line);
    report.added.sort_by_key(|entry| entry.line);
    if options.dry_run || !report.rejected.is_empty() {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
        report.committed = true;
    }
    Ok(Attempt::Done(report))
}

/// A unique violation at insert time means a concurrent writer won a race: try again. Anything
/// else the triggers refuse is reported as it stands.
fn raced_or_failed(error: AddError) -> Result<Attempt> {
    match error {
        AddError::Postgres(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            Ok(Attempt::Raced(error))
        }
        AddError::Postgres(error) => Err(error.into()),
        AddError::Admin(error) => Err(error),
    }
}

/// Why [`add_hosts`] stopped: the statement's own error (to tell a race), or one already
/// turned into words.
enum AddError {
    Postgres(tokio_postgres::Error),
    Admin(AdminError),
}

impl From<tokio_postgres::Error> for AddError {
    fn from(error: tokio_postgres::Error) -> Self {
        AddError::Postgres(error)
    }
}

impl From<AdminError> for AddError {
    fn from(error: AdminError) -> Self {
        AddError::Admin(error)
    }
}

/// The candidates the judgement lets through, by how they are added.
#[derive(Default)]
struct Plan<'a> {
    with_address: Vec<&'a Reservation>,
    to_allocate: Vec<&'a Reservation>,
    /// To be tried alone first (see [`Verdict::Probe`]).
    suspects: Vec<&'a Reservation>,
}

/// Judges every reservation; those that cannot be added go to the report, the rest to the plan.
async fn plan<'a>(
    tx: &Transaction<'_>,
    parsed: &'a Parsed,
    allocation: &Allocation,
    report: &mut ImportReport,
) -> Result<Plan<'a>> {
    let mut candidates = Vec::new();
    for (index, reservation) in parsed.reservations.iter().enumerate() {
        match candidate(reservation, allocation) {
            Ok(()) => candidates.push(index),
            Err(reason) => report.rejected.push(entry(reservation, reason)),
        }
    }
    let verdicts = judge(tx, parsed, &candidates, allocation).await?;
    let mut plan = Plan::default();
    for (index, verdict) in candidates.into_iter().zip(verdicts) {
        let reservation = &parsed.reservations[index];
        match verdict {
            Verdict::Add if reservation.ip.is_some() => plan.with_address.push(reservation),
            Verdict::Add => plan.to_allocate.push(reservation),
            Verdict::Probe => plan.suspects.push(reservation),
            Verdict::Unchanged(reason) => report.unchanged.push(entry(reservation, reason)),
            Verdict::Rejected(reason) => report.rejected.push(entry(reservation, reason)),
        }
    }
    Ok(plan)
}

/// Adds what the plan holds: suspects alone, then every reservation with an address in one
/// statement (each alone after all, should that fail for a reason the judgement did not
/// foresee), then the allocations.
async fn add_hosts(
    tx: &mut Transaction<'_>,
    plan: Plan<'_>,
    allocation: &Allocation,
    report: &mut ImportReport,
) -> Result<(), AddError> {
    let mut with_address = plan.with_address;
    with_address.extend(probe(tx, &plan.suspects, report).await?);
    if let Err(error) = insert_with_address(tx, &with_address).await {
        if error.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            return Err(error.into());
        }
        with_address = probe(tx, &with_address, report).await?;
        insert_with_address(tx, &with_address).await?;
    }
    for reservation in with_address {
        report
            .added
            .push(entry(reservation, reservation.notes.join("; ")));
    }
    if let Allocation::Subnet(subnet) = allocation {
        allocate(tx, subnet, &plan.to_allocate, report).await?;
    }
    Ok(())
}

fn entry(reservation: &Reservation, reason: String) -> Entry {
    Entry {
        line: reservation.line,
        what: describe(reservation),
        reason,
    }
}

fn describe(reservation: &Reservation) -> String {
    let mut what = format_mac(&reservation.mac);
    for mac in &reservation.extra_macs {
        what.push(',');
        what.push_str(&format_mac(mac));
    }
    if let Some(client_id) = &reservation.client_id {
        what.push_str(&format!(" id:{client_id}"));
    }
    if let Some(ip) = reservation.ip {
        what.push_str(&format!(" {ip}"));
    }
    if let Some(name) = &reservation.hostname {
        what.push_str(&format!(" {name}"));
    }
    what
}

/// Where entries without an address get one.
enum Allocation {
    /// No such entries, or no `--subnet`.
    None,
    /// `--subnet` names this subnet, locked against concurrent allocators.
    Subnet(AllocationSubnet),
    /// `--subnet` names no subnet: why.
    Missing(String),
}

struct AllocationSubnet {
    id: i64,
    reference: String,
}

/// Resolves `--subnet` once, when some entry needs an address, and locks its row as
/// `ipmanager.allocate_host` does, so that allocators of one subnet queue.
async fn allocation_subnet(
    tx: &mut Transaction<'_>,
    parsed: &Parsed,
    options: &ImportOptions,
) -> Result<Allocation> {
    let Some(reference) = &options.subnet else {
        return Ok(Allocation::None);
    };
    if parsed.reservations.iter().all(|r| r.ip.is_some()) {
        return Ok(Allocation::None);
    }
    // find_subnet raises for an unknown subnet: its message is every such line's reason.
    let savepoint = tx.savepoint("allocation_subnet").await?;
    let found = savepoint
        .query_one(
            "SELECT s.id FROM ipmanager.find_subnet($1) f \
             JOIN ipmanager.subnets s ON s.id = f.id FOR NO KEY UPDATE OF s",
            &[reference],
        )
        .await;
    match found {
        Ok(row) => {
            savepoint.commit().await?;
            Ok(Allocation::Subnet(AllocationSubnet {
                id: row.try_get("id")?,
                reference: reference.clone(),
            }))
        }
        Err(error) => match AdminError::from(error) {
            AdminError::Invalid(reason)
            | AdminError::Duplicate(reason)
            | AdminError::NotFound(reason) => {
                savepoint.rollback().await?;
                Ok(Allocation::Missing(reason))
            }
            other => Err(other),
        },
    }
}

/// Whether a reservation can be judged at all: it needs a name, and an address or a subnet to
/// allocate one in.
fn candidate(reservation: &Reservation, allocation: &Allocation) -> Result<(), String> {
    if reservation.hostname.is_none() {
        return Err("no host name: a reservation needs one".to_owned());
    }
    match (reservation.ip, allocation) {
        (Some(_), _) | (None, Allocation::Subnet(_)) => Ok(()),
        (None, Allocation::Missing(reason)) => Err(reason.clone()),
        (None, Allocation::None) => {
            Err("no IP address, and no --subnet to allocate one in".to_owned())
        }
    }
}

/// What the database says about one candidate.
enum Verdict {
    Add,
    /// A trigger would refuse its lease time: insert it alone to learn the trigger's words.
    Probe,
    Unchanged(String),
    Rejected(String),
}

/// The candidates (indexes into `parsed.reservations`) as arrays, in one order.
struct Columns {
    seq: Vec<i32>,
    mac: Vec<MacAddress>,
    ip: Vec<Option<IpAddr>>,
    hostname: Vec<String>,
    lease: Vec<Option<i64>>,
}

impl Columns {
    /// `seq` is below [`MAX_RESERVATIONS`], which [`import`] checks first.
    fn of<'a>(reservations: impl Iterator<Item = (usize, &'a Reservation)>) -> Columns {
        let mut columns = Columns {
            seq: Vec::new(),
            mac: Vec::new(),
            ip: Vec::new(),
            hostname: Vec::new(),
            lease: Vec::new(),
        };
        for (seq, reservation) in reservations {
            columns.seq.push(seq as i32);
            columns.mac.push(MacAddress::new(reservation.mac));
            columns.ip.push(reservation.ip);
            columns
                .hostname
                .push(reservation.hostname.clone().unwrap_or_default());
            columns.lease.push(reservation.lease_seconds);
        }
        columns
    }
}

/// The candidates as a relation (seq, mac, ip, hostname, lease_time) from parameters $1 to $5.
const STAGED: &str = "\
    SELECT r.seq, r.mac, ipmanager.host_address(r.ip) AS ip, r.hostname, \
           r.lease * interval '1 second' AS lease_time \
    FROM unnest($1::int[], $2::macaddr[], $3::inet[], $4::text[], $5::bigint[]) \
         AS r(seq, mac, ip, hostname, lease)";

/// Judges every candidate in one statement: its subnet (the enabled one containing its address,
/// or the allocation subnet $6), whether the database holds it already, what in the database or
/// in an earlier line of the file it collides with, and whether its address fits its subnet.
const JUDGE: &str = "\
    WITH staged AS ({STAGED}), \
    placed AS ( \
        SELECT t.*, coalesce(s.id, $6) AS subnet_id, s.name AS subnet_name, s.cidr \
        FROM staged t \
        LEFT JOIN LATERAL ( \
            SELECT s.id, s.name, s.cidr FROM ipmanager.subnets s \
            WHERE t.ip IS NOT NULL AND s.enabled AND s.cidr >>= t.ip \
            ORDER BY masklen(s.cidr) DESC LIMIT 1) s ON true \
        WHERE t.ip IS NOT NULL OR $6 IS NOT NULL), \
    judged AS ( \
        SELECT p.*, \
            EXISTS (SELECT 1 FROM ipmanager.hosts h \
                    WHERE h.subnet_id = p.subnet_id AND h.mac = p.mac \
                      AND lower(h.hostname) = lower(p.hostname) \
                      AND (p.ip IS NULL OR h.ip = p.ip) \
                      AND h.lease_time IS NOT DISTINCT FROM p.lease_time AND h.enabled) \
                AS present, \
            (SELECT ipmanager.host_duplicate_message(1, p.ip, p.mac, p.hostname, p.subnet_id, h.ip, h.mac, h.hostname) FROM ipmanager.hosts h \
             WHERE h.ip = p.ip LIMIT 1) AS ip_taken, \
            (SELECT ipmanager.host_duplicate_message(2, p.ip, p.mac, p.hostname, p.subnet_id, h.ip, h.mac, h.hostname) FROM ipmanager.hosts h \
             WHERE h.subnet_id = p.subnet_id AND h.mac = p.mac LIMIT 1) AS mac_taken, \
            (SELECT ipmanager.host_duplicate_message(3, p.ip, p.mac, p.hostname, p.subnet_id, h.ip, h.mac, h.hostname) FROM ipmanager.hosts h \
             WHERE h.subnet_id = p.subnet_id AND lower(h.hostname) = lower(p.hostname) \
             LIMIT 1) AS name_taken \
        FROM placed p) \
    SELECT j.seq, j.present, j.ip_taken, j.mac_taken, j.name_taken, \
        host(j.ip) AS ip_text, j.subnet_id IS NOT NULL AS placed, \
        NOT ipmanager.is_valid_lease_time(j.lease_time) AS suspect, \
        CASE WHEN j.subnet_id IS NOT NULL AND j.ip IS NOT NULL \
                  AND NOT ipmanager.is_host_address_of(j.ip, j.cidr) \
             THEN ipmanager.host_address_problem('hosts.ip', j.ip, j.subnet_name, j.cidr) \
        END AS address_problem, \
        min(j.seq) OVER (PARTITION BY j.subnet_id, j.mac, lower(j.hostname), j.ip, j.lease_time) \
            AS same_as, \
        CASE WHEN j.ip IS NOT NULL THEN min(j.seq) OVER (PARTITION BY j.ip) END AS same_ip, \
        min(j.seq) OVER (PARTITION BY j.subnet_id, j.mac) AS same_mac, \
        min(j.seq) OVER (PARTITION BY j.subnet_id, lower(j.hostname)) AS same_name \
    FROM judged j \
    ORDER BY j.seq";

async fn judge(
    tx: &Transaction<'_>,
    parsed: &Parsed,
    candidates: &[usize],
    allocation: &Allocation,
) -> Result<Vec<Verdict>> {
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let columns = Columns::of(
        candidates
            .iter()
            .map(|&index| (index, &parsed.reservations[index])),
    );
    let allocation_id = match allocation {
        Allocation::Subnet(subnet) => Some(subnet.id),
        Allocation::None | Allocation::Missing(_) => None,
    };
    let rows = tx
        .query(
            &JUDGE.replace("{STAGED}", STAGED),
            &[
                &columns.seq,
                &columns.mac,
                &columns.ip,
                &columns.hostname,
                &columns.lease,
                &allocation_id,
            ],
        )
        .await?;
    let mut verdicts = Vec::with_capacity(candidates.len());
    let mut rows = rows.iter().peekable();
    for &index in candidates {
        let row = rows.next_if(|row| {
            row.try_get::<_, i32>("seq")
                .is_ok_and(|seq| seq as usize == index)
        });
        let verdict = match row {
            Some(row) => verdict(row, parsed)?,
            // Only entries to allocate without an allocation subnet drop out, and those are
            // not candidates.
            None => Verdict::Rejected("no subnet to allocate an address in".to_owned()),
        };
        verdicts.push(verdict);
    }
    Ok(verdicts)
}

/// One row of [`JUDGE`] as a verdict; the first problem found is the one reported.
fn verdict(row: &Row, parsed: &Parsed) -> Result<Verdict> {
    let seq: i32 = row.try_get("seq")?;
    let line_of = |column: &str| -> Result<Option<usize>> {
        let first: Option<i32> = row.try_get(column)?;
        Ok(first
            .filter(|&first| first != seq)
            .map(|first| parsed.reservations[first as usize].line))
    };
    let reservation = &parsed.reservations[seq as usize];
    let ip = row.try_get::<_, Option<String>>("ip_text")?;
    let mac = format_mac(&reservation.mac);
    let name = reservation.hostname.clone().unwrap_or_default();
    let duplicate_of = |constraint: &str, value: &str| {
        duplicate(constraint, value).unwrap_or_else(|| format!("{constraint}: {value}"))
    };
    if row.try_get("present")? {
        return Ok(Verdict::Unchanged(ALREADY_PRESENT.to_owned()));
    }
    if !row.try_get::<_, bool>("placed")? {
        return Ok(Verdict::Rejected(format!(
            "hosts.ip {} is not inside any enabled subnet: create or enable a subnet containing \
             it first",
            ip.unwrap_or_default()
        )));
    }
    if let Some(problem) = row.try_get::<_, Option<String>>("address_problem")? {
        return Ok(Verdict::Rejected(problem));
    }
    if let Some(line) = line_of("same_as")? {
        return Ok(Verdict::Unchanged(format!(
            "the same reservation as line {line}"
        )));
    }
    // A clash with the database in the triggers' own words (ipmanager.host_duplicate_message).
    for column in ["ip_taken", "mac_taken", "name_taken"] {
        if let Some(message) = row.try_get::<_, Option<String>>(column)? {
            return Ok(Verdict::Rejected(message));
        }
    }
    let in_file = [
        ("same_ip", "hosts_ip_unique", ip.unwrap_or_default()),
        ("same_mac", "hosts_subnet_mac_unique", mac),
        ("same_name", "hosts_subnet_hostname_unique", name),
    ];
    for (column, constraint, value) in in_file {
        if let Some(line) = line_of(column)? {
            return Ok(Verdict::Rejected(format!(
                "{} (by line {line} of this file)",
                duplicate_of(constraint, &value)
            )));
        }
    }
    // A client identifier or extra MAC is checked by the triggers only: try it alone first,
    // so that a clash is reported in their words.
    if row.try_get("suspect")? || has_ident(reservation) {
        return Ok(Verdict::Probe);
    }
    Ok(Verdict::Add)
}

/// Tries each reservation alone under a savepoint that is always rolled back (so no lock stays
/// behind): those the triggers refuse are rejected in the triggers' words, the others returned
/// to be inserted with the rest.
async fn probe<'a>(
    tx: &mut Transaction<'_>,
    reservations: &[&'a Reservation],
    report: &mut ImportReport,
) -> Result<Vec<&'a Reservation>> {
    let mut passed = Vec::new();
    for &reservation in reservations {
        let savepoint = tx.savepoint("probe").await?;
        let result = insert_rows(&savepoint, &[reservation]).await;
        savepoint.rollback().await?;
        match result.map_err(AdminError::from) {
            Ok(()) => passed.push(reservation),
            Err(
                AdminError::Invalid(reason)
                | AdminError::Duplicate(reason)
                | AdminError::NotFound(reason),
            ) => report.rejected.push(entry(reservation, reason)),
            Err(other) => return Err(other),
        }
    }
    Ok(passed)
}

/// Adds every reservation with an address in one statement under a savepoint, which is
/// released when the statement succeeds and rolled back when it fails (the transaction goes on).
async fn insert_with_address(
    tx: &mut Transaction<'_>,
    reservations: &[&Reservation],
) -> Result<(), tokio_postgres::Error> {
    if reservations.is_empty() {
        return Ok(());
    }
    let savepoint = tx.savepoint("insert").await?;
    match insert_rows(&savepoint, reservations).await {
        Ok(()) => savepoint.commit().await,
        Err(error) => {
            savepoint.rollback().await?;
            Err(error)
        }
    }
}

/// The statement: the triggers place and check every row.
async fn insert_rows(
    tx: &Transaction<'_>,
    reservations: &[&Reservation],
) -> Result<(), tokio_postgres::Error> {
    let columns = Columns::of(reservations.iter().copied().enumerate());
    let added = tx
        .query(
            &format!(
                "INSERT INTO ipmanager.hosts (mac, ip, hostname, lease_time, enabled) \
                 SELECT mac, ip, hostname, lease_time, true FROM ({STAGED}) staged ORDER BY seq \
                 RETURNING id, ip"
            ),
            &[
                &columns.seq,
                &columns.mac,
                &columns.ip,
                &columns.hostname,
                &columns.lease,
            ],
        )
        .await?;
    // The few with a client identifier or extra MACs get them by their (unique) address.
    for reservation in reservations.iter().filter(|r| has_ident(r)) {
        let host = added.iter().find(|row| {
            row.try_get::<_, cidr::IpInet>("ip")
                .is_ok_and(|ip| Some(ip.address()) == reservation.ip)
        });
        if let Some(row) = host {
            add_ident(tx, row.try_get("id")?, reservation).await?;
        }
    }
    Ok(())
}

fn has_ident(reservation: &Reservation) -> bool {
    reservation.client_id.is_some() || !reservation.extra_macs.is_empty()
}

/// Gives the new host `id` the reservation's client identifier and extra MACs; the triggers
/// check them (a taken MAC or identifier is refused in their words).
async fn add_ident(
    tx: &Transaction<'_>,
    id: i64,
    reservation: &Reservation,
) -> Result<(), tokio_postgres::Error> {
    if let Some(client_id) = &reservation.client_id {
        tx.execute(
            "UPDATE ipmanager.hosts SET client_id = $2 WHERE id = $1",
            &[&id, &client_id.to_string()],
        )
        .await?;
    }
    if !reservation.extra_macs.is_empty() {
        let macs: Vec<MacAddress> = reservation
            .extra_macs
            .iter()
            .map(|m| MacAddress::new(*m))
            .collect();
        tx.execute(
            "INSERT INTO ipmanager.host_macs (host_id, mac) \
             SELECT $1, m.mac FROM unnest($2::macaddr[]) WITH ORDINALITY m (mac, n) ORDER BY m.n",
            &[&id, &macs],
        )
        .await?;
    }
    Ok(())
}

/// Gives each reservation the next free address of the allocation subnet, in file order. When
/// the subnet is full, `ipmanager.allocate_host` explains why (under a savepoint that is rolled
/// back, once), and that is the reason for this and every later entry.
async fn allocate(
    tx: &mut Transaction<'_>,
    subnet: &AllocationSubnet,
    reservations: &[&Reservation],
    report: &mut ImportReport,
) -> Result<(), tokio_postgres::Error> {
    let mut full: Option<String> = None;
    for reservation in reservations {
        let lease = reservation.lease_seconds;
        let mac = MacAddress::new(reservation.mac);
        let name = reservation.hostname.clone().unwrap_or_default();
        if full.is_none() {
            let allocated = tx
                .query_opt(
                    "INSERT INTO ipmanager.hosts \
                         (subnet_id, mac, ip, hostname, lease_time, enabled) \
                     SELECT $1, $2, free.ip, $3, $4::bigint * interval '1 second', true \
                     FROM ipmanager.next_free_address($1) AS free(ip) \
                     WHERE free.ip IS NOT NULL \
                     RETURNING id, host(ip) AS ip",
                    &[&subnet.id, &mac, &name, &lease],
                )
                .await?;
            if let Some(row) = allocated {
                let ip: String = row.try_get("ip")?;
                add_ident(tx, row.try_get("id")?, reservation).await?;
                let mut notes = vec![format!("allocated {ip}")];
                notes.extend(reservation.notes.iter().cloned());
                report.added.push(entry(reservation, notes.join("; ")));
                continue;
            }
            full = Some(subnet_full_reason(tx, subnet, &mac, &name).await?);
        }
        let reason = full.clone().unwrap_or_default();
        report.rejected.push(entry(reservation, reason));
    }
    Ok(())
}

/// `ipmanager.allocate_host`'s own words for a full subnet.
async fn subnet_full_reason(
    tx: &mut Transaction<'_>,
    subnet: &AllocationSubnet,
    mac: &MacAddress,
    name: &str,
) -> Result<String, tokio_postgres::Error> {
    let savepoint = tx.savepoint("subnet_full").await?;
    let result = savepoint
        .execute(
            "SELECT ipmanager.allocate_host($1::macaddr, $2, $3)",
            &[mac, &name, &subnet.reference],
        )
        .await;
    savepoint.rollback().await?;
    Ok(match result {
        Err(error) => AdminError::from(error).to_string(),
        Ok(_) => format!("subnet {} has no free address", quote(&subnet.reference)),
    })
}

/// Adds a subnet found in the import (Kea) under a name made from its address, unless one with
/// its CIDR exists. A savepoint each: a rejected subnet must not hide the next (Kea files
/// describe few subnets).
async fn add_subnet(
    tx: &mut Transaction<'_>,
    subnet: &SubnetHint,
    report: &mut ImportReport,
) -> Result<()> {
    let entry = |reason: String| Entry {
        line: subnet.line,
        what: format!("subnet {}", subnet.cidr),
        reason,
    };
    let exists: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM ipmanager.subnets WHERE cidr = $1::cidr) AS exists",
            &[&subnet.cidr],
        )
        .await?
        .try_get("exists")?;
    if exists {
        report.unchanged.push(entry("subnet exists".to_owned()));
        return Ok(());
    }
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
        ..super::subnets::SubnetFields::default()
    };
    let savepoint = tx.savepoint("subnet").await?;
    match super::subnets::add(&savepoint, &fields).await {
        Ok(_) => {
            savepoint.commit().await?;
            report
                .added
                .push(entry(format!("new subnet {}", quote(&name))));
        }
        Err(AdminError::Invalid(reason)) => report.rejected.push(entry(reason)),
        Err(other) => return Err(other),
    }
    Ok(())
}

/// A host an imported name refers to: by its address or its name.
struct Named {
    id: i64,
    hostname: String,
    aliases: Vec<String>,
}

const NAMED: &str = "\
    SELECT h.id, h.hostname, \
           ARRAY(SELECT a.name FROM ipmanager.host_aliases a WHERE a.host_id = h.id) AS aliases \
    FROM ipmanager.hosts h";

fn named(row: &Row) -> Result<Named> {
    Ok(Named {
        id: row.try_get("id")?,
        hostname: row.try_get("hostname")?,
        aliases: row.try_get("aliases")?,
    })
}

/// Of `names`, those `host` does not have yet (as its name or an alias, ignoring case).
fn missing(host: &Named, names: &[String]) -> Vec<String> {
    let mut missing: Vec<String> = Vec::new();
    for name in names {
        let known = host.hostname.eq_ignore_ascii_case(name)
            || host.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
            || missing.iter().any(|m| m.eq_ignore_ascii_case(name));
        if !known {
            missing.push(name.clone());
        }
    }
    missing
}

const INSERT_ALIASES: &str = "\
    INSERT INTO ipmanager.host_aliases (host_id, subnet_id, name) \
    SELECT h.id, h.subnet_id, a.name FROM ipmanager.hosts h, unnest($2::text[]) a (name) \
    WHERE h.id = $1";

/// An address with names: aliases of the host that has the address, else a DNS-only name.
async fn add_name(
    tx: &mut Transaction<'_>,
    record: &NameRecord,
    report: &mut ImportReport,
) -> Result<()> {
    let entry = |reason: String| Entry {
        line: record.line,
        what: format!("{} {}", record.ip, record.names.join(" ")),
        reason,
    };
    let found = tx
        .query_opt(&format!("{NAMED} WHERE h.ip = $1"), &[&record.ip])
        .await?;
    let mut notes = record.notes.clone();
    let outcome = match found {
        Some(row) => {
            let host = named(&row)?;
            let aliases = missing(&host, &record.names);
            if aliases.is_empty() {
                report.unchanged.push(entry(
                    "the host with this address has these names".to_owned(),
                ));
                return Ok(());
            }
            notes.insert(0, format!("aliases of {}", quote(&host.hostname)));
            alone(tx, &[(INSERT_ALIASES, &[&host.id, &aliases])]).await?
        }
        None => {
            let (hostname, aliases) = record
                .names
                .split_first()
                .map(|(first, rest)| (first.clone(), rest.to_vec()))
                .unwrap_or_default();
            notes.insert(0, "DNS-only name".to_owned());
            alone(
                tx,
                &[
                    (
                        "INSERT INTO ipmanager.hosts (ip, hostname) VALUES ($1, $2)",
                        &[&record.ip, &hostname],
                    ),
                    (
                        "INSERT INTO ipmanager.host_aliases (host_id, subnet_id, name) \
                         SELECT h.id, h.subnet_id, a.name \
                         FROM ipmanager.hosts h, unnest($2::text[]) a (name) WHERE h.ip = $1",
                        &[&record.ip, &aliases],
                    ),
                ],
            )
            .await?
        }
    };
    match outcome {
        Ok(()) => report.added.push(entry(notes.join("; "))),
        Err(reason) => report.rejected.push(entry(reason)),
    }
    Ok(())
}

/// `cname=` aliases of the one host named by the target.
async fn add_alias(
    tx: &mut Transaction<'_>,
    record: &AliasRecord,
    report: &mut ImportReport,
) -> Result<()> {
    let entry = |reason: String| Entry {
        line: record.line,
        what: format!("{} -> {}", record.aliases.join(" "), record.target),
        reason,
    };
    let rows = tx
        .query(
            &format!("{NAMED} WHERE lower(h.hostname) = lower($1)"),
            &[&record.target],
        )
        .await?;
    let host = match rows.as_slice() {
        [row] => named(row)?,
        [] => {
            report.rejected.push(entry(format!(
                "no host is named {}: a cname target must be a host's name",
                quote(&record.target)
            )));
            return Ok(());
        }
        several => {
            report.rejected.push(entry(format!(
                "{} hosts are named {} (in several subnets): ipmanager cannot tell which one the \
                 aliases belong to",
                several.len(),
                quote(&record.target)
            )));
            return Ok(());
        }
    };
    let aliases = missing(&host, &record.aliases);
    if aliases.is_empty() {
        report
            .unchanged
            .push(entry("the host has these aliases".to_owned()));
        return Ok(());
    }
    match alone(tx, &[(INSERT_ALIASES, &[&host.id, &aliases])]).await? {
        Ok(()) => report
            .added
            .push(entry(format!("aliases of {}", quote(&host.hostname)))),
        Err(reason) => report.rejected.push(entry(reason)),
    }
    Ok(())
}

/// Runs `statements` under a savepoint: kept when all succeed; rolled back, with the database's
/// words for the refusal, when one fails on the data.
async fn alone(
    tx: &mut Transaction<'_>,
    statements: &[(&str, &[&(dyn ToSql + Sync)])],
) -> Result<Result<(), String>> {
    let savepoint = tx.savepoint("name").await?;
    for (sql, params) in statements {
        if let Err(error) = savepoint.execute(*sql, params).await {
            savepoint.rollback().await?;
            return match AdminError::from(error) {
                AdminError::Invalid(reason)
                | AdminError::Duplicate(reason)
                | AdminError::NotFound(reason) => Ok(Err(reason)),
                other => Err(other),
            };
        }
    }
    savepoint.commit().await?;
    Ok(Ok(()))
}
