//! How listings are printed: aligned plain-text tables that fit the terminal (80 columns when
//! it cannot be measured), or JSON for scripts.

use std::io::{ErrorKind, Write};

use comfy_table::{presets, Cell, ColumnConstraint, ContentArrangement, Table};
use serde::Serialize;

/// The reader of standard output went away (`ipmanager export | head -1`): the command stops
/// and exits 0 without a word, as ripgrep does.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct StdoutClosed;

/// Writes `text` to standard output. Unlike `print!`, which panics, a closed pipe becomes
/// [`StdoutClosed`] and any other failure an I/O error (exit 74).
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// What a failed write to standard output means for the command: see [`print`].
pub fn stdout_error(error: std::io::Error) -> anyhow::Error {
    match error.kind() {
        ErrorKind::BrokenPipe => anyhow::Error::new(StdoutClosed),
        _ => anyhow::Error::new(error).context("cannot write to standard output"),
    }
}

/// `print!` through [`print`]: evaluates to its `Result`.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::print(&format!($($arg)*))
    };
}

/// `println!` through [`print`]: evaluates to its `Result`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::print(&(format!($($arg)*) + "\n"))
    };
}

pub(crate) use {out, outln};

/// `--output` of every command that prints rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON document, for scripts (`jq`).
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// Width to fit tables into: `$COLUMNS`, else the terminal's width, else 80.
fn width() -> u16 {
    if let Some(columns) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return columns;
    }
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only writes a winsize into the struct we pass.
    let measured = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if measured && size.ws_col > 0 {
        size.ws_col
    } else {
        80
    }
}

/// How a table column behaves when the terminal is too narrow for everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Always shown, never broken: names, addresses.
    Keep,
    /// Shown only when it fits whole; a lower rank is given room first.
    Optional(u8),
    /// Free text, wrapped to fit; shown only when at least [`MIN_WRAP`] columns are left for it.
    Wrap(u8),
    /// Not shown: it would say the same on every row (the subnet of a list filtered by subnet).
    Hidden,
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub header: &'static str,
    pub fit: Fit,
}

pub const fn column(header: &'static str, fit: Fit) -> Column {
    Column { header, fit }
}

/// The narrowest a wrapped column may become before it is left out instead.
pub const MIN_WRAP: usize = 12;
/// Blanks between columns.
const GAP: usize = 2;

/// A borderless table in the style of `ps` or `ip -br`: a header row, then one row per item.
/// Addresses and names are never broken; when the width is too small for everything, optional
/// columns are left out (the least important first) and free text is wrapped. `-o json` always
/// has every field.
pub fn table(columns: &[Column], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.into_iter().collect();
    let natural: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .flat_map(|row| row[i].lines())
                .map(|line| line.chars().count())
                .chain([c.header.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let shown = choose_columns(columns, &natural, usize::from(width()));
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(width())
        .set_header(shown.iter().map(|&i| Cell::new(columns[i].header)));
    for row in &rows {
        table.add_row(shown.iter().map(|&i| row[i].clone()));
    }
    let last = shown.len().saturating_sub(1);
    for (position, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if position == last { 0 } else { GAP as u16 }));
        if !matches!(columns[shown[position]].fit, Fit::Wrap(_)) {
            column.set_constraint(ColumnConstraint::ContentWidth);
        }
    }
    // comfy-table pads every line to the table width; trailing blanks only get in the way.
    let mut text: String = table
        .lines()
        .map(|line| line.trim_end().to_owned() + "\n")
        .collect();
    if text.is_empty() {
        text.push('\n');
    }
    text
}

/// The indices of the columns to show, in their order: every `Keep` column, then optional and
/// wrapped ones by rank while they fit.
fn choose_columns(columns: &[Column], natural: &[usize], width: usize) -> Vec<usize> {
    let mut shown: Vec<usize> = (0..columns.len())
        .filter(|&i| columns[i].fit == Fit::Keep)
        .collect();
    let mut used: usize = shown.iter().map(|&i| natural[i] + GAP).sum();
    let mut candidates: Vec<(u8, usize)> = columns
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c.fit {
            Fit::Keep | Fit::Hidden => None,
            Fit::Optional(rank) | Fit::Wrap(rank) => Some((rank, i)),
        })
        .collect();
    candidates.sort();
    for (_, i) in candidates {
        let needed = match columns[i].fit {
            Fit::Wrap(_) => natural[i].min(MIN_WRAP),
            _ => natural[i],
        } + GAP;
        if used + needed <= width + GAP {
            used += needed;
            shown.push(i);
        }
    }
    shown.sort();
    shown
}

/// `label: value` lines with the values aligned, for `show` commands.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0)
        + 1;
    pairs
        .iter()
        .map(|(label, value)| format!("{:<width$} {value}\n", format!("{label}:")))
        .collect()
}

pub fn json<T: Serialize + ?Sized>(value: &T) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("plain data serialises");
    text.push('\n');
    text
}

/// An optional value for a table cell.
pub fn or_dash<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A timestamp as tables and messages show it: UTC, RFC 3339, whole seconds (as in JSON).
pub fn timestamp(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Seconds as admins write lease times: `12h`, `1day 12h`, `infinite`.
pub fn lease(seconds: Option<i64>) -> String {
    match seconds {
        None => "default".to_owned(),
        Some(crate::lease::INFINITE) => "infinite".to_owned(),
        Some(s) => humantime::format_duration(std::time::Duration::from_secs(s as u64)).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned_and_fit_80_columns() {
        std::env::set_var("COLUMNS", "80");
        let long = "x".repeat(200);
        let text = table(
            &[column("NAME", Fit::Keep), column("COMMENT", Fit::Wrap(0))],
            [
                vec!["a".into(), "short".into()],
                vec!["longer-name".into(), long],
            ],
        );
        assert!(text.lines().all(|l| l.len() <= 80), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].find("COMMENT"), lines[1].find("short"), "{text}");
    }

    #[test]
    fn columns_that_do_not_fit_are_left_out_by_rank() {
        let columns = [
            column("A", Fit::Keep),
            column("B", Fit::Optional(1)),
            column("C", Fit::Optional(0)),
            column("D", Fit::Wrap(2)),
        ];
        // Widths 30, 20, 20, 40: A and C fit in 60, B would need 22 more.
        let natural = [30, 20, 20, 40];
        assert_eq!(choose_columns(&columns, &natural, 60), vec![0, 2]);
        assert_eq!(choose_columns(&columns, &natural, 80), vec![0, 1, 2]);
        // D gets its minimum of 12 and is wrapped.
        assert_eq!(choose_columns(&columns, &natural, 90), vec![0, 1, 2, 3]);
        assert_eq!(choose_columns(&columns, &natural, 200), vec![0, 1, 2, 3]);
        assert_eq!(choose_columns(&columns, &natural, 10), vec![0]);
    }
}
