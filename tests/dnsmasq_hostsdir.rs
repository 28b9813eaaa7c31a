//! What dnsmasq (2.90) does with `--dhcp-hostsdir` and `--hostsdir`, the directories the
//! incremental layout writes: one test per fact that layout relies on (docs/dnsmasq-hostsdir.md
//! lists them with the delays measured here). Real dnsmasq in the lab, files written the way
//! the agent writes them (a dot-named temporary file renamed into place), and what dnsmasq
//! serves read with DHCPDISCOVERs (the prober) and DNS queries from the client namespace.
//!
//! "Still served" is only meaningful once dnsmasq has handled the change: inotify events are
//! handled in order, so each such assertion follows a barrier, a new file with a fresh
//! reservation (or name) that must be served first.
//!
//! Needs root, `ip netns`, dnsmasq, udhcpc and dig; without them each test prints `SKIPPED:` and
//! passes, unless `IPMANAGER_REQUIRE_E2E=1`.

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::netns::{Lab, E2E_DEADLINE};
use common::probe::{format_mac, DhcpProber, DnsProber};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const DOMAIN: &str = "dir.test";
/// Changes timed per delay measurement.
const TRIES: usize = 20;
/// The resolution of a delay measurement where dnsmasq stays silent until the change: a
/// DISCOVER for a MAC it does not know yet gets no answer, so probes are re-sent this often.
const RESEND: Duration = Duration::from_millis(2);

/// A lab whose dnsmasq reads reservations from `dhcp-hostsdir` and names from `hostsdir`, with
/// a static-only subnet: a MAC without a reservation is offered nothing.
struct DirLab {
    lab: Lab,
    dhcp: DhcpProber,
    dns: DnsProber,
    /// Barriers so far (each uses a fresh MAC, address and name).
    barriers: u8,
}

impl DirLab {
    async fn start(octet: u8) -> Option<DirLab> {
        Self::start_with_range(octet, &format!("10.99.{octet}.0,static")).await
    }

    /// `range`: the dhcp-range's addresses, `<network>,static` or `<start>,<end>`.
    async fn start_with_range(octet: u8, range: &str) -> Option<DirLab> {
        let mut lab = Lab::new(octet)?;
        for dir in [lab.hosts_dir(), lab.names_dir()] {
            std::fs::create_dir(&dir).unwrap();
        }
        std::fs::write(
            lab.include_file(),
            format!(
                "dhcp-range=set:subnet1,{range},255.255.255.0\n\
                 dhcp-hostsdir={}\n\
                 hostsdir={}\n",
                lab.hosts_dir().display(),
                lab.names_dir().display()
            ),
        )
        .unwrap();
        lab.start_dnsmasq().await;
        let (dhcp, dns) = (DhcpProber::new(&lab), DnsProber::new(&lab));
        Some(DirLab {
            lab,
            dhcp,
            dns,
            barriers: 0,
        })
    }

    /// Host `n`'s MAC.
    fn mac(&self, n: u8) -> [u8; 6] {
        [0x02, 0, 0, self.lab.octet, 0, n]
    }

    fn addr(&self, n: u8) -> Ipv4Addr {
        self.lab.addr(n)
    }

    /// A dhcp-hostsdir line: host `mac` gets address `ip`.
    fn reservation(&self, mac: u8, ip: u8) -> String {
        format!("{},{}\n", format_mac(self.mac(mac)), self.addr(ip))
    }

    fn name(n: usize) -> String {
        format!("h{n}.{DOMAIN}")
    }

    /// A hostsdir line: `ip` is named `name`.
    fn names_line(&self, ip: u8, name: &str) -> String {
        format!("{} {name}\n", self.addr(ip))
    }

    /// Replaces `dir/name` as the agent does: a dot-named temporary file renamed into place
    /// (dnsmasq ignores the temporary file and sees one IN_MOVED_TO).
    fn put(dir: &Path, name: &str, content: &str) {
        let staged = dir.join(format!(".{name}.staged"));
        std::fs::write(&staged, content).unwrap();
        std::fs::rename(&staged, dir.join(name)).unwrap();
    }

    fn put_hosts(&self, name: &str, content: &str) {
        Self::put(&self.lab.hosts_dir(), name, content);
    }

    fn put_names(&self, name: &str, content: &str) {
        Self::put(&self.lab.names_dir(), name, content);
    }

    fn remove(dir: PathBuf, name: &str) {
        std::fs::remove_file(dir.join(name)).unwrap();
    }

