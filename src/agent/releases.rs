//! Releasing the leases of reservations dnsmasq no longer serves, beside the loop: the loop
//! hands over what dnsmasq serves after each piece of work ([`Releases::served`]), and a release
//! runs whenever some reservation stopped being served: it reads dnsmasq's lease file and, for
//! each lease [`crate::release`] picks, runs `release_command IFACE IP MAC [CLIENT-ID]`
//! (`dhcp_release`) or, for a DHCPv6 lease, `release6_command --iface IFACE --client-id DUID
//! --server-id DUID --iaid IAID --ip IP` (`dhcp_release6`).
//!
//! What dnsmasq serves is known only after files took effect: the hostsfile and conf layouts
//! once they are activated, the incremental layout from the planner's model, which keeps a
//! removed or moved reservation served until the compaction (a release before would only hand
//! the client its reserved address again). A failed release is logged, kept and retried with
//! backoff; it never holds up a sync.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::backoff::{wake_at, Backoff};
use crate::activate::{run_command, ActivateError};
use crate::config::Config;
use crate::release::{self, Interface, Lease, Reservation, Reservations};

/// What a release needs from the configuration.
#[derive(Debug, Clone)]
struct Settings {
    lease_file: std::path::PathBuf,
    command: Vec<String>,
    command6: Vec<String>,
    interface: Option<String>,
    timeout: Duration,
}

/// Where releasing stands.
enum State {
    /// Nothing running; the next attempt may start at `not_before` (`None`: at once).
    Idle {
        not_before: Option<Instant>,
    },
    Running(Pin<Box<dyn Future<Output = Attempt> + Send>>),
}

/// How long after sending releases the lease file is read again to see them taken.
const VERIFY_AFTER: Duration = Duration::from_millis(300);
/// Tries (releases sent, or commands failed) for one lease before it is left to expire:
/// `dhcp_release` cannot tell whether dnsmasq took it (dnsmasq may be restarting), so the lease
/// file is the only answer, and a command that is missing stays missing.
const MAX_TRIES: u32 = 5;

/// What one attempt did with the reservations it was given.
pub(super) struct Attempt {
    /// Reservations without a lease (or whose lease cannot be released): no longer pending.
    done: Reservations,
    /// Reservations whose release was sent: pending until the lease file shows it taken.
    sent: Reservations,
    /// Reservations whose release command failed.
    failed: Reservations,
    /// Why some release could not be sent, if one could not.
    error: Option<String>,
}

/// The pending releases and the one attempt at a time.
pub(super) struct Releases {
    settings: Option<Settings>,
    /// What dnsmasq serves, when known.
    served: Option<Arc<Reservations>>,
    /// What the latest files serve once in effect; usually the same set as `served`.
    latest: Option<Arc<Reservations>>,
    pending: Reservations,
    /// Tries so far per pending reservation.
    tries: BTreeMap<Reservation, u32>,
    state: State,
    backoff: Backoff,
}

impl Releases {
    pub(super) fn new(config: &Config) -> Releases {
        let d = &config.dnsmasq;
        Releases {
            settings: d.releases_leases().then(|| Settings {
                lease_file: d.lease_file.clone(),
                command: d.release_command.clone(),
                command6: d.release6_command.clone(),
                interface: d.release_interface.clone(),
                timeout: d.command_timeout,
            }),
            served: None,
            latest: None,
            pending: Reservations::new(),
            tries: BTreeMap::new(),
            state: State::Idle { not_before: None },
            backoff: Backoff::new(config.agent.max_backoff),
        }
    }

    /// After a piece of work: `files` is what its files serve (if it rendered any), `at_start`
    /// what the files found at the agent's start served, `in_effect` whether dnsmasq now serves
    /// the latest files. Reservations served before and not now become pending.
    pub(super) fn served(
        &mut self,
        files: Option<Arc<Reservations>>,
        at_start: Option<Reservations>,
        in_effect: bool,
    ) {
        if self.settings.is_none() {
            return;
        }
        if let (None, Some(at_start)) = (&self.served, at_start) {
            self.served = Some(Arc::new(at_start));
        }
        if let Some(files) = files {
            self.latest = Some(files);
        }
        let Some(now) = self.latest.as_ref().filter(|_| in_effect) else {
            return;
        };
        match &self.served {
            Some(before) if Arc::ptr_eq(before, now) => {}
            Some(before) => self.pending = release::carry(&self.pending, before, now),
            None => {}
        }
        self.served = Some(Arc::clone(now));
    }

