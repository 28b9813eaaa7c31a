//! libpq's password file (`~/.pgpass`): lines `host:port:dbname:user:password`, `*` for any
//! value, `\:` and `\\` for a colon or backslash, `#` comments. A file that group or others may
//! read is skipped with a warning, as libpq skips it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The connection a password is looked up for.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub host: String,
    pub port: String,
    pub dbname: String,
    pub user: String,
}

/// The password of the first line that matches `wanted`; `None` when the file is missing,
/// unsafe (warned) or has no matching line. The file's content is never logged.
pub fn lookup(path: &Path, wanted: &Wanted) -> Option<String> {
    let metadata = std::fs::metadata(path).ok()?;
    if !metadata.is_file() {
        tracing::warn!(file = %path.display(), "password file is not a plain file; ignored");
        return None;
    }
    if metadata.mode() & 0o077 != 0 {
        tracing::warn!(
            file = %path.display(),
            "password file has group or world access; permissions should be u=rw (0600) or \
             less; ignored"
        );
        return None;
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "cannot read the password file");
            return None;
        }
    };
    text.lines().find_map(|line| password_of(line, wanted))
}

/// The password on `line` when its four fields match `wanted`.
fn password_of(line: &str, wanted: &Wanted) -> Option<String> {
    if line.starts_with('#') {
        return None;
    }
    let fields = split_fields(line);
    let [host, port, dbname, user, password, ..] = fields.as_slice() else {
        return None;
    };
    let matches = |field: &Field, value: &str| field.wildcard || field.text == value;
    (matches(host, &wanted.host)
        && matches(port, &wanted.port)
        && matches(dbname, &wanted.dbname)
        && matches(user, &wanted.user)
        && !password.text.is_empty())
    .then(|| password.text.clone())
}

struct Field {
    text: String,
    /// A bare `*`, which matches anything (an escaped `\*` is a literal star).
    wildcard: bool,
}

/// Splits at unescaped colons, taking backslash escapes out.
fn split_fields(line: &str) -> Vec<Field> {
    let mut fields = Vec::new();
    let mut text = String::new();
    let mut escaped_any = false;
    let mut chars = line.chars();
    let mut finish = |text: &mut String, escaped: &mut bool| {
        fields.push(Field {
            wildcard: text == "*" && !*escaped,
            text: std::mem::take(text),
        });
        *escaped = false;
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                escaped_any = true;
                if let Some(next) = chars.next() {
                    text.push(next);
                }
            }
            ':' => finish(&mut text, &mut escaped_any),
            c => text.push(c),
        }
    }
    finish(&mut text, &mut escaped_any);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn wanted(host: &str, port: &str, dbname: &str, user: &str) -> Wanted {
        Wanted {
            host: host.into(),
            port: port.into(),
            dbname: dbname.into(),
            user: user.into(),
        }
    }

    #[test]
    fn lines_match_with_wildcards_and_escapes_first_match_wins() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            file.path(),
            "# comment:*:*:*:nope\n\
             db1:5432:ipm:agent:first\n\
             *:*:ipm:agent:second\n\
             db\\:x:*:*:odd:a\\:b\\\\c\n\
             *:*:*:\\*:literal-star\n",
        )
        .unwrap();
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        let look = |w: Wanted| lookup(file.path(), &w);
        assert_eq!(
            look(wanted("db1", "5432", "ipm", "agent")).as_deref(),
            Some("first")
        );
        assert_eq!(
            look(wanted("db2", "6000", "ipm", "agent")).as_deref(),
            Some("second")
        );
        assert_eq!(
            look(wanted("db:x", "1", "y", "odd")).as_deref(),
            Some(r"a:b\c")
        );
        assert_eq!(look(wanted("db2", "5432", "other", "agent")), None);
        assert_eq!(
            look(wanted("h", "1", "d", "*")).as_deref(),
            Some("literal-star")
        );
        assert_eq!(look(wanted("h", "1", "d", "someone")), None);
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(look(wanted("db1", "5432", "ipm", "agent")), None);
    }
}
