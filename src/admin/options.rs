//! DHCP options of subnets and profiles (`ipmanager.subnet_options`, `ipmanager.profile_options`):
//! the one reading of an `--option NAME[:TYPE]=VALUE` argument, and setting, unsetting and
//! listing options through the database's functions, which check every value against its type.
//! The renderer checks the stored values again with its own, separate rules
//! ([`crate::render::validate`]) on purpose: two independent checks, not one shared.

use serde::Serialize;
use tokio_postgres::GenericClient;

use super::validate::quote;
use super::{AdminError, Result};
use crate::model::OptionKind;

/// One `--option` argument: the option by name or number, a declared type (only for numbers
/// the catalogue does not know) and the value as typed. A value in double quotes is a string,
/// as in dnsmasq's own syntax; the database takes the quotes off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionArg {
    pub option: String,
    pub kind: Option<OptionKind>,
    pub value: String,
}

impl OptionArg {
    /// Reads `NAME=VALUE`, `NUMBER=VALUE` or `NUMBER:TYPE=VALUE`.
    pub fn parse(text: &str) -> Result<OptionArg, String> {
        let (option, value) = text.split_once('=').ok_or_else(|| {
            format!(
                "option {} has no value: give NAME=VALUE, e.g. mtu=1400, or NUMBER:TYPE=VALUE, \
                 e.g. 224:hex=de:ad",
                quote(text)
            )
        })?;
        let (option, kind) = match option.split_once(':') {
            Some((option, kind)) => {
                let kind = OptionKind::from_name(kind.trim()).ok_or_else(|| {
                    format!(
                        "option {} declares the unknown type {}: give one of {}",
                        quote(option),
                        quote(kind),
                        OptionKind::ALL.map(OptionKind::name).join(", ")
                    )
                })?;
                (option, Some(kind))
            }
            None => (option, None),
        };
        let option = option.trim();
        if option.is_empty() {
            return Err(format!(
                "option {} has no name: give NAME=VALUE",
                quote(text)
            ));
        }
        Ok(OptionArg {
            option: option.to_owned(),
            kind,
            value: value.to_owned(),
        })
    }
}

/// An option as admins see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OptionRow {
    /// The catalogue's name, or the number for options it does not know.
    pub option: String,
    pub number: i32,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

impl OptionRow {
    /// `name=value` as `--option` takes it back (strings in quotes when the name is a number).
    pub fn assignment(&self) -> String {
        format!("{}={}", self.option, self.value)
    }
}

/// Whose options: a subnet or a profile, by id.
#[derive(Debug, Clone, Copy)]
pub enum Owner {
    Subnet(i64),
    Profile(i64),
}

impl Owner {
    fn table_and_column(self) -> (&'static str, &'static str, i64) {
        match self {
            Owner::Subnet(id) => ("ipmanager.subnet_options", "subnet_id", id),
            Owner::Profile(id) => ("ipmanager.profile_options", "profile_id", id),
        }
    }
}

/// The options of one owner, by number.
pub async fn list(client: &impl GenericClient, owner: Owner) -> Result<Vec<OptionRow>> {
    let (table, column, id) = owner.table_and_column();
    let rows = client
        .query(
            &format!(
                "SELECT option, number, type, value FROM {table} WHERE {column} = $1 \
                 ORDER BY number"
            ),
            &[&id],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(OptionRow {
                option: row.try_get("option")?,
                number: row.try_get("number")?,
                kind: row.try_get("type")?,
                value: row.try_get("value")?,
            })
        })
        .collect()
}

/// Sets (or replaces) each option and removes each of `unset`, in the caller's transaction.
/// Returns whether anything changed. Unsetting an option that is not set is an error, so that
/// a typo does not pass for a removal.
pub async fn apply(
    client: &impl GenericClient,
    owner: Owner,
    set: &[OptionArg],
    unset: &[String],
) -> Result<bool> {
    let before = list(client, owner).await?;
    let (table, column, id) = owner.table_and_column();
    for name in unset {
        let removed = client
            .execute(
                &format!(
                    "DELETE FROM {table} WHERE {column} = $1 \
                     AND (option = lower(btrim($2)) OR number::text = btrim($2))"
                ),
                &[&id, name],
            )
            .await?;
        if removed == 0 {
            return Err(AdminError::NotFound(format!(
                "option {} is not set: nothing to unset",
                quote(name)
            )));
        }
    }
    for arg in set {
        let kind = arg.kind.map(OptionKind::name);
        client
            .execute(
                &format!(
                    "INSERT INTO {table} AS o ({column}, option, type, value) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT ({column}, number) DO UPDATE \
                         SET option = EXCLUDED.option, type = EXCLUDED.type, value = EXCLUDED.value"
                ),
                &[&id, &arg.option, &kind, &arg.value],
            )
            .await?;
    }
    Ok(list(client, owner).await? != before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_name_an_option_a_declared_type_and_a_value() {
        assert_eq!(
            OptionArg::parse("mtu=1400").unwrap(),
            OptionArg {
                option: "mtu".into(),
                kind: None,
                value: "1400".into()
            }
        );
        let declared = OptionArg::parse("224:hex=de:ad").unwrap();
        assert_eq!(
            (
                declared.option.as_str(),
                declared.kind,
                declared.value.as_str()
            ),
            ("224", Some(OptionKind::Hex), "de:ad")
        );
        // Everything after the first '=' is the value, quotes included.
        assert_eq!(
            OptionArg::parse("252=\"http://wpad/x?a=b\"").unwrap().value,
            "\"http://wpad/x?a=b\""
        );
        assert!(OptionArg::parse("mtu")
            .unwrap_err()
            .contains("has no value"));
        assert!(OptionArg::parse("=1").unwrap_err().contains("has no name"));
        assert!(OptionArg::parse("224:float=1")
            .unwrap_err()
            .contains("unknown type 'float'"));
    }
}
