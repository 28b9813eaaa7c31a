//! What the benchmarks share: settings from the environment, the median/p99 summary and log
//! lines without colour codes.

use std::time::Duration;

/// `name` parsed from the environment, or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Host counts to measure: a comma-separated list in `name`, else `default`.
pub fn sizes_from_env(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}: comma-separated numbers"))
        })
        .collect()
}

/// Median and 99th percentile of a set of samples.
#[derive(Clone, Copy)]
pub struct Stats {
    pub median: Duration,
    pub p99: Duration,
}

/// Summarises `samples`; no samples give zeros.
pub fn stats(samples: &[Duration]) -> Stats {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Stats {
            median: Duration::ZERO,
            p99: Duration::ZERO,
        };
    }
    let at = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        median: at(0.5),
        p99: at(0.99),
    }
}

/// Milliseconds with two decimals, for the tables.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// A log line without its ANSI colour codes (the agent colours its fields).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A `key=<number><unit>` duration from an agent's debug line (as Rust's Debug of a Duration
/// prints it), ANSI colours ignored.
pub fn field_duration(line: &str, key: &str) -> Option<Duration> {
    let plain: String = strip_ansi(line);
    let start = plain.find(key)? + key.len();
    let value = plain[start..].split_whitespace().next()?;
    let split = value.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => number,
        "ms" => number / 1e3,
        "µs" | "us" => number / 1e6,
        "ns" => number / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}
