//! Which reservations a new hosts file adds, removes and changes compared with the old one; the
//! agent logs it once per write, naming the first few hosts of each kind and counting the rest.

use std::cmp::Ordering;

use super::HostChanges;

/// [`HostChanges`] with the first few hosts of each kind named, as `hostname (MAC)`, in MAC
/// order; what [`describe_host_changes`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostChangeDetails {
    pub counts: HostChanges,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Named as in the new file; a renamed host appears under its new name.
    pub changed: Vec<String>,
}

impl HostChangeDetails {
    /// `alpha (52:54:…), beta (52:54:…) and 3 more` for the added hosts; empty when none.
    pub fn added_text(&self) -> String {
        named_list(&self.added, self.counts.added)
    }

    pub fn removed_text(&self) -> String {
        named_list(&self.removed, self.counts.removed)
    }

    pub fn changed_text(&self) -> String {
        named_list(&self.changed, self.counts.changed)
    }
}

/// `names` joined with commas, then how many of `total` were left unnamed.
fn named_list(names: &[String], total: usize) -> String {
    let mut text = names.join(", ");
    if total > names.len() {
        if !names.is_empty() {
            text.push(' ');
        }
        text.push_str(&format!("and {} more", total - names.len()));
    }
    text
}

/// Compares two files holding reservations, either dhcp-hostsfile lines (`MAC,IP,name[,lease]`)
/// or a conf include whose `dhcp-host=` lines carry them; every other line is ignored. The two
/// may use different layouts: the prefix is dropped before comparing.
///
/// Reservations are keyed by their first field (the MAC). A MAC can legitimately appear more
/// than once (one reservation per subnet), so each key holds a multiset of lines: lines present
/// on both sides are unchanged, the remaining ones pair up as `changed`, and whatever is left
/// over counts as `added` or `removed`. With one line per key that is the plain definition.
pub fn summarize_host_changes(old: &str, new: &str) -> HostChanges {
    describe_host_changes(old, new, 0).counts
}

/// [`summarize_host_changes`], naming up to `named` hosts of each kind.
pub fn describe_host_changes(old: &str, new: &str, named: usize) -> HostChangeDetails {
    // Lines both files share at their start and end pair up as unchanged whatever their key,
    // and for a one-row change in 100,000 that is nearly everything: leave them out.
    let (old, new) = strip_common_lines(old, new);
    let old = reservations(old);
    let new = reservations(new);
    let mut details = HostChangeDetails::default();
    let note = |names: &mut Vec<String>, line: &str| {
        if names.len() < named {
            names.push(label(line));
        }
    };
    // Reused for every key: a rewrite of 100,000 lines allocates them once.
    let (mut gone, mut came) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    loop {
        let key = match (old.get(i), new.get(j)) {
            (None, None) => break,
            (Some(o), None) => o.0,
            (None, Some(n)) => n.0,
            (Some(o), Some(n)) => o.0.min(n.0),
        };
        let old_group = group(&old[i..], key);
        let new_group = group(&new[j..], key);
        i += old_group.len();
        j += new_group.len();
        unshared(old_group, new_group, &mut gone, &mut came);
        let changed = gone.len().min(came.len());
        details.counts.changed += changed;
        details.counts.removed += gone.len() - changed;
        details.counts.added += came.len() - changed;
        for line in &came[..changed] {
            note(&mut details.changed, line);
        }
        for line in &gone[changed..] {
            note(&mut details.removed, line);
        }
        for line in &came[changed..] {
            note(&mut details.added, line);
        }
    }
    details
}

/// `hostname (MAC)` of a reservation line `[id:…,]MAC[,MAC…][,set:…],IP,hostname[,lease]` (its
/// first MAC, and the field after the address); the line itself when it has no such fields.
fn label(line: &str) -> String {
    let address =
        |f: &&str| f.starts_with('[') || f.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let mut fields = line.split(',').skip_while(|f| f.starts_with("id:"));
    let mac = fields.next();
    let hostname = fields.skip_while(|f| !address(f)).nth(1);
    match (mac, hostname) {
        (Some(mac), Some(hostname)) => format!("{hostname} ({mac})"),
        _ => line.to_owned(),
    }
}

