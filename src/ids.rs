//! Id newtypes: an upload id is never passed where a job id belongs. Both are 32 lowercase hex
//! characters (16 random bytes), validated before any disk or database access.

use std::fmt;

use rand::RngCore;
use serde::{Deserialize, Serialize};

const LEN: usize = 32;

fn random_hex() -> String {
    let mut bytes = [0u8; LEN / 2];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn valid(id: &str) -> bool {
    id.len() == LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A fresh random id.
            pub fn generate() -> Self {
                Self(random_hex())
            }

            /// The id in `raw`, when it has the shape of one (32 lowercase hex characters).
            pub fn parse(raw: &str) -> Option<Self> {
                valid(raw).then(|| Self(raw.to_owned()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// An upload grant (and the original it received).
    UploadId
);
id_type!(
    /// A processing job.
    JobId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_lowercase_hex_and_anything_else_is_refused() {
        let id = JobId::generate();
        assert_eq!(JobId::parse(id.as_str()), Some(id.clone()));
        assert_ne!(JobId::generate(), id);
        for bad in [
            "",
            "../../etc/passwd",
            &"A".repeat(32),
            &"a".repeat(31),
            &"a".repeat(33),
        ] {
            assert_eq!(UploadId::parse(bad), None, "{bad}");
        }
    }
}
