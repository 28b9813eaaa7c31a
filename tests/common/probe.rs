//! Probes of what dnsmasq serves, from the lab's client namespace, without starting a program
//! per question: DHCPDISCOVERs with any client MAC (answered by the OFFER's address) and DNS A
//! queries. A DISCOVER makes dnsmasq create no lease, so sampling many MACs leaves its lease
//! state (and therefore what it offers next) untouched. Each prober has one socket; replies are
//! matched to questions by their transaction id, so probes may run concurrently and a late
//! reply is never taken for a newer question's.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::netns::Lab;

/// How long one question waits for its answer: dnsmasq answers in about a millisecond unless
/// it is busy re-reading its files.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// DISCOVERs per [`DhcpProber::offer`] before it concludes that nothing is offered.
const ATTEMPTS: usize = 3;
/// Probes in flight in [`DhcpProber::offers`]: dnsmasq's receive buffer holds a few hundred
/// packets, and a dropped DISCOVER would look like "nothing offered".
const IN_FLIGHT: usize = 32;

const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
const DHCPDISCOVER: u8 = 1;
const DHCPOFFER: u8 = 2;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname, file.
const FIXED_LEN: usize = 236;

/// Questions awaiting their answer, by transaction id.
type Waiting<T> = Arc<Mutex<HashMap<u32, oneshot::Sender<T>>>>;

/// One UDP socket in the client namespace and the questions asked on it.
struct Exchange<T> {
    socket: Arc<UdpSocket>,
    waiting: Waiting<T>,
    next_id: AtomicU32,
    /// Bits of a transaction id the protocol carries (DNS: 16).
    id_mask: u32,
    receiver: JoinHandle<()>,
}

impl<T: Send + 'static> Exchange<T> {
    /// `parse` turns a packet into its transaction id and answer, or rejects it.
    fn new(
        socket: std::net::UdpSocket,
        id_mask: u32,
        parse: fn(&[u8]) -> Option<(u32, T)>,
    ) -> Exchange<T> {
        let socket = Arc::new(UdpSocket::from_std(socket).expect("a tokio UDP socket"));
        let waiting = Waiting::default();
        let receiver = tokio::spawn(receive(Arc::clone(&socket), Arc::clone(&waiting), parse));
        // Transaction ids differ between processes, so that replies to a prober of another
        // test binary are not taken for this one's.
        let first_id = std::process::id().wrapping_mul(0x9E37_79B9);
        Exchange {
            socket,
            waiting,
            next_id: AtomicU32::new(first_id),
            id_mask,
            receiver,
        }
    }

    /// Sends the packet `build(id)` builds to `to`: its answer, or `None` after `timeout`.
    async fn ask(
        &self,
        to: SocketAddr,
        timeout: Duration,
        build: impl FnOnce(u32) -> Vec<u8>,
    ) -> Option<T> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) & self.id_mask;
        let (sender, answered) = oneshot::channel();
        self.waiting.lock().unwrap().insert(id, sender);
        self.socket
            .send_to(&build(id), to)
            .await
            .unwrap_or_else(|e| panic!("cannot send to {to}: {e}"));
        let result = tokio::time::timeout(timeout, answered).await;
        self.waiting.lock().unwrap().remove(&id);
        result.ok().and_then(Result::ok)
    }
}

impl<T> Drop for Exchange<T> {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

/// Hands every answer to the question waiting for its transaction id.
async fn receive<T>(
    socket: Arc<UdpSocket>,
    waiting: Waiting<T>,
    parse: fn(&[u8]) -> Option<(u32, T)>,
) {
    let mut buffer = [0u8; 1500];
    loop {
        let Ok((len, _)) = socket.recv_from(&mut buffer).await else {
            continue;
        };
        if let Some((id, answer)) = parse(&buffer[..len]) {
            if let Some(sender) = waiting.lock().unwrap().remove(&id) {
                let _ = sender.send(answer);
            }
        }
    }
}

/// A UDP socket in the lab's client namespace, bound to `local` on the client interface.
fn client_socket(lab: &Lab, local: SocketAddr) -> std::net::UdpSocket {
    let interface = lab.client_if.clone();
    let open = move || -> std::io::Result<std::net::UdpSocket> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        // Port 68 is shared with a DHCP client there: both see the broadcast OFFERs.
        socket.set_reuse_address(true)?;
        socket.set_broadcast(true)?;
        socket.bind_device(Some(interface.as_bytes()))?;
        socket.bind(&local.into())?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    };
    lab.in_client_ns(open)
        .unwrap_or_else(|e| panic!("cannot open a probe socket on {local}: {e}"))
}

/// DHCPDISCOVERs; see the module documentation. Cheap to clone: clones share the socket.
#[derive(Clone)]
pub struct DhcpProber {
    exchange: Arc<Exchange<Ipv4Addr>>,
}

