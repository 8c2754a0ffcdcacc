//! Who may purge. `/metrics`, `/healthz` and `/readyz` are open to whoever reaches the admin
//! listener (Prometheus and the kubelet must); a purge is not: one `DELETE /cache` empties the
//! cache of every instance of the fleet. With an admin token, a purge needs
//! `Authorization: Bearer <token>`; without one, it is taken only from a loopback client, so
//! an admin listener opened to a pod network for scraping does not open purges with it.

use std::net::SocketAddr;
use std::sync::RwLock;

use http::header::AUTHORIZATION;
use http::HeaderMap;
use ring::hmac;
use ring::rand::SystemRandom;

use crate::config::Secret;

/// Why a purge was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// A token is configured and the request did not carry it (401).
    NoToken,
    /// No token is configured and the client is not on loopback (403).
    NotLoopback,
}

/// The admin token, kept as a MAC under a key of this process's own: a presented token is
/// checked by [`hmac::verify`], which compares in constant time whatever its length, so the
/// time an answer takes tells nothing of how much of a guess was right.
struct Token {
    key: hmac::Key,
    tag: hmac::Tag,
}

/// Who may purge.
enum Policy {
    /// No token configured: loopback clients.
    Loopback,
    /// Those who present the token.
    Token(Box<Token>),
    /// A token is configured but the system gave no randomness to key it with: nobody, rather
    /// than a weaker rule than the one asked for.
    Nobody,
}

/// The purge policy, changed by a reload (a rotated token file).
pub struct PurgeAccess {
    policy: RwLock<Policy>,
}

impl PurgeAccess {
    pub fn new(token: Option<&Secret>) -> PurgeAccess {
        PurgeAccess {
            policy: RwLock::new(policy(token)),
        }
    }

    /// Takes the token of a reloaded configuration (or its absence).
    pub fn set_token(&self, token: Option<&Secret>) {
        let policy = policy(token);
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
    }

    /// Whether a purge from `peer` with these headers is allowed.
    pub fn check(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<(), Denied> {
        let policy = self.policy.read().unwrap_or_else(|e| e.into_inner());
        match &*policy {
            Policy::Token(token) => {
                let presented = bearer(headers).ok_or(Denied::NoToken)?;
                hmac::verify(&token.key, presented, token.tag.as_ref()).map_err(|_| Denied::NoToken)
            }
            Policy::Nobody => Err(Denied::NoToken),
            Policy::Loopback if peer.ip().to_canonical().is_loopback() => Ok(()),
            Policy::Loopback => Err(Denied::NotLoopback),
        }
    }
}

/// The policy a token (or none) makes: the token under a fresh random key.
fn policy(token: Option<&Secret>) -> Policy {
    let Some(token) = token else {
        return Policy::Loopback;
    };
    match hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new()) {
        Ok(key) => {
            let tag = hmac::sign(&key, token.expose());
            Policy::Token(Box::new(Token { key, tag }))
        }
        Err(_) => {
            tracing::error!("no randomness to key the admin token with: every purge is refused");
            Policy::Nobody
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    (scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty()).then_some(token.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const TOKEN: &str = "s3cret-admin-token-0123456789";

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn peer(addr: &str) -> SocketAddr {
        addr.parse().unwrap()
    }

    #[test]
    fn without_a_token_only_loopback_clients_may_purge() {
        let access = PurgeAccess::new(None);
        for ok in [
            "127.0.0.1:5000",
            "127.1.2.3:5000",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:5000",
        ] {
            assert_eq!(access.check(peer(ok), &headers(None)), Ok(()), "{ok}");
        }
        for not in [
            "10.0.0.5:5000",
            "192.168.1.1:1",
            "[fd00::1]:5000",
            "[::ffff:10.0.0.1]:1",
        ] {
            assert_eq!(
                access.check(peer(not), &headers(Some("Bearer anything-at-all-here"))),
                Err(Denied::NotLoopback),
                "{not}"
            );
        }
    }

    #[test]
    fn with_a_token_every_client_needs_it_loopback_too() {
        let access = PurgeAccess::new(Some(&Secret::new(TOKEN.into())));
        let good = format!("Bearer {TOKEN}");
        let lower = format!("bearer {TOKEN}");
        for from in ["127.0.0.1:1", "10.0.0.5:1"] {
            assert_eq!(access.check(peer(from), &headers(Some(&good))), Ok(()));
            assert_eq!(access.check(peer(from), &headers(Some(&lower))), Ok(()));
            for bad in [
                None,
                Some("Bearer "),
                Some("Bearer s3cret-admin-token-012345678"),
                Some("Bearer s3cret-admin-token-01234567890"),
                Some("Basic czNjcmV0"),
                Some(TOKEN),
            ] {
                assert_eq!(
                    access.check(peer(from), &headers(bad)),
                    Err(Denied::NoToken),
                    "{bad:?}"
                );
            }
        }
    }

    #[test]
    fn a_new_token_replaces_the_old_and_none_falls_back_to_loopback() {
        let access = PurgeAccess::new(Some(&Secret::new(TOKEN.into())));
        let rotated = "rotated-admin-token-abcdefghij";
        access.set_token(Some(&Secret::new(rotated.into())));
        let from = peer("10.0.0.5:1");
        assert_eq!(
            access.check(from, &headers(Some(&format!("Bearer {TOKEN}")))),
            Err(Denied::NoToken)
        );
        assert_eq!(
            access.check(from, &headers(Some(&format!("Bearer {rotated}")))),
            Ok(())
        );
        access.set_token(None);
        assert_eq!(access.check(from, &headers(None)), Err(Denied::NotLoopback));
        assert_eq!(access.check(peer("127.0.0.1:1"), &headers(None)), Ok(()));
    }
}