    /// Reservations waiting for their lease to be released.
    pub(super) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Starts an attempt when one is due.
    pub(super) fn start_due(&mut self) {
        let (Some(settings), State::Idle { not_before }) = (&self.settings, &self.state) else {
            return;
        };
        if self.pending.is_empty() || !super::backoff::is_due(*not_before) {
            return;
        }
        let settings = settings.clone();
        let attempt = self.pending.clone();
        self.state = State::Running(Box::pin(release_leases(settings, attempt)));
    }

    /// Completes when an attempt ends or a retry is due; never while there is nothing to do.
    pub(super) async fn next(&mut self) -> Option<Attempt> {
        match &mut self.state {
            State::Running(task) => {
                let attempt = task.as_mut().await;
                self.state = State::Idle { not_before: None };
                Some(attempt)
            }
            State::Idle {
                not_before: Some(at),
            } if !self.pending.is_empty() => {
                wake_at(Some(*at)).await;
                self.state = State::Idle { not_before: None };
                None
            }
            State::Idle { .. } => std::future::pending().await,
        }
    }

    /// Takes an attempt's result in: what is done leaves, a lease that outlived
    /// [`MAX_TRIES`] tries is given up. Returns the error of the attempt, if any, after
    /// scheduling the next one: after a backoff when something failed, soon after releases were
    /// sent (to see them taken).
    pub(super) fn finished(&mut self, attempt: Attempt) -> Option<String> {
        self.pending.retain(|r| !attempt.done.contains(r));
        self.tries.retain(|r, _| self.pending.contains(r));
        let mut error = attempt.error;
        let still_pending: Vec<&Reservation> = attempt
            .sent
            .iter()
            .chain(&attempt.failed)
            .filter(|r| self.pending.contains(*r))
            .collect();
        for reservation in still_pending {
            let tries = self.tries.entry(reservation.clone()).or_default();
            *tries += 1;
            if *tries >= MAX_TRIES {
                warn!(
                    ip = %reservation.ip,
                    tries = *tries,
                    "a stale lease could not be released; it stays until it expires"
                );
                error = Some(format!(
                    "the lease of {} is still there after {MAX_TRIES} tries",
                    reservation.ip
                ));
                self.pending.remove(reservation);
            }
        }
        let not_before = if error.is_some() {
            Some(self.backoff.next_at())
        } else {
            self.backoff.reset();
            (!attempt.sent.is_empty()).then(|| Instant::now() + VERIFY_AFTER)
        };
        self.state = State::Idle { not_before };
        error
    }
}

/// One attempt: the leases of `stale` in the lease file, each released.
async fn release_leases(settings: Settings, stale: Reservations) -> Attempt {
    let text = match tokio::fs::read_to_string(&settings.lease_file).await {
        Ok(text) => text,
        // dnsmasq writes it at its first lease: no file, no lease.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => {
            return Attempt {
                done: Reservations::new(),
                sent: Reservations::new(),
                failed: Reservations::new(),
                error: Some(format!(
                    "cannot read the lease file {}: {error}",
                    settings.lease_file.display()
                )),
            }
        }
    };
    let leases = release::parse_lease_file(&text);
    let to_release = release::leases_to_release(&stale, &leases);
    let interfaces = host_interfaces();
    let mut attempt = Attempt {
        // Whatever has no lease needs no release; the leased ones are taken out below.
        done: stale,
        sent: Reservations::new(),
        failed: Reservations::new(),
        error: None,
    };
    for lease in to_release {
        match release_one(&settings, &interfaces, lease).await {
            Ok(false) => continue,
            Ok(true) => {
                for holder in lease.candidates() {
                    if attempt.done.remove(&holder) {
                        attempt.sent.insert(holder);
                    }
                }
            }
            Err(error) => {
                warn!(ip = %lease.ip, error = %error, "cannot release a stale lease; retrying");
                for holder in lease.candidates() {
                    if attempt.done.remove(&holder) {
                        attempt.failed.insert(holder);
                    }
                }
                attempt.error = Some(error);
            }
        }
    }
    attempt
}

