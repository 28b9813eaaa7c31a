//! The SHA-256 of each shard file of the incremental layout, kept from sync to sync, so that
//! the reported `files_hash` costs a comparison of the shard texts plus hashing the shards that
//! changed, not hashing every shard file (megabytes at 100k hosts) on every sync.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// Shard file path -> (the content last hashed, its lowercase hex SHA-256).
#[derive(Default)]
pub(super) struct ShardDigests {
    known: HashMap<String, (String, String)>,
}

impl ShardDigests {
    /// The digests of `files` (path, content), in their order; forgets every other file.
    pub(super) fn digests(&mut self, files: Vec<(String, &str)>) -> Vec<(String, String)> {
        let mut known = HashMap::with_capacity(files.len());
        let digests = files
            .into_iter()
            .map(|(path, content)| {
                let entry = match self.known.remove(&path) {
                    Some(entry) if entry.0 == content => entry,
                    _ => (content.to_owned(), hex_sha256(content.as_bytes())),
                };
                let digest = entry.1.clone();
                known.insert(path.clone(), entry);
                (path, digest)
            })
            .collect();
        self.known = known;
        digests
    }
}

/// Lowercase hex SHA-256 of `bytes`.
fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_follows_its_content_and_forgotten_files_are_dropped() {
        let mut digests = ShardDigests::default();
        let first = digests.digests(vec![("a".into(), "x\n"), ("b".into(), "y\n")]);
        assert_eq!(first[0].1, hex_sha256(b"x\n"));
        let second = digests.digests(vec![("a".into(), "z\n")]);
        assert_eq!(second, vec![("a".to_owned(), hex_sha256(b"z\n"))]);
        assert_eq!(digests.known.len(), 1);
        let third = digests.digests(vec![("a".into(), "z\n"), ("b".into(), "y\n")]);
        assert_eq!(third[1].1, hex_sha256(b"y\n"));
    }
}