/// `old` and `new` without the whole lines they share at the start and at the end.
fn strip_common_lines<'a>(old: &'a str, new: &'a str) -> (&'a str, &'a str) {
    let prefix = old
        .split_inclusive('\n')
        .zip(new.split_inclusive('\n'))
        .take_while(|(a, b)| a == b && a.ends_with('\n'))
        .map(|(a, _)| a.len())
        .sum::<usize>();
    let (old, new) = (&old[prefix..], &new[prefix..]);
    let suffix = old
        .split_inclusive('\n')
        .rev()
        .zip(new.split_inclusive('\n').rev())
        .take_while(|(a, b)| a == b && a.ends_with('\n'))
        .map(|(a, _)| a.len())
        .sum::<usize>()
        .min(old.len().min(new.len()));
    (&old[..old.len() - suffix], &new[..new.len() - suffix])
}

/// `(key, line)` for every reservation line, sorted so that equal keys are adjacent and each
/// key's lines are in order.
fn reservations(text: &str) -> Vec<(&str, &str)> {
    let mut entries: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let body = match line.strip_prefix("dhcp-host=") {
                Some(body) => body,
                // Comments, every other `option=value` line of a conf include and its bare
                // options (`enable-ra`): a reservation has commas.
                None if line.starts_with('#') || line.contains('=') || !line.contains(',') => {
                    return None
                }
                None => line,
            };
            // The first MAC, after the client identifier if any.
            let key = body
                .split(',')
                .find(|f| !f.starts_with("id:"))
                .unwrap_or(body);
            Some((key, body))
        })
        .collect();
    entries.sort_unstable();
    entries
}

