//! CPU benchmark of the incremental layout's per-change path without a database: the snapshot
//! of `benches/incremental.rs` (one /8 subnet with a domain, hosts `h1..hN`, 1,024 shards),
//! then one host renamed per round, patched in as a delta read does: the full render of the
//! patched snapshot, the render derived from the previous one (`render::Previous::update`, what
//! the agent does), the planner, and the reservations dnsmasq then serves
//! (`Loaded::served_reservations`, which the agent reads after every change when it releases
//! leases, its default), each timed. `IPMANAGER_BENCH_SIZES` (default 10000,100000) and `IPMANAGER_BENCH_CHANGES` (default
//! 50) set the sizes and rounds; `cargo bench --bench render`. Deterministic, so that
//! `valgrind --tool=callgrind` on it with `IPMANAGER_BENCH_CHANGES=1` counts repeatable
//! instructions.

#[allow(dead_code)] // shared by every benchmark; this one uses only part of it
mod support;

use std::collections::HashSet;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use ipmanager::model::{Host, Snapshot, Subnet};
use ipmanager::plan::{self, Loaded};
use ipmanager::render::{self, Layout, LayoutKind};
use support::{env_or, ms, sizes_from_env, stats};

fn main() {
    let sizes = sizes_from_env("IPMANAGER_BENCH_SIZES", "10000,100000");
    let changes: usize = env_or("IPMANAGER_BENCH_CHANGES", 50);
    let layout = Layout {
        kind: LayoutKind::Incremental,
        hosts_file: "/unused".into(),
        addn_hosts_file: "/unused".into(),
        hosts_dir: "/var/lib/ipmanager/dhcp-hosts.d".into(),
        names_dir: "/var/lib/ipmanager/hosts.d".into(),
        shards: 1024,
        names_shards: 4096,
    };
    println!(
        "| Hosts | full render median / p99 (ms) | derived render median / p99 (ms) | plan median / p99 (ms) | served reservations median / p99 (ms) |"
    );
    println!("|---|---|---|---|---|");
    for hosts in sizes {
        let mut snapshot = snapshot(hosts);
        let (rendered, previous) = render::Previous::render(&snapshot, &layout, &[]);
        let mut previous = previous.expect("the incremental layout keeps its render");
        let mut model = Loaded::full_read(rendered.sharded.unwrap_or_default());
        let (mut full_times, mut render_times, mut plan_times, mut served_times) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..changes {
            let at = i * 7919 % hosts;
            let host = Host {
                hostname: format!("c{i}"),
                ..snapshot.hosts[at].clone()
            };
            let changed = HashSet::from([host.id]);
            let replaced = snapshot.patch(&changed, vec![host], Vec::new(), Vec::new());
            let start = Instant::now();
            let full = black_box(render::render(&snapshot, &layout));
            full_times.push(start.elapsed());
            let start = Instant::now();
            let rendered = previous.update(&snapshot, &layout, &[], &replaced);
            render_times.push(start.elapsed());
            assert!(rendered == full, "the derived render is the full one");
            let start = Instant::now();
            let plan = plan::plan(&model, rendered.sharded.unwrap_or_default());
            plan_times.push(start.elapsed());
            assert_eq!(plan.dhcp.len(), 1, "one reservation shard changes");
            model = plan.after;
            let start = Instant::now();
            black_box(model.served_reservations());
            served_times.push(start.elapsed());
        }
        let (f, r) = (stats(&full_times), stats(&render_times));
        let (p, s) = (stats(&plan_times), stats(&served_times));
        println!(
            "| {hosts} | {} / {} | {} / {} | {} / {} | {} / {} |",
            ms(f.median),
            ms(f.p99),
            ms(r.median),
            ms(r.p99),
            ms(p.median),
            ms(p.p99),
            ms(s.median),
            ms(s.p99)
        );
    }
}

/// `hosts` hosts as `benches/incremental.rs` inserts them, in id order.
fn snapshot(hosts: usize) -> Snapshot {
    let subnet = Subnet {
        id: 1,
        cidr: "10.0.0.0/8".parse().unwrap(),
        range: Some((
            "10.255.0.1".parse().unwrap(),
            "10.255.0.250".parse().unwrap(),
        )),
        gateway: Some("10.0.0.1".parse().unwrap()),
        lease_seconds: None,
        domain: Some("bench.lan".to_owned()),
    };
    let hosts = (1..=hosts as u32)
        .map(|i| {
            let b = i.to_be_bytes();
            Host {
                id: i64::from(i),
                subnet_id: 1,
                mac: [0x02, 0, b[0], b[1], b[2], b[3]],
                ip: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 65_536 + i)),
                hostname: format!("h{i}"),
                lease_seconds: None,
            }
        })
        .collect();
    Snapshot {
        subnets: vec![subnet],
        hosts,
        ..Default::default()
    }
}
