//! Credentials, held only as keyed fingerprints.
//!
//! The `Authorization` header is reduced to an HMAC-SHA256 under a secret made at start-up
//! and truncated to 128 bits. The raw token is never stored, logged or put in a label; the
//! fingerprint is useless outside this process, and collisions between two tenants' tokens
//! are out of reach without the secret.

use std::fmt;

use http::header::AUTHORIZATION;
use http::HeaderMap;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// A keyed hash of one request's credential.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 16]);

impl fmt::Debug for Fingerprint {
    // Even the keyed hash stays out of logs: it would let two log lines be linked to one token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fingerprint(..)")
    }
}

/// Makes fingerprints with a secret that lives as long as the process.
pub struct CredentialHasher {
    key: hmac::Key,
}

/// The secret could not be made: the system's random source failed.
#[derive(Debug)]
pub struct NoRandomness;

impl fmt::Display for NoRandomness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the system random source failed; cannot make the credential secret")
    }
}

impl std::error::Error for NoRandomness {}

impl CredentialHasher {
    /// A hasher with a fresh random secret.
    pub fn new_random() -> Result<CredentialHasher, NoRandomness> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new() as &dyn SecureRandom)
            .map_err(|_| NoRandomness)?;
        Ok(CredentialHasher { key })
    }

    /// The fingerprint of the request's `Authorization` header(s), or `None` when there is
    /// none. Every value counts, in order, so a second header cannot be smuggled past a first.
    pub fn fingerprint(&self, headers: &HeaderMap) -> Option<Fingerprint> {
        let mut values = headers.get_all(AUTHORIZATION).iter().peekable();
        values.peek()?;
        let mut ctx = hmac::Context::with_key(&self.key);
        for value in values {
            ctx.update(&(value.len() as u64).to_le_bytes());
            ctx.update(value.as_bytes());
        }
        let tag = ctx.sign();
        let mut out = [0u8; 16];
        out.copy_from_slice(&tag.as_ref()[..16]);
        Some(Fingerprint(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn same_token_same_fingerprint_other_token_other() {
        let hasher = CredentialHasher::new_random().map_err(|e| e.to_string());
        let hasher = hasher
            .as_ref()
            .map_err(|e| e.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        let a = hasher.fingerprint(&headers(&["Bearer t1.alice"]));
        assert!(a.is_some());
        assert_eq!(a, hasher.fingerprint(&headers(&["Bearer t1.alice"])));
        assert_ne!(a, hasher.fingerprint(&headers(&["Bearer t1.bob"])));
        assert_ne!(
            a,
            hasher.fingerprint(&headers(&["Bearer t1.alice", "Bearer t1.bob"]))
        );
        assert_eq!(hasher.fingerprint(&HeaderMap::new()), None);
    }

    #[test]
    fn secrets_differ_between_processes() {
        let one = CredentialHasher::new_random().unwrap_or_else(|e| panic!("{e}"));
        let two = CredentialHasher::new_random().unwrap_or_else(|e| panic!("{e}"));
        let h = headers(&["Bearer t1.alice"]);
        assert_ne!(one.fingerprint(&h), two.fingerprint(&h));
        assert_eq!(
            format!("{:?}", one.fingerprint(&h)),
            "Some(Fingerprint(..))"
        );
    }
}
