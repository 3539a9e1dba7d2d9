//! Account credentials at rest: AES-256-GCM under the 32-byte account key
//! (`RELAY_ACCOUNT_KEY`, 64 hex characters). Each credential gets a fresh
//! random nonce, and the account id is bound in as associated data, so a
//! sealed credential copied onto another account does not open.
//!
//! Without a key nothing is stored or read, unless plaintext storage is
//! switched on explicitly (`RELAY_PLAINTEXT_CREDENTIALS=true`) for local
//! experiments. The two settings contradict each other and are refused
//! together.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::bail;
use secrecy::{ExposeSecret, SecretString};

use super::records::StoredCredential;
use crate::config::Secrets;

const NONCE_LEN: usize = 12;

pub struct CredentialCipher {
    mode: Mode,
}

enum Mode {
    Sealed(Box<Aes256Gcm>),
    Plaintext,
    NoKey,
}

#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    #[error(
        "no account key: set RELAY_ACCOUNT_KEY or RELAY_ACCOUNT_KEY_FILE (64 hex characters, \
         e.g. from `openssl rand -hex 32`), or RELAY_PLAINTEXT_CREDENTIALS=true for local \
         experiments"
    )]
    NoKey,
    #[error(
        "the credential is stored in plaintext, which this relay refuses while an account key \
         is set; add the account again to store it encrypted"
    )]
    PlaintextRefused,
    #[error("the credential is stored encrypted, but plaintext mode has no key to open it")]
    SealedWithoutKey,
    #[error("the credential does not decrypt with this account key (another key, or altered)")]
    WrongKey,
    #[error("the system has no randomness for a nonce")]
    NoRandomness,
}

impl CredentialCipher {
    /// Parses the account key once; a malformed key or a key together with
    /// plaintext mode is a start-up error.
    pub fn from_secrets(secrets: &Secrets) -> anyhow::Result<CredentialCipher> {
        let mode = match (&secrets.account_key, secrets.plaintext_credentials) {
            (Some(_), true) => bail!(
                "an account key (RELAY_ACCOUNT_KEY or RELAY_ACCOUNT_KEY_FILE) and \
                 RELAY_PLAINTEXT_CREDENTIALS=true contradict each other: set one of them"
            ),
            (Some(key), false) => Mode::Sealed(Box::new(parse_key(key)?)),
            (None, true) => Mode::Plaintext,
            (None, false) => Mode::NoKey,
        };
        Ok(CredentialCipher { mode })
    }

    /// Whether credentials can be stored and read at all.
    pub fn usable(&self) -> bool {
        !matches!(self.mode, Mode::NoKey)
    }

    /// The stored form of `credential` for the account `account_id`.
    pub fn seal(
        &self,
        account_id: &str,
        credential: &SecretString,
    ) -> Result<StoredCredential, CipherError> {
        let cipher = match &self.mode {
            Mode::Sealed(cipher) => cipher,
            Mode::Plaintext => {
                return Ok(StoredCredential::Plaintext(
                    credential.expose_secret().to_owned(),
                ));
            }
            Mode::NoKey => return Err(CipherError::NoKey),
        };
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| CipherError::NoRandomness)?;
        let payload = Payload {
            msg: credential.expose_secret().as_bytes(),
            aad: account_id.as_bytes(),
        };
        // Encryption only fails for messages near 64 GiB.
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .map_err(|_| CipherError::WrongKey)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(StoredCredential::Aes256Gcm(hex::encode(out)))
    }

    pub fn open(
        &self,
        account_id: &str,
        stored: &StoredCredential,
    ) -> Result<SecretString, CipherError> {
        match (&self.mode, stored) {
            (Mode::Sealed(cipher), StoredCredential::Aes256Gcm(text)) => {
                open_sealed(cipher, account_id, text)
            }
            (Mode::Sealed(_), StoredCredential::Plaintext(_)) => Err(CipherError::PlaintextRefused),
            (Mode::Plaintext, StoredCredential::Plaintext(text)) => {
                Ok(SecretString::from(text.clone()))
            }
            (Mode::Plaintext, StoredCredential::Aes256Gcm(_)) => Err(CipherError::SealedWithoutKey),
            (Mode::NoKey, _) => Err(CipherError::NoKey),
        }
    }
}

impl std::fmt::Debug for CredentialCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            Mode::Sealed(_) => "aes-256-gcm",
            Mode::Plaintext => "plaintext",
            Mode::NoKey => "no key",
        };
        f.debug_struct("CredentialCipher")
            .field("mode", &mode)
            .finish()
    }
}

