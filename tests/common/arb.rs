//! Proptest strategies for snapshots, hostile values included, shared by the renderer's and the
//! planner's property tests: rows are mostly valid but sit on every edge the renderer must
//! refuse or survive.

use std::net::IpAddr;
use std::path::PathBuf;

use cidr::IpCidr;
use ipmanager::model::{Host, Snapshot, Subnet};
use proptest::prelude::*;
use proptest::sample::{select, Index};

/// An address relative to a subnet, so that generated rows are mostly valid but also sit on the
/// edges (network, broadcast, just outside), or anywhere at all.
#[derive(Debug, Clone, Copy)]
pub enum Addr {
    FromFirst(u32),
    FromLast(u32),
    Anywhere(IpAddr),
}

pub fn arb_addr() -> impl Strategy<Value = Addr> {
    prop_oneof![
        12 => (1u32..40).prop_map(Addr::FromFirst),
        1 => Just(Addr::FromFirst(0)),
        1 => (0u32..3).prop_map(Addr::FromLast),
        1 => any::<u32>().prop_map(Addr::FromFirst),
        1 => any::<IpAddr>().prop_map(Addr::Anywhere),
    ]
}

pub fn resolve(addr: &Addr, cidr: IpCidr) -> IpAddr {
    match (*addr, cidr.first_address(), cidr.last_address()) {
        (Addr::Anywhere(ip), _, _) => ip,
        (Addr::FromFirst(k), IpAddr::V4(first), _) => {
            IpAddr::V4(u32::from(first).wrapping_add(k).into())
        }
        (Addr::FromLast(k), _, IpAddr::V4(last)) => {
            IpAddr::V4(u32::from(last).wrapping_sub(k).into())
        }
        (Addr::FromFirst(k), IpAddr::V6(first), _) => {
            IpAddr::V6(u128::from(first).wrapping_add(u128::from(k)).into())
        }
        (Addr::FromLast(k), _, IpAddr::V6(last)) => {
            IpAddr::V6(u128::from(last).wrapping_sub(u128::from(k)).into())
        }
    }
}

pub fn v4_cidr(bits: u32, len: u8) -> IpCidr {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    IpCidr::new(IpAddr::V4((bits & mask).into()), len).unwrap()
}

pub fn v6_cidr(bits: u128, len: u8) -> IpCidr {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    IpCidr::new(IpAddr::V6((bits & mask).into()), len).unwrap()
}

pub fn arb_cidr() -> impl Strategy<Value = IpCidr> {
    prop_oneof![
        6 => (any::<u32>(), 22u8..=30).prop_map(|(b, l)| v4_cidr(b, l)),
        1 => (any::<u32>(), 31u8..=32).prop_map(|(b, l)| v4_cidr(b, l)),
        1 => (any::<u32>(), 0u8..=32).prop_map(|(b, l)| v4_cidr(b, l)),
        3 => (any::<u128>(), 64u8..=120).prop_map(|(b, l)| v6_cidr(b, l)),
        1 => (any::<u128>(), 0u8..=128).prop_map(|(b, l)| v6_cidr(b, l)),
        // Shared networks make overlapping subnets and duplicate addresses likely.
        1 => Just("10.0.0.0/24".parse().unwrap()),
        1 => Just(v6_cidr(0, 64)),
    ]
}

pub fn arb_name() -> impl Strategy<Value = String> {
    prop_oneof![
        24 => "[a-z][a-z0-9-]{0,8}[a-z0-9]",
        4 => "[a-zA-Z0-9-]{1,10}(\\.[a-zA-Z0-9-]{1,10}){1,3}",
        1 => "[\\x00-\\x7f]{0,24}",
        1 => "[a-z0-9\\n\\r\\t,# \\x00._\"\\\\=-]{0,16}",
        1 => any::<String>(),
        1 => "\\PC{0,40}",
        1 => "[a-z]{60,64}(\\.[a-z]{60,64}){2,4}",
        1 => "[a-z]{1000,1100}",
        1 => select(vec![
            "ignore", "Ignore", "infinite", "1", "12", "12h", "5m", "7D", "3w", "90s", "10.0.0.1",
            "1.2", "x", "a-", "-a", "a..b", "a.", ".a", "", "é", "a_b", "id:1", "set:x",
        ])
        .prop_map(String::from),
    ]
}

pub fn arb_domain() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        8 => "[a-z]{1,10}(\\.[a-z]{1,10}){0,2}",
        1 => "[a-z]{60,63}(\\.[a-z]{60,63}){1,3}",
        1 => arb_name(),
    ])
}

pub fn arb_lease() -> impl Strategy<Value = Option<i64>> {
    prop::option::of(prop_oneof![
        12 => 120i64..100_000,
        1 => 0i64..200,
        1 => 4_294_967_200i64..4_294_967_400,
        1 => any::<i64>(),
    ])
}

