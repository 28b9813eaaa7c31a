//! Delta reads at the model level: a snapshot patched, transaction after transaction, with the
//! rows of the changed ids alone (what `ipmanager.hosts_changed_since` and the by-id read give)
//! equals a full read of the same table, and renders to exactly the same files in every layout,
//! whatever the changes (inserts, updates that move hosts in and out of the agent's scope,
//! deletes, disabling) and however transactions are grouped between reads.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use ipmanager::model::{Host, Snapshot};
use ipmanager::render::{render_scoped, Layout, LayoutKind};
use proptest::prelude::*;
use proptest::sample::Index;

mod common;

use common::arb::{arb_addr, arb_mac, arb_name, arb_snapshot, resolve, Addr};

/// The table: every row, enabled or not, in or out of the agent's scope.
#[derive(Debug, Clone)]
struct Table {
    rows: Vec<(Host, bool)>,
    /// Subnets the agent's scope covers (the others' hosts are not read).
    scope: BTreeSet<i64>,
    next_id: i64,
}

impl Table {
    /// What a full read returns (the HOSTS query's filter).
    fn read<'a>(&'a self, ids: Option<&'a HashSet<i64>>) -> impl Iterator<Item = Host> + 'a {
        self.rows
            .iter()
            .filter(move |(h, enabled)| *enabled && self.scope.contains(&h.subnet_id))
            .filter(move |(h, _)| ids.is_none_or(|ids| ids.contains(&h.id)))
            .map(|(h, _)| h.clone())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert(Change),
    Update(Index, Change),
    Delete(Index),
    Toggle(Index),
}

/// New values for a row.
#[derive(Debug, Clone)]
struct Change {
    subnet: Index,
    addr: Addr,
    mac: [u8; 6],
    hostname: String,
}

fn arb_change() -> impl Strategy<Value = Change> {
    (any::<Index>(), arb_addr(), arb_mac(), arb_name()).prop_map(|(subnet, addr, mac, hostname)| {
        Change {
            subnet,
            addr,
            mac,
            hostname,
        }
    })
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => arb_change().prop_map(Op::Insert),
        3 => (any::<Index>(), arb_change()).prop_map(|(at, c)| Op::Update(at, c)),
        1 => any::<Index>().prop_map(Op::Delete),
        1 => any::<Index>().prop_map(Op::Toggle),
    ]
}

/// Applies `op` to `table`, adding the ids it touched to `changed`.
fn apply(table: &mut Table, subnets: &Snapshot, op: &Op, changed: &mut HashSet<i64>) {
    let place = |host: &mut Host, c: &Change| {
        if !subnets.subnets.is_empty() {
            let s = &subnets.subnets[c.subnet.index(subnets.subnets.len())];
            host.subnet_id = s.id;
            host.ip = resolve(&c.addr, s.cidr);
        }
        host.mac = c.mac;
        host.hostname.clone_from(&c.hostname);
    };
    let len = table.rows.len();
    match op {
        Op::Insert(c) => {
            let mut host = Host {
                id: table.next_id,
                subnet_id: 0,
                mac: [0; 6],
                ip: [0, 0, 0, 0].into(),
                hostname: String::new(),
                lease_seconds: None,
            };
            table.next_id += 1;
            place(&mut host, c);
            changed.insert(host.id);
            table.rows.push((host, true));
        }
        _ if len == 0 => {}
        Op::Update(at, c) => {
            let row = &mut table.rows[at.index(len)];
            place(&mut row.0, c);
            changed.insert(row.0.id);
        }
        Op::Delete(at) => {
            changed.insert(table.rows.remove(at.index(len)).0.id);
        }
        Op::Toggle(at) => {
            let row = &mut table.rows[at.index(len)];
            row.1 = !row.1;
            changed.insert(row.0.id);
        }
    }
}

fn sorted(snapshot: &Snapshot) -> Vec<Host> {
    let mut hosts = snapshot.hosts.clone();
    hosts.sort_by_key(|h| h.id);
    hosts
}

fn layout(kind: LayoutKind) -> Layout {
    Layout {
        kind,
        hosts_file: PathBuf::from("/h/dhcp-hosts"),
        addn_hosts_file: PathBuf::from("/h/hosts"),
        hosts_dir: PathBuf::from("/h/dhcp-hosts.d"),
        names_dir: PathBuf::from("/h/hosts.d"),
        shards: 7,
        names_shards: 7,
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn patched_snapshots_equal_full_reads_and_render_the_same_files(
        initial in arb_snapshot(),
        scope_picks in prop::collection::vec(any::<bool>(), 5),
        // Transactions (each a few operations), each followed by a delta read or not.
        transactions in prop::collection::vec(
            (prop::collection::vec(arb_op(), 1..4), any::<bool>()), 1..12),
    ) {
        let scope = initial.subnets.iter().zip(&scope_picks)
            .filter(|(_, served)| **served).map(|(s, _)| s.id).collect();
        let next_id = initial.hosts.iter().map(|h| h.id).max().unwrap_or(0).saturating_add(1);
        let mut table = Table {
            rows: initial.hosts.iter().map(|h| (h.clone(), true)).collect(),
            scope,
            next_id,
        };
        let full = |t: &Table| Snapshot { subnets: initial.subnets.clone(), hosts: t.read(None).collect(), ..Snapshot::default() };
        let mut last = full(&table);
        let mut changed = HashSet::new();
        for (ops, read) in &transactions {
            for op in ops {
                apply(&mut table, &initial, op, &mut changed);
            }
            if !read {
                continue;
            }
            last.patch(&changed, table.read(Some(&changed)).collect(), Vec::new(), Vec::new());
            changed.clear();
            let expected = full(&table);
            prop_assert_eq!(sorted(&last), sorted(&expected));
            for kind in [LayoutKind::Hostsfile, LayoutKind::Conf, LayoutKind::Incremental] {
                prop_assert_eq!(
                    render_scoped(&last, &layout(kind), &[]),
                    render_scoped(&expected, &layout(kind), &[])
                );
            }
        }
    }
}