    /// Waits until `mac` is offered `ip`; returns how long that took from `since`.
    async fn wait_offered(&self, mac: [u8; 6], ip: Ipv4Addr, since: Instant) -> Duration {
        while self.dhcp.discover(mac, RESEND).await != Some(ip) {
            assert!(
                since.elapsed() < E2E_DEADLINE,
                "{} was never offered {ip}; {}",
                format_mac(mac),
                self.lab.diagnostics()
            );
        }
        since.elapsed()
    }

    /// Waits until `name` resolves to exactly `ips`; returns how long that took from `since`.
    async fn wait_resolves(&self, name: &str, ips: &[Ipv4Addr], since: Instant) -> Duration {
        while self
            .dns
            .query(name, Duration::from_millis(100))
            .await
            .as_deref()
            != Some(ips)
        {
            assert!(
                since.elapsed() < E2E_DEADLINE,
                "{name} never resolved to {ips:?}; {}",
                self.lab.diagnostics()
            );
        }
        since.elapsed()
    }

    /// Returns once dnsmasq has handled every earlier change to the DHCP directory: a new file
    /// with a fresh reservation (MAC 02:00:00:<octet>:ff:<n>, address .<200 + n>) is offered.
    async fn dhcp_barrier(&mut self) {
        self.barriers += 1;
        let n = self.barriers;
        assert!(n < 50, "too many barriers for the fresh addresses");
        let mac = [0x02, 0, 0, self.lab.octet, 0xff, n];
        let ip = self.addr(200 + n);
        self.put_hosts(
            &format!("barrier{n}"),
            &format!("{},{ip}\n", format_mac(mac)),
        );
        self.wait_offered(mac, ip, Instant::now()).await;
    }

    /// The same for the names directory: a new file with a fresh name resolves.
    async fn dns_barrier(&mut self) {
        self.barriers += 1;
        let n = self.barriers;
        let name = format!("barrier{n}.{DOMAIN}");
        let ip = self.addr(200 + n);
        self.put_names(&format!("barrier{n}"), &format!("{ip} {name}\n"));
        self.wait_resolves(&name, &[ip], Instant::now()).await;
    }

    /// What dnsmasq offers host `n` now.
    async fn offer(&self, n: u8) -> Option<Ipv4Addr> {
        self.dhcp.offer(self.mac(n)).await
    }

    /// The A records of `name` now.
    async fn resolve(&self, name: &str) -> Vec<Ipv4Addr> {
        self.dns
            .query(name, Duration::from_secs(2))
            .await
            .unwrap_or_else(|| panic!("no answer for {name}; {}", self.lab.diagnostics()))
    }

    /// SIGHUP, and waits until dnsmasq has handled it (it handles signals before the query
    /// that follows).
    async fn sighup(&self, tag: &str) {
        let pid = self.lab.dnsmasq_pid().expect("dnsmasq runs");
        kill(Pid::from_raw(pid), Signal::SIGHUP).unwrap();
        self.lab.barrier(tag).await;
    }

    /// How many times dnsmasq refused to load a reservation of `ip` as a duplicate.
    fn refusals(&self, ip: Ipv4Addr) -> usize {
        let needle = format!("duplicate dhcp-host IP address {ip} ");
        self.lab.log().matches(&needle).count()
    }
}

/// Median and maximum, in milliseconds, for the log and the docs.
fn summary(samples: &mut [Duration]) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "median {:.2} ms, max {:.2} ms over {} changes",
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1]),
        samples.len()
    )
}

