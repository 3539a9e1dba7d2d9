//! Relay keys: extraction from the request, hashing, lifetime, and the
//! per-key restrictions (services, clients, models) checked before an
//! account is chosen.

pub mod cache;
pub mod clients;
pub mod extract;
pub mod lifetime;
pub mod models;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// The stored form of a key: lowercase hex SHA-256 of the key with the
/// optional pepper appended. The key itself is never stored.
pub fn hash_key(key: &str, pepper: Option<&SecretString>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(key.as_bytes());
    if let Some(pepper) = pepper {
        hasher.update(pepper.expose_secret().as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// A fresh relay key: `cr_` and 64 lowercase hex characters.
pub fn generate_key() -> anyhow::Result<SecretString> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("no system randomness: {err}"))?;
    Ok(SecretString::from(format!("cr_{}", hex::encode(bytes))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_hex_of_key_then_pepper() {
        let plain = hash_key("abc", None);
        let peppered = hash_key("ab", Some(&SecretString::from("c")));

        assert_eq!(
            plain,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(plain, peppered);
    }

    #[test]
    fn generated_keys_have_the_relay_format() {
        let key = generate_key().unwrap();
        let key = key.expose_secret();

        assert_eq!(key.len(), 67);
        assert!(key.starts_with("cr_"));
        assert!(
            key[3..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }
}
