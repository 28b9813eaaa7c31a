//! How listings are printed: aligned plain-text tables that fit the terminal (80 columns when
//! it cannot be measured), or JSON for scripts.

use comfy_table::{presets, Cell, ColumnConstraint, ContentArrangement, Table};
use serde::Serialize;

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

/// A borderless table in the style of `ps` or `ip -br`: a header row, then one row per item.
/// Only the columns listed in `wrap` (free text such as comments) are wrapped to make the whole
/// fit the width; addresses, names and times are never broken.
pub fn table(
    header: &[&str],
    wrap: &[usize],
    rows: impl IntoIterator<Item = Vec<String>>,
) -> String {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(width())
        .set_header(header.iter().map(Cell::new));
    for row in rows {
        table.add_row(row);
    }
    for (index, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, 2));
        if !wrap.contains(&index) {
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

/// Seconds as admins write lease times: `12h`, `1day 12h`.
pub fn lease(seconds: Option<i64>) -> String {
    seconds.map_or_else(
        || "default".to_owned(),
        |s| humantime::format_duration(std::time::Duration::from_secs(s as u64)).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned_and_fit_80_columns() {
        std::env::set_var("COLUMNS", "80");
        let long = "x".repeat(200);
        let text = table(
            &["NAME", "COMMENT"],
            &[1],
            [
                vec!["a".into(), "short".into()],
                vec!["longer-name".into(), long],
            ],
        );
        assert!(text.lines().all(|l| l.len() <= 80), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].find("COMMENT"), lines[1].find("short"), "{text}");
    }
}