/// Sends the release of one lease; `false`: it cannot be released. Without an interface for it,
/// or what the release needs, a retry would not find them either: that is logged, and the lease
/// left to expire.
async fn release_one(
    settings: &Settings,
    interfaces: &[Interface],
    lease: &Lease,
) -> Result<bool, String> {
    let (command, key) = match lease.v6 {
        None => (&settings.command, "dnsmasq.release_command"),
        Some(_) => (&settings.command6, "dnsmasq.release6_command"),
    };
    if command.is_empty() {
        warn!(ip = %lease.ip, "a stale lease is not released ({key} is []); it stays until it expires");
        return Ok(false);
    }
    let Some(interface) = settings
        .interface
        .as_deref()
        .or_else(|| release::interface_for(lease.ip, interfaces))
    else {
        warn!(
            ip = %lease.ip,
            "no interface of this host is in the subnet of a stale lease, so it cannot be \
             released (set dnsmasq.release_interface); it stays until it expires"
        );
        return Ok(false);
    };
    let arguments = match release::release_arguments(lease, interface) {
        Ok(arguments) => arguments,
        Err(why) => {
            warn!(ip = %lease.ip, "a stale lease cannot be released ({why}); it stays until it expires");
            return Ok(false);
        }
    };
    let command: Vec<String> = command.iter().cloned().chain(arguments).collect();
    run_command(&command, settings.timeout)
        .await
        .map_err(|error: ActivateError| super::error_chain(&error))?;
    let client = lease.client_id.as_deref().unwrap_or("*");
    info!(ip = %lease.ip, client, interface, "released a stale lease");
    Ok(true)
}

