//! Lease times as admins write them, the one parser shared by the CLI's `--lease-time` flags and
//! every import format, with the database's bounds and words (`ipmanager.is_valid_lease_time`
//! in `sql/V3__hardening.sql`).
//!
//! A lease is a whole number of seconds from 2 minutes to 10 years, or infinite. Infinite is
//! stored as [`INFINITE`] seconds (2^32 - 1, what DHCPv4 and Kea send for an infinite lease),
//! because PostgreSQL has no infinite interval before version 17; dnsmasq gets `infinite`.

use std::time::Duration;

/// The seconds that stand for an infinite lease, in the database and in [`crate::model`].
pub const INFINITE: i64 = u32::MAX as i64;
/// `interval '10 years'` in seconds, as PostgreSQL counts it (365.25 days a year).
pub const MAX_FINITE: i64 = 315_576_000;
pub const MIN: i64 = 120;

const RULE: &str = "a lease time must be a whole number of seconds between 2 minutes and 10 \
                    years, or infinite";

/// Parses `3600` (seconds), `45m`, `12h`, `7d`, `1w`, `2h 30m` or `infinite` (any case) and
/// checks the bounds; `column` names the setting in the message (`hosts.lease_time`).
pub fn parse(column: &str, text: &str) -> Result<i64, String> {
    let seconds = if text.eq_ignore_ascii_case("infinite") {
        INFINITE
    } else {
        let duration = match text.parse::<u64>() {
            Ok(seconds) => Ok(Duration::from_secs(seconds)),
            Err(_) => humantime::parse_duration(text),
        }
        .map_err(|_| {
            format!(
                "{column} {} is not a lease time: give seconds, a duration such as 45m, 12h or \
                 7d, or infinite",
                quote(text)
            )
        })?;
        if duration.subsec_nanos() != 0 {
            return Err(out_of_range(column, text, duration.as_secs_f64()));
        }
        i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
    };
    if !is_valid(seconds) {
        return Err(out_of_range(column, text, seconds as f64));
    }
    Ok(seconds)
}

/// Whether `seconds` is a lease the database stores: within the bounds, or [`INFINITE`]
/// (which `4294967295` spells too, as Kea writes it).
pub fn is_valid(seconds: i64) -> bool {
    seconds == INFINITE || (MIN..=MAX_FINITE).contains(&seconds)
}

fn out_of_range(column: &str, text: &str, seconds: f64) -> String {
    format!(
        "{column} {} ({seconds} seconds) is out of range: {RULE}",
        quote(text)
    )
}

/// PostgreSQL's `quote_literal()`, as the database quotes values in its messages.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// For `#[serde(serialize_with)]` on a lease in seconds: the number, or `"infinite"`.
pub fn serialize<S: serde::Serializer>(
    seconds: &Option<i64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match seconds {
        Some(INFINITE) => serializer.serialize_str("infinite"),
        Some(seconds) => serializer.serialize_i64(*seconds),
        None => serializer.serialize_none(),
    }
}

/// The OpenAPI schema of what [`serialize`] writes: seconds, `"infinite"`, or null (the
/// subnet's or dnsmasq's default applies).
pub fn schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["infinite"])),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .build()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_bounds_and_infinite() {
        for (text, seconds) in [
            ("3600", 3600),
            ("45m", 2700),
            ("12h", 43_200),
            ("7d", 604_800),
            ("1w", 604_800),
            ("2h 30m", 9000),
            ("120", 120),
            ("infinite", INFINITE),
            ("Infinite", INFINITE),
            ("4294967295", INFINITE),
        ] {
            assert_eq!(parse("hosts.lease_time", text), Ok(seconds), "{text}");
        }
        assert_eq!(
            parse("hosts.lease_time", "60").unwrap_err(),
            format!("hosts.lease_time '60' (60 seconds) is out of range: {RULE}")
        );
        for text in ["119", "11y", "4294967294", "1.5s"] {
            assert!(
                parse("hosts.lease_time", text)
                    .unwrap_err()
                    .contains("is out of range"),
                "{text}"
            );
        }
        for text in ["soon", "", "-5", "12x", "infinity"] {
            assert!(
                parse("hosts.lease_time", text)
                    .unwrap_err()
                    .contains("is not a lease time"),
                "{text}"
            );
        }
    }
}