/// The leading run of `entries` with `key`.
fn group<'a, 'b>(entries: &'b [(&'a str, &'a str)], key: &str) -> &'b [(&'a str, &'a str)] {
    let len = entries.iter().take_while(|e| e.0 == key).count();
    &entries[..len]
}

/// The lines of two sorted groups that the other lacks, counting repeats (multiset
/// differences): `a`'s into `only_a`, `b`'s into `only_b`, both in order.
fn unshared<'a>(
    a: &[(&str, &'a str)],
    b: &[(&str, &'a str)],
    only_a: &mut Vec<&'a str>,
    only_b: &mut Vec<&'a str>,
) {
    only_a.clear();
    only_b.clear();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].1.cmp(b[j].1) {
            Ordering::Less => {
                only_a.push(a[i].1);
                i += 1;
            }
            Ordering::Greater => {
                only_b.push(b[j].1);
                j += 1;
            }
            Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    only_a.extend(a[i..].iter().map(|e| e.1));
    only_b.extend(b[j..].iter().map(|e| e.1));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(added: usize, removed: usize, changed: usize) -> HostChanges {
        HostChanges {
            added,
            removed,
            changed,
        }
    }

    const A: &str = "52:54:00:00:00:0a,10.0.0.10,alpha";
    const B: &str = "52:54:00:00:00:0b,10.0.0.11,beta";
    const C: &str = "52:54:00:00:00:0c,10.0.0.12,gamma,3600";

    #[test]
    fn identical_and_empty_files_have_no_changes() {
        let text = format!("{A}\n{B}\n{C}\n");
        assert_eq!(summarize_host_changes(&text, &text), changes(0, 0, 0));
        assert_eq!(summarize_host_changes("", ""), changes(0, 0, 0));
    }

    #[test]
    fn counts_added_removed_and_changed_by_mac() {
        let old = format!("{A}\n{B}\n");
        let new = format!("{B}\n{B}\n{C}\n");
        // B stays, a second B line appears, C is new, A is gone.
        assert_eq!(summarize_host_changes(&old, &new), changes(2, 1, 0));
        let moved = "52:54:00:00:00:0a,10.0.0.99,alpha\n";
        assert_eq!(summarize_host_changes(&old, moved), changes(0, 1, 1));
        assert_eq!(summarize_host_changes("", &old), changes(2, 0, 0));
        assert_eq!(summarize_host_changes(&old, ""), changes(0, 2, 0));
    }

    #[test]
    fn a_change_deep_inside_a_large_file_is_found() {
        let line = |i: usize| {
            format!(
                "02:00:00:00:{:02x}:{:02x},10.0.{}.{},h{i}\n",
                i / 256,
                i % 256,
                i / 250,
                i % 250 + 1
            )
        };
        let old: String = (0..1000).map(line).collect();
        let mut new: String = (0..1000)
            .map(|i| {
                if i == 500 {
                    line(500).replace(",h500", ",renamed")
                } else {
                    line(i)
                }
            })
            .collect();
        assert_eq!(summarize_host_changes(&old, &new), changes(0, 0, 1));
        new.push_str(&line(1000));
        assert_eq!(summarize_host_changes(&old, &new), changes(1, 0, 1));
        assert_eq!(summarize_host_changes(&new, &old), changes(0, 1, 1));
    }

    #[test]
    fn order_does_not_matter() {
        let old = format!("{A}\n{B}\n{C}\n");
        let new = format!("{C}\n{A}\n{B}\n");
        assert_eq!(summarize_host_changes(&old, &new), changes(0, 0, 0));
    }

    #[test]
    fn repeated_macs_pair_up_before_counting_additions() {
        // The same MAC in two subnets; one reservation moves, one subnet is added.
        let old = "52:54:00:00:00:0a,10.0.0.10,alpha\n52:54:00:00:00:0a,10.0.1.10,alpha\n";
        let new = "52:54:00:00:00:0a,10.0.0.10,alpha\n52:54:00:00:00:0a,10.0.1.20,alpha\n\
                   52:54:00:00:00:0a,10.0.2.10,alpha\n";
        assert_eq!(summarize_host_changes(old, new), changes(1, 0, 1));
    }

    #[test]
    fn names_the_first_hosts_of_each_kind_and_counts_the_rest() {
        let old = format!("{A}\n{B}\n");
        let new = format!("52:54:00:00:00:0a,10.0.0.99,alpha\n{C}\n");
        let details = describe_host_changes(&old, &new, 5);
        assert_eq!(details.counts, changes(1, 1, 1));
        assert_eq!(details.added, ["gamma (52:54:00:00:00:0c)"]);
        assert_eq!(details.removed, ["beta (52:54:00:00:00:0b)"]);
        assert_eq!(details.changed, ["alpha (52:54:00:00:00:0a)"]);
        assert_eq!(details.added_text(), "gamma (52:54:00:00:00:0c)");

        let many: String = (0..8)
            .map(|i| format!("52:54:00:00:01:{i:02x},10.0.1.{i},h{i}\n"))
            .collect();
        let details = describe_host_changes("", &many, 3);
        assert_eq!(details.counts, changes(8, 0, 0));
        assert_eq!(
            details.added_text(),
            "h0 (52:54:00:00:01:00), h1 (52:54:00:00:01:01), h2 (52:54:00:00:01:02) and 5 more"
        );
        assert_eq!(details.removed_text(), "");
        assert_eq!(
            describe_host_changes("", &many, 0).added_text(),
            "and 8 more"
        );
    }

    #[test]
    fn a_renamed_host_is_changed_under_its_new_name_in_a_conf_include() {
        let old = format!("dhcp-host={A}\n");
        let new = "dhcp-host=52:54:00:00:00:0a,10.0.0.10,omega\n";
        let details = describe_host_changes(&old, new, 5);
        assert_eq!(details.counts, changes(0, 0, 1));
        assert_eq!(details.changed_text(), "omega (52:54:00:00:00:0a)");
    }

    #[test]
    fn reads_conf_includes_and_ignores_other_lines() {
        let conf = format!(
            "# Managed by ipmanager\n# subnet 1 10.0.0.0/24\n\
             dhcp-range=set:subnet1,10.0.0.100,10.0.0.199,255.255.255.0\n\
             domain=lan,10.0.0.0/24\ndhcp-host={A}\ndhcp-host={B}\n\
             host-record=alpha.lan,alpha,10.0.0.10\n\n"
        );
        let hostsfile = format!("{A}\n{B}\n");
        assert_eq!(summarize_host_changes(&hostsfile, &conf), changes(0, 0, 0));
        assert_eq!(summarize_host_changes("", &conf), changes(2, 0, 0));
        let include = "dhcp-hostsfile=/var/lib/ipmanager/dhcp-hosts\naddn-hosts=/x\nenable-ra\n";
        assert_eq!(summarize_host_changes("", include), changes(0, 0, 0));
    }

    #[test]
    fn a_line_with_an_identifier_and_several_macs_is_keyed_and_named_by_its_first_mac() {
        let old = "52:54:00:00:00:0a,10.0.0.10,alpha\n";
        let new = "id:01:52:54:00:00:00:0a,52:54:00:00:00:0a,52:54:00:00:00:0b,[fd00::10],alpha\n";
        let details = describe_host_changes(old, new, 5);
        assert_eq!(details.counts, changes(0, 0, 1));
        assert_eq!(details.changed_text(), "alpha (52:54:00:00:00:0a)");
    }
}