impl DhcpProber {
    pub fn new(lab: &Lab) -> DhcpProber {
        let socket = client_socket(lab, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)));
        DhcpProber {
            exchange: Arc::new(Exchange::new(socket, u32::MAX, parse_offer)),
        }
    }

    /// One DISCOVER for `mac`: the offered address, or `None` when no OFFER came within
    /// `timeout`.
    pub async fn discover(&self, mac: [u8; 6], timeout: Duration) -> Option<Ipv4Addr> {
        let server = SocketAddr::from((Ipv4Addr::BROADCAST, 67));
        self.exchange
            .ask(server, timeout, |xid| discover_packet(xid, mac))
            .await
    }

    /// What dnsmasq offers `mac`: up to three DISCOVERs of [`PROBE_TIMEOUT`] each, so that a
    /// lost packet does not pass for "nothing offered".
    pub async fn offer(&self, mac: [u8; 6]) -> Option<Ipv4Addr> {
        for _ in 0..ATTEMPTS {
            if let Some(ip) = self.discover(mac, PROBE_TIMEOUT).await {
                return Some(ip);
            }
        }
        None
    }

    /// [`DhcpProber::offer`] for every MAC, a few dozen at a time; results in the order of
    /// `macs`.
    pub async fn offers(&self, macs: &[[u8; 6]]) -> Vec<Option<Ipv4Addr>> {
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut probes = JoinSet::new();
        for (i, &mac) in macs.iter().enumerate() {
            let permit = Arc::clone(&slots).acquire_owned().await.unwrap();
            let prober = self.clone();
            probes.spawn(async move {
                let offered = prober.offer(mac).await;
                drop(permit);
                (i, offered)
            });
        }
        let mut results = vec![None; macs.len()];
        while let Some(done) = probes.join_next().await {
            let (i, offered) = done.expect("a probe task");
            results[i] = offered;
        }
        results
    }
}

/// A DHCPDISCOVER from `mac` with the broadcast flag: the OFFER comes back as a broadcast, which
/// reaches the prober although its interface has another MAC.
fn discover_packet(xid: u32, mac: [u8; 6]) -> Vec<u8> {
    let mut packet = vec![0u8; FIXED_LEN];
    packet[..4].copy_from_slice(&[BOOTREQUEST, 1, 6, 0]);
    packet[4..8].copy_from_slice(&xid.to_be_bytes());
    packet[10..12].copy_from_slice(&0x8000u16.to_be_bytes());
    packet[28..34].copy_from_slice(&mac);
    packet.extend_from_slice(&MAGIC_COOKIE);
    packet.extend_from_slice(&[53, 1, DHCPDISCOVER, 255]);
    // BOOTP's minimum size, which some servers insist on.
    packet.resize(300, 0);
    packet
}

/// An OFFER's transaction id and yiaddr; `None` for anything else.
fn parse_offer(packet: &[u8]) -> Option<(u32, Ipv4Addr)> {
    if packet.len() < FIXED_LEN + 4
        || packet[0] != BOOTREPLY
        || packet[FIXED_LEN..FIXED_LEN + 4] != MAGIC_COOKIE
    {
        return None;
    }
    let xid = u32::from_be_bytes(packet[4..8].try_into().ok()?);
    let yiaddr = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    let mut options = &packet[FIXED_LEN + 4..];
    while let [code, rest @ ..] = options {
        match (*code, rest) {
            (0, _) => options = rest,
            (53, [1, kind, ..]) => return (*kind == DHCPOFFER).then_some((xid, yiaddr)),
            (255, _) => return None,
            (_, [len, rest @ ..]) => options = rest.get(usize::from(*len)..)?,
            _ => return None,
        }
    }
    None
}

/// DNS A queries to the lab's dnsmasq. Cheap to clone: clones share the socket.
#[derive(Clone)]
pub struct DnsProber {
    exchange: Arc<Exchange<Vec<Ipv4Addr>>>,
    server: SocketAddr,
}

impl DnsProber {
    pub fn new(lab: &Lab) -> DnsProber {
        let socket = client_socket(lab, SocketAddr::from((lab.client_ip, 0)));
        DnsProber {
            exchange: Arc::new(Exchange::new(socket, 0xFFFF, parse_a_answer)),
            server: SocketAddr::from((lab.server_ip, 53)),
        }
    }

    /// The A records dnsmasq answers for `name` (empty for NXDOMAIN or no data), or `None`
    /// when no answer came within `timeout`.
    pub async fn query(&self, name: &str, timeout: Duration) -> Option<Vec<Ipv4Addr>> {
        self.exchange
            .ask(self.server, timeout, |id| a_query(id as u16, name))
            .await
    }
}

/// A recursive query for `name`'s A records.
fn a_query(id: u16, name: &str) -> Vec<u8> {
    let mut query = Vec::with_capacity(64);
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

/// A response's id and its A records.
fn parse_a_answer(packet: &[u8]) -> Option<(u32, Vec<Ipv4Addr>)> {
    let header = packet.get(..12)?;
    if header[2] & 0x80 == 0 {
        return None;
    }
    let count = |at: usize| usize::from(u16::from_be_bytes([header[at], header[at + 1]]));
    let mut at = 12;
    for _ in 0..count(4) {
        at = skip_name(packet, at)? + 4;
    }
    let mut addresses = Vec::new();
    for _ in 0..count(6) {
        at = skip_name(packet, at)?;
        let fixed = packet.get(at..at + 10)?;
        let rdlength = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let rdata = packet.get(at + 10..at + 10 + rdlength)?;
        if fixed[..4] == [0, 1, 0, 1] && rdlength == 4 {
            addresses.push(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]));
        }
        at += 10 + rdlength;
    }
    Some((
        u32::from(u16::from_be_bytes([header[0], header[1]])),
        addresses,
    ))
}

/// The offset after the (possibly compressed) name at `at`.
fn skip_name(packet: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *packet.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => return Some(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}

/// `aa:bb:cc:dd:ee:ff` as bytes.
pub fn parse_mac(text: &str) -> [u8; 6] {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("bad MAC {text:?}")))
        .collect();
    bytes
        .try_into()
        .unwrap_or_else(|_| panic!("bad MAC {text:?}"))
}

/// Bytes as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}