fn parse_key(key: &SecretString) -> anyhow::Result<Aes256Gcm> {
    let text = key.expose_secret().trim();
    let bytes = match hex::decode(text) {
        Ok(bytes) if bytes.len() == 32 => bytes,
        // The message must not echo the key, even a malformed one.
        _ => bail!(
            "RELAY_ACCOUNT_KEY must be 64 hex characters (32 bytes), e.g. from \
             `openssl rand -hex 32`; the value given is not"
        ),
    };
    Aes256Gcm::new_from_slice(&bytes)
        .map_err(|_| anyhow::anyhow!("RELAY_ACCOUNT_KEY has the wrong length"))
}

fn open_sealed(
    cipher: &Aes256Gcm,
    account_id: &str,
    text: &str,
) -> Result<SecretString, CipherError> {
    let bytes = hex::decode(text).map_err(|_| CipherError::WrongKey)?;
    if bytes.len() <= NONCE_LEN {
        return Err(CipherError::WrongKey);
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let payload = Payload {
        msg: sealed,
        aad: account_id.as_bytes(),
    };
    let plain = cipher
        .decrypt(Nonce::from_slice(nonce), payload)
        .map_err(|_| CipherError::WrongKey)?;
    String::from_utf8(plain)
        .map(SecretString::from)
        .map_err(|_| CipherError::WrongKey)
}

/// A fresh random account key in the format `RELAY_ACCOUNT_KEY` expects.
pub fn generate_key() -> anyhow::Result<SecretString> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("no system randomness: {err}"))?;
    Ok(SecretString::from(hex::encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher_with(key: Option<&str>, plaintext: bool) -> anyhow::Result<CredentialCipher> {
        CredentialCipher::from_secrets(&Secrets {
            account_key: key.map(|key| SecretString::from(key.to_owned())),
            plaintext_credentials: plaintext,
            ..Secrets::default()
        })
    }

    fn key() -> String {
        generate_key().unwrap().expose_secret().to_owned()
    }

    #[test]
    fn sealed_credential_opens_for_its_account_only() {
        let cipher = cipher_with(Some(&key()), false).unwrap();
        let secret = SecretString::from("sk-up-A");

        let stored = cipher.seal("acct-a", &secret).unwrap();

        let StoredCredential::Aes256Gcm(text) = &stored else {
            panic!("not sealed: {stored:?}");
        };
        assert!(!text.contains("sk-up-A"));
        assert_eq!(
            cipher.open("acct-a", &stored).unwrap().expose_secret(),
            "sk-up-A"
        );
        assert!(matches!(
            cipher.open("acct-b", &stored),
            Err(CipherError::WrongKey)
        ));
    }

    #[test]
    fn two_seals_of_one_credential_differ() {
        let cipher = cipher_with(Some(&key()), false).unwrap();
        let secret = SecretString::from("sk-up-A");

        assert_ne!(
            cipher.seal("a", &secret).unwrap(),
            cipher.seal("a", &secret).unwrap()
        );
    }

    #[test]
    fn another_key_cannot_open_it() {
        let one = cipher_with(Some(&key()), false).unwrap();
        let other = cipher_with(Some(&key()), false).unwrap();

        let stored = one.seal("a", &SecretString::from("x")).unwrap();

        assert!(matches!(
            other.open("a", &stored),
            Err(CipherError::WrongKey)
        ));
    }

    #[test]
    fn without_a_key_nothing_is_stored_or_read() {
        let none = cipher_with(None, false).unwrap();
        let plain = StoredCredential::Plaintext("x".into());

        assert!(matches!(
            none.seal("a", &SecretString::from("x")),
            Err(CipherError::NoKey)
        ));
        assert!(matches!(none.open("a", &plain), Err(CipherError::NoKey)));
    }

    #[test]
    fn plaintext_mode_must_be_asked_for_and_excludes_a_key() {
        let plain = cipher_with(None, true).unwrap();

        let stored = plain.seal("a", &SecretString::from("x")).unwrap();

        assert_eq!(stored, StoredCredential::Plaintext("x".into()));
        assert!(cipher_with(Some(&key()), true).is_err());
        let sealed = cipher_with(Some(&key()), false).unwrap();
        assert!(matches!(
            sealed.open("a", &stored),
            Err(CipherError::PlaintextRefused)
        ));
    }

    #[test]
    fn malformed_keys_are_refused_without_echoing_them() {
        for bad in ["abc", &"zz".repeat(32), &"ab".repeat(31)] {
            let err = cipher_with(Some(bad), false).unwrap_err();
            assert!(!format!("{err:#}").contains(bad), "{err:#}");
        }
    }
}