pub fn arb_mac() -> impl Strategy<Value = [u8; 6]> {
    prop_oneof![
        12 => any::<[u8; 6]>().prop_map(|mut mac| {
            mac[0] &= 0xfe;
            mac
        }),
        1 => any::<[u8; 6]>(),
        // A small pool, so that MACs repeat within and across subnets.
        2 => select(vec![
            [0x52, 0x54, 0, 0, 0, 1],
            [0x52, 0x54, 0, 0, 0, 2],
            [0x02, 0, 0, 0, 0, 3],
        ]),
        1 => select(vec![[0; 6], [1, 0, 0x5e, 0, 0, 1], [0xff; 6]]),
    ]
}

pub fn arb_path() -> impl Strategy<Value = PathBuf> {
    prop_oneof![
        4 => "/[a-z0-9/._+-]{1,40}",
        1 => "[\\x00-\\x7f]{0,40}",
        1 => "/[a-z]{890,910}",
        1 => "/\\PC{0,20}",
    ]
    .prop_map(PathBuf::from)
}

#[derive(Debug, Clone)]
pub struct SubnetSpec {
    cidr: IpCidr,
    range: Option<(Addr, Addr)>,
    gateway: Option<Addr>,
    lease_seconds: Option<i64>,
    domain: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HostSpec {
    /// Which generated subnet the host belongs to; `None` for an id that probably exists nowhere.
    subnet: Option<Index>,
    stray_subnet_id: i64,
    addr: Addr,
    mac: [u8; 6],
    hostname: String,
    lease_seconds: Option<i64>,
}

pub fn arb_subnet() -> impl Strategy<Value = SubnetSpec> {
    (
        arb_cidr(),
        prop::option::of(prop_oneof![
            4 => (1u32..20, 20u32..40).prop_map(|(a, b)| (Addr::FromFirst(a), Addr::FromFirst(b))),
            1 => (arb_addr(), arb_addr()),
        ]),
        prop::option::of(prop_oneof![4 => Just(Addr::FromFirst(1)), 1 => arb_addr()]),
        arb_lease(),
        arb_domain(),
    )
        .prop_map(|(cidr, range, gateway, lease_seconds, domain)| SubnetSpec {
            cidr,
            range,
            gateway,
            lease_seconds,
            domain,
        })
}

pub fn arb_host() -> impl Strategy<Value = HostSpec> {
    (
        prop::option::weighted(0.95, any::<Index>()),
        any::<i64>(),
        arb_addr(),
        arb_mac(),
        arb_name(),
        arb_lease(),
    )
        .prop_map(
            |(subnet, stray_subnet_id, addr, mac, hostname, lease_seconds)| HostSpec {
                subnet,
                stray_subnet_id,
                addr,
                mac,
                hostname,
                lease_seconds,
            },
        )
}

pub fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    (
        prop::collection::vec(arb_subnet(), 0..5),
        prop::collection::vec(arb_host(), 0..40),
        any::<i64>(),
        any::<i64>(),
        // A few rows share an id: ids are primary keys, but the renderer must not rely on it.
        prop::option::weighted(0.1, (any::<Index>(), any::<Index>())),
    )
        .prop_map(|(subnet_specs, host_specs, subnet_base, host_base, dup)| {
            let mut subnets: Vec<Subnet> = subnet_specs
                .iter()
                .enumerate()
                .map(|(i, s)| Subnet {
                    id: subnet_base.wrapping_add(i as i64),
                    cidr: s.cidr,
                    range: s
                        .range
                        .as_ref()
                        .map(|(a, b)| (resolve(a, s.cidr), resolve(b, s.cidr))),
                    gateway: s.gateway.as_ref().map(|g| resolve(g, s.cidr)),
                    lease_seconds: s.lease_seconds,
                    domain: s.domain.clone(),
                })
                .collect();
            if let (Some((a, b)), false) = (dup, subnets.is_empty()) {
                let id = subnets[a.index(subnets.len())].id;
                let target = b.index(subnets.len());
                subnets[target].id = id;
            }
            let hosts = host_specs
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let (subnet_id, ip) = match (&h.subnet, subnets.is_empty()) {
                        (Some(pick), false) => {
                            let s = &subnets[pick.index(subnets.len())];
                            (s.id, resolve(&h.addr, s.cidr))
                        }
                        _ => (h.stray_subnet_id, resolve(&h.addr, v4_cidr(0x0a00_0000, 8))),
                    };
                    Host {
                        id: host_base.wrapping_add(i as i64),
                        subnet_id,
                        mac: h.mac,
                        ip,
                        hostname: h.hostname.clone(),
                        lease_seconds: h.lease_seconds,
                    }
                })
                .collect();
            Snapshot { subnets, hosts }
        })
}

/// Deterministic Fisher–Yates with a xorshift generator: a permutation chosen by `seed`.
pub fn shuffled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
    let mut items = items.to_vec();
    let mut state = seed | 1;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
    items
}