/// This host's interface addresses; none when they cannot be read (then only
/// `release_interface` helps, and the warning says so).
fn host_interfaces() -> Vec<Interface> {
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addresses
        .filter_map(|a| {
            let (address, netmask) = (a.address?, a.netmask?);
            let ip = |s: &nix::sys::socket::SockaddrStorage| {
                s.as_sockaddr_in()
                    .map(|v4| std::net::IpAddr::V4(v4.ip()))
                    .or_else(|| s.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip())))
            };
            Some(Interface {
                name: a.interface_name.clone(),
                address: ip(&address)?,
                netmask: ip(&netmask)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DATABASE_URL_VAR;

    /// Releases with `command` for DHCPv4 leases and `command6` for DHCPv6 ones.
    fn releases(dir: &std::path::Path, command: Vec<String>, command6: Vec<String>) -> Releases {
        let mut config = Config::load(
            None,
            [(
                DATABASE_URL_VAR.to_owned(),
                "postgresql://db/ipm".to_owned(),
            )],
        )
        .unwrap();
        config.dnsmasq.lease_file = dir.join("leases");
        config.dnsmasq.release_command = command;
        config.dnsmasq.release6_command = command6;
        config.dnsmasq.release_interface = Some("lo".to_owned());
        Releases::new(&config)
    }

    const STALE: &str = "1764600000 52:54:00:00:00:0a 10.0.0.10 alpha *\n";
    const DYNAMIC: &str = "1764600000 52:54:00:00:00:0c 10.0.0.150 dyn *\n";

    async fn attempt(releases: &mut Releases) -> Option<String> {
        releases.start_due();
        loop {
            if let Some(attempt) = releases.next().await {
                return releases.finished(attempt);
            }
            releases.start_due();
        }
    }

    #[tokio::test]
    async fn a_failed_release_stays_pending_and_is_retried_until_it_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("leases"), format!("{STALE}{DYNAMIC}")).unwrap();
        let flag = dir.path().join("works");
        let log = dir.path().join("released");
        // Fails until `flag` exists, then records its arguments.
        let script = format!(
            "test -e {} && echo \"$@\" >> {}",
            flag.display(),
            log.display()
        );
        let command = ["sh", "-c", &script, "release"].map(String::from).to_vec();
        let mut r = releases(dir.path(), command, Vec::new());
        let a10 = Reservation::mac([0x52, 0x54, 0, 0, 0, 0x0a], "10.0.0.10".parse().unwrap());
        // Served, then files without it in effect: pending.
        r.served(None, Some(Reservations::from([a10.clone()])), false);
        r.served(Some(Arc::new(Reservations::from([a10]))), None, true);
        assert_eq!(r.pending(), 0);
        r.served(Some(Arc::default()), None, false);
        assert_eq!(r.pending(), 0, "not pending before the files are in effect");
        r.served(None, None, true);
        assert_eq!(r.pending(), 1);

        let error = attempt(&mut r).await.expect("the command fails");
        assert!(error.contains("failed"), "{error}");
        assert_eq!(r.pending(), 1);
        std::fs::write(&flag, "").unwrap();
        assert_eq!(attempt(&mut r).await, None);
        // Sent: pending until the lease file shows the lease gone.
        assert_eq!(r.pending(), 1);
        // Only the stale reservation's own lease; the dynamic one was never a reservation's.
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "lo 10.0.0.10 52:54:00:00:00:0a\n"
        );
        // dnsmasq dropped it: done, without another release.
        std::fs::write(dir.path().join("leases"), DYNAMIC).unwrap();
        assert_eq!(attempt(&mut r).await, None);
        assert_eq!(r.pending(), 0);
        assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);
    }

    #[tokio::test]
    async fn a_lease_that_dnsmasq_keeps_is_released_again_then_given_up() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("leases"), format!("{STALE}{DYNAMIC}")).unwrap();
        let mut r = releases(dir.path(), vec!["true".to_owned()], Vec::new());
        let a10 = Reservation::mac([0x52, 0x54, 0, 0, 0, 0x0a], "10.0.0.10".parse().unwrap());
        r.served(Some(Arc::new(Reservations::from([a10]))), None, true);
        r.served(Some(Arc::default()), None, true);
        for _ in 1..MAX_TRIES {
            assert_eq!(attempt(&mut r).await, None);
            assert_eq!(r.pending(), 1);
        }
        let error = attempt(&mut r).await.expect("given up");
        assert!(
            error.contains("lease of 10.0.0.10 is still there"),
            "{error}"
        );
        assert_eq!(r.pending(), 0);
    }

    #[tokio::test]
    async fn a_stale_dhcpv6_lease_is_released_with_dhcp_release6_s_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let server = "00:01:00:01:2c:00:00:01:52:54:00:00:00:01";
        let duid = "00:03:00:01:52:54:00:00:00:0a";
        let leases = format!(
            "{STALE}duid {server}\n1764600000 11259139 fd00::10 pc {duid}\n\
             1764600000 77 fd00::150 dyn 00:03:00:01:52:54:00:00:00:0c\n"
        );
        std::fs::write(dir.path().join("leases"), leases).unwrap();
        let log = dir.path().join("released");
        let script = format!("echo \"$@\" >> {}", log.display());
        let record = |family: &str| ["sh", "-c", &script, family].map(String::from).to_vec();
        let pc = Reservation {
            client: release::Client::Id(crate::client_id::parse(duid).unwrap()),
            ip: "fd00::10".parse().unwrap(),
        };
        let mut r = releases(dir.path(), record("v4"), record("v6"));
        r.served(Some(Arc::new(Reservations::from([pc.clone()]))), None, true);
        r.served(Some(Arc::default()), None, true);
        assert_eq!(r.pending(), 1);
        assert_eq!(attempt(&mut r).await, None);
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            format!("--iface lo --client-id {duid} --server-id {server} --iaid 11259139 --ip fd00::10\n")
        );
        // With release6_command = [] the lease is left alone, and nothing stays pending.
        std::fs::remove_file(&log).unwrap();
        let mut r = releases(dir.path(), record("v4"), Vec::new());
        r.served(Some(Arc::new(Reservations::from([pc]))), None, true);
        r.served(Some(Arc::default()), None, true);
        assert_eq!(attempt(&mut r).await, None);
        assert_eq!(r.pending(), 0);
        assert!(!log.exists());
    }
}