/// Prints to stderr directly: the test harness hides captured output of passing tests.
fn report(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Generous: dnsmasq reads a new small file within milliseconds; a delay near this bound means
/// the change was missed, not that it was slow.
const PICKUP_DEADLINE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prober_is_offered_what_udhcpc_leases() {
    let Some(lab) = DirLab::start(40).await else {
        return;
    };
    let content: String = (1..=50).map(|n| lab.reservation(n, n + 100)).collect();
    lab.put_hosts("0001", &content);
    let mac = format_mac(lab.mac(7));
    let offered = lab
        .wait_offered(lab.mac(7), lab.addr(107), Instant::now())
        .await;
    assert!(offered < PICKUP_DEADLINE);
    assert_eq!(lab.lab.dhcp(&mac).await, Some(lab.addr(107)));
    // With a lease now, the same.
    assert_eq!(lab.offer(7).await, Some(lab.addr(107)));

    // Many probes at once: each answered by its own OFFER.
    let macs: Vec<[u8; 6]> = (1..=60).map(|n| lab.mac(n)).collect();
    let offers = lab.dhcp.offers(&macs).await;
    let expected: Vec<Option<Ipv4Addr>> = (1..=60)
        .map(|n| (n <= 50).then(|| lab.addr(n + 100)))
        .collect();
    assert_eq!(offers, expected);

    // A MAC without a reservation: nothing from either.
    assert_eq!(lab.offer(55).await, None);
    assert_eq!(lab.lab.dhcp(&format_mac(lab.mac(55))).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_file_is_read_without_a_signal_and_its_entry_wins() {
    let Some(lab) = DirLab::start(41).await else {
        return;
    };
    lab.put_hosts("0000", &lab.reservation(1, 10));
    lab.wait_offered(lab.mac(1), lab.addr(10), Instant::now())
        .await;
    let mut delays = Vec::new();
    for i in 0..TRIES as u8 {
        // The same MAC with a fresh address in a new file: the newest entry wins, so the
        // offer changes from the old address to the new one at the moment the file is read.
        let ip = 11 + i;
        let start = Instant::now();
        lab.put_hosts(&format!("{:04x}", i + 1), &lab.reservation(1, ip));
        delays.push(lab.wait_offered(lab.mac(1), lab.addr(ip), start).await);
    }
    report(&format!(
        "dhcp-hostsdir, new file (rename to OFFER of the new address): {}",
        summary(&mut delays)
    ));
    assert!(delays.iter().all(|d| *d < PICKUP_DEADLINE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_added_to_a_file_is_read_without_a_signal_and_its_old_lines_are_refused() {
    let Some(lab) = DirLab::start(42).await else {
        return;
    };
    let mut content = lab.reservation(1, 101);
    lab.put_hosts("0001", &content);
    lab.wait_offered(lab.mac(1), lab.addr(101), Instant::now())
        .await;
    let mut delays = Vec::new();
    for n in 2..2 + TRIES as u8 {
        // A host dnsmasq does not know yet: it stays silent until the file is read.
        content.push_str(&lab.reservation(n, 100 + n));
        let start = Instant::now();
        lab.put_hosts("0001", &content);
        delays.push(lab.wait_offered(lab.mac(n), lab.addr(100 + n), start).await);
    }
    report(&format!(
        "dhcp-hostsdir, line added to a file (rename to first OFFER, resent every {} ms): {}",
        RESEND.as_millis(),
        summary(&mut delays)
    ));
    assert!(delays.iter().all(|d| *d < PICKUP_DEADLINE));
    // Every re-read refused the file's unchanged lines (their addresses are taken by the same
    // lines read before), harmlessly: those hosts keep their addresses.
    assert_eq!(lab.refusals(lab.addr(101)), TRIES);
    assert_eq!(lab.refusals(lab.addr(102)), TRIES - 1);
    for n in 1..2 + TRIES as u8 {
        assert_eq!(lab.offer(n).await, Some(lab.addr(100 + n)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_entry_for_a_mac_wins_but_not_over_a_refused_one() {
    let Some(mut lab) = DirLab::start(43).await else {
        return;
    };
    lab.put_hosts("000a", &lab.reservation(1, 10));
    lab.wait_offered(lab.mac(1), lab.addr(10), Instant::now())
        .await;
    // Another file, later: its entry is newer.
    lab.put_hosts("000b", &lab.reservation(1, 11));
    lab.wait_offered(lab.mac(1), lab.addr(11), Instant::now())
        .await;
    // The first file rewritten: now its entry is the newest.
    lab.put_hosts("000a", &lab.reservation(1, 12));
    lab.wait_offered(lab.mac(1), lab.addr(12), Instant::now())
        .await;
    // An entry whose address an older entry holds is refused, so the newest loaded one stays.
    lab.put_hosts("000c", &lab.reservation(1, 11));
    lab.dhcp_barrier().await;
    assert_eq!(lab.offer(1).await, Some(lab.addr(12)));
    assert_eq!(lab.refusals(lab.addr(11)), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_line_is_served_until_sighup() {
    let Some(mut lab) = DirLab::start(44).await else {
        return;
    };
    let both = lab.reservation(1, 10) + &lab.reservation(2, 20);
    lab.put_hosts("0001", &both);
    lab.wait_offered(lab.mac(2), lab.addr(20), Instant::now())
        .await;
    lab.put_hosts("0001", &lab.reservation(1, 10));
    lab.dhcp_barrier().await;
    assert_eq!(lab.offer(2).await, Some(lab.addr(20)));
    assert_eq!(lab.offer(1).await, Some(lab.addr(10)));
    lab.sighup("removed-line").await;
    assert_eq!(lab.offer(2).await, None);
    assert_eq!(lab.offer(1).await, Some(lab.addr(10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_file_is_served_until_sighup() {
    let Some(mut lab) = DirLab::start(45).await else {
        return;
    };
    lab.put_hosts("0001", &lab.reservation(1, 10));
    lab.put_hosts("0002", &lab.reservation(2, 20));
    lab.wait_offered(lab.mac(2), lab.addr(20), Instant::now())
        .await;
    lab.wait_offered(lab.mac(1), lab.addr(10), Instant::now())
        .await;
    DirLab::remove(lab.lab.hosts_dir(), "0001");
    lab.dhcp_barrier().await;
    assert_eq!(lab.offer(1).await, Some(lab.addr(10)));
    lab.sighup("deleted-file").await;
    assert_eq!(lab.offer(1).await, None);
    assert_eq!(lab.offer(2).await, Some(lab.addr(20)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_moved_to_another_mac_is_refused_until_sighup() {
    let Some(mut lab) = DirLab::start(46).await else {
        return;
    };
    lab.put_hosts("0001", &lab.reservation(1, 10));
    lab.wait_offered(lab.mac(1), lab.addr(10), Instant::now())
        .await;
    // .10 moves from host 1 to host 2, in the same file and line.
    lab.put_hosts("0001", &lab.reservation(2, 10));
    lab.dhcp_barrier().await;
    assert_eq!(lab.refusals(lab.addr(10)), 1);
    assert_eq!(lab.offer(2).await, None, "refused: the old entry holds .10");
    assert_eq!(
        lab.offer(1).await,
        Some(lab.addr(10)),
        "the old entry lives"
    );
    lab.sighup("moved").await;
    assert_eq!(lab.offer(2).await, Some(lab.addr(10)));
    assert_eq!(lab.offer(1).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_changed_back_is_refused_until_sighup() {
    let Some(mut lab) = DirLab::start(47).await else {
        return;
    };
    lab.put_hosts("0001", &lab.reservation(1, 10));
    lab.wait_offered(lab.mac(1), lab.addr(10), Instant::now())
        .await;
    lab.put_hosts("0001", &lab.reservation(1, 11));
    lab.wait_offered(lab.mac(1), lab.addr(11), Instant::now())
        .await;
    // Back to .10: the first entry, dead but loaded, still holds it.
    lab.put_hosts("0001", &lab.reservation(1, 10));
    lab.dhcp_barrier().await;
    assert_eq!(lab.refusals(lab.addr(10)), 1);
    assert_eq!(lab.offer(1).await, Some(lab.addr(11)));
    lab.sighup("changed-back").await;
    assert_eq!(lab.offer(1).await, Some(lab.addr(10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_and_editor_files_are_ignored_and_other_temporary_files_are_read() {
    let Some(mut lab) = DirLab::start(48).await else {
        return;
    };
    let dir = lab.lab.hosts_dir();
    // Written in place (IN_CLOSE_WRITE), as an editor or a careless writer would.
    let files = [
        (".0001.tmp", 1),
        ("0002~", 2),
        ("#0003#", 3),
        ("0004.tmp", 4),
    ];
    for (name, n) in files {
        std::fs::write(dir.join(name), lab.reservation(n, 10 + n)).unwrap();
    }
    lab.dhcp_barrier().await;
    let expected = [None, None, None, Some(lab.addr(14))];
    for ((_, n), want) in files.into_iter().zip(expected) {
        assert_eq!(lab.offer(n).await, want, "host {n}");
    }
    // A full read skips the same files.
    lab.sighup("ignored").await;
    for ((_, n), want) in files.into_iter().zip(expected) {
        assert_eq!(lab.offer(n).await, want, "host {n} after SIGHUP");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostsdir_a_changed_name_replaces_the_files_old_names_without_a_signal() {
    let Some(lab) = DirLab::start(49).await else {
        return;
    };
    lab.put_names("0001", &lab.names_line(10, &DirLab::name(0)));
    lab.wait_resolves(&DirLab::name(0), &[lab.addr(10)], Instant::now())
        .await;
    let mut delays = Vec::new();
    for i in 1..=TRIES {
        // A rename (and a new address) in the same file.
        let (old, new) = (DirLab::name(i - 1), DirLab::name(i));
        let ip = 10 + i as u8;
        let start = Instant::now();
        lab.put_names("0001", &lab.names_line(ip, &new));
        delays.push(lab.wait_resolves(&new, &[lab.addr(ip)], start).await);
        assert_eq!(lab.resolve(&old).await, Vec::<Ipv4Addr>::new(), "{old}");
    }
    report(&format!(
        "hostsdir, name changed in a file (rename to the first answer with it): {}",
        summary(&mut delays)
    ));
    assert!(delays.iter().all(|d| *d < PICKUP_DEADLINE));
    // The reverse too: the address of the last change names only the last name.
    let last = lab.addr(10 + TRIES as u8);
    assert_eq!(
        lab.lab.reverse(last).await,
        vec![format!("{}.", DirLab::name(TRIES))]
    );
    assert_eq!(lab.lab.reverse(lab.addr(10)).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostsdir_a_deleted_file_loses_its_names_without_a_signal() {
    let Some(mut lab) = DirLab::start(50).await else {
        return;
    };
    let (kept, gone) = (DirLab::name(1), DirLab::name(2));
    lab.put_names("0001", &lab.names_line(10, &kept));
    lab.put_names("0002", &lab.names_line(20, &gone));
    lab.wait_resolves(&gone, &[lab.addr(20)], Instant::now())
        .await;
    lab.wait_resolves(&kept, &[lab.addr(10)], Instant::now())
        .await;
    let start = Instant::now();
    DirLab::remove(lab.lab.names_dir(), "0002");
    let delay = lab.wait_resolves(&gone, &[], start).await;
    report(&format!(
        "hostsdir, file deleted (unlink to the first answer without its name): {:.2} ms",
        delay.as_secs_f64() * 1000.0
    ));
    assert!(delay < PICKUP_DEADLINE);
    lab.dns_barrier().await;
    assert_eq!(lab.lab.reverse(lab.addr(20)).await, Vec::<String>::new());
    assert_eq!(lab.resolve(&kept).await, vec![lab.addr(10)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_reservations_address_stays_out_of_the_pool_until_sighup() {
    // A pool of one address, .10, reserved for host 1.
    let Some(mut lab) = DirLab::start_with_range(51, "10.99.51.10,10.99.51.10").await else {
        return;
    };
    lab.put_hosts("0001", &lab.reservation(1, 10));
    lab.wait_offered(lab.mac(1), lab.addr(10), Instant::now())
        .await;
    let stranger = lab.mac(9);
    assert_eq!(lab.dhcp.discover(stranger, POOL_OFFER).await, None);
    lab.put_hosts("0001", "");
    lab.dhcp_barrier().await;
    assert_eq!(
        lab.dhcp.discover(stranger, POOL_OFFER).await,
        None,
        "the dead entry still reserves .10"
    );
    lab.sighup("pool").await;
    assert_eq!(
        lab.dhcp.discover(stranger, POOL_OFFER).await,
        Some(lab.addr(10))
    );
}

/// dnsmasq pings a pool address before it offers it (up to 3 s without an answer).
const POOL_OFFER: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_renamed_before_it_is_closed_is_read_twice() {
    use std::io::Write as _;
    let Some(mut lab) = DirLab::start(52).await else {
        return;
    };
    let dir = lab.lab.hosts_dir();
    let reads = |lab: &DirLab, name: &str| {
        let line = format!(": read {}/{name}", dir.display());
        lab.lab.log().lines().filter(|l| l.ends_with(&line)).count()
    };
    // Closed, then renamed: IN_MOVED_TO only.
    lab.put_hosts("0001", &lab.reservation(1, 10));
    // Renamed while still open for writing, then closed: IN_MOVED_TO, then IN_CLOSE_WRITE
    // under the new name.
    let staged = dir.join(".0002.staged");
    let mut file = std::fs::File::create(&staged).unwrap();
    file.write_all(lab.reservation(2, 20).as_bytes()).unwrap();
    std::fs::rename(&staged, dir.join("0002")).unwrap();
    drop(file);
    lab.dhcp_barrier().await;
    assert_eq!(reads(&lab, "0001"), 1);
    assert_eq!(reads(&lab, "0002"), 2);
    // The second read refused the line it had just loaded.
    assert_eq!(lab.refusals(lab.addr(20)), 1);
    assert_eq!(lab.offer(2).await, Some(lab.addr(20)));
}
