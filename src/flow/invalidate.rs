//! Ending cached copies, here and in the fleet: for an answer that says the image changed,
//! a refusal, a mutation, an admin purge, or another instance's say-so.

use crate::auth::Fingerprint;
use crate::fleet::Reader;
use crate::metrics::InvalidationReason;
use crate::upstream::UpstreamError;

use super::Flow;

/// What the answer to a mutation (`PATCH`, `DELETE`, `POST` on an image) says happened, as
/// the front-end of its protocol reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MutationEffect {
    /// The API took the change.
    Applied,
    /// Gone, or not the caller's to see.
    Gone,
    /// The API proved it did not take it (a refusal), or the request never reached it (no
    /// connection, no upstream slot, a body the proxy refused).
    NotApplied,
    /// No answer, or the upstream failing: the change may or may not have been made.
    Unknown,
}

impl MutationEffect {
    /// What a mutation that got no answer did, whatever its protocol: one that never reached
    /// the API (no connection, no upstream slot, a body the proxy refused) was not made; one
    /// that timed out or lost its answer half way may have been.
    pub fn without_answer(failure: &UpstreamError) -> MutationEffect {
        match failure {
            UpstreamError::Connect(_)
            | UpstreamError::Tls(_)
            | UpstreamError::Busy
            | UpstreamError::Upload(_) => MutationEffect::NotApplied,
            UpstreamError::Timeout(_) | UpstreamError::Body(_) => MutationEffect::Unknown,
        }
    }
}

impl Flow {
    /// Drops `id` because the upstream answered `who` that it is gone or not READY: only if
    /// `who` could read it, so one tenant's 404 (for an image it may not see) cannot evict
    /// another tenant's entry. Returns whether anything was dropped.
    pub(super) async fn invalidate_for(
        &self,
        id: &str,
        who: Option<Fingerprint>,
        reason: InvalidationReason,
    ) -> bool {
        let dropped = self.cache.invalidate_for(id, who).await;
        if dropped > 0 {
            self.metrics.invalidated(reason, dropped);
            tracing::info!(reason = reason.as_str(), "image invalidated");
        }
        dropped > 0
    }

    /// The API refused `who` for `id`: its grant of `id` ends at once, and if the credential
    /// itself is invalid (401) every grant it holds ends.
    pub(super) async fn refused(
        &self,
        id: &str,
        who: Option<Fingerprint>,
        credential_invalid: bool,
    ) {
        let Some(who) = who else { return };
        if credential_invalid {
            self.cache.refuse_credential(who);
        }
        self.cache.revoke(id, who).await;
    }

    /// The API called `who`'s credential invalid (401) on a request that was not an
    /// Image.Get: every grant it holds ends.
    pub fn credential_refused(&self, who: Fingerprint) {
        self.cache.refuse_credential(who);
    }

    /// Drops an image on the proxy's own authority (a mutation or a purge), here and, with
    /// the fleet tier, everywhere. Returns how many entries were dropped here.
    pub async fn invalidate(&self, id: &str, reason: InvalidationReason) -> u64 {
        let dropped = self.cache.invalidate(id).await;
        self.metrics.invalidated(reason, dropped);
        if let Some(fleet) = &self.fleet {
            fleet.invalidate(id).await;
        }
        dropped
    }

    /// Drops every entry (an admin purge), here and, with the fleet tier, everywhere;
    /// returns how many there were here.
    pub async fn purge_all(&self) -> u64 {
        if let Some(fleet) = &self.fleet {
            fleet.invalidate_all().await;
        }
        let purged = self.cache.purge_all().await;
        self.metrics.invalidated(InvalidationReason::Purge, purged);
        purged
    }

    /// Another instance invalidated `id` (`None`: everything, or messages were missed).
    pub(super) async fn dropped_by_fleet(&self, id: Option<&str>) {
        let dropped = match id {
            Some(id) => self.cache.invalidate(id).await,
            None => self.cache.purge_all().await,
        };
        self.metrics.invalidated(InvalidationReason::Fleet, dropped);
    }

    /// What a mutation's answer does to its image, here and in the fleet. Only an answer
    /// that the change may have been made drops anything: a refusal drops nothing (anyone
    /// can send a DELETE), and a 404 follows the Image.Get rule.
    pub async fn mutation_answered(
        &self,
        id: &str,
        who: Option<Fingerprint>,
        reader: Option<Reader>,
        effect: MutationEffect,
    ) {
        match effect {
            MutationEffect::NotApplied => {}
            MutationEffect::Applied => {
                self.invalidate(id, InvalidationReason::Mutation).await;
            }
            MutationEffect::Gone => {
                if self
                    .invalidate_for(id, who, InvalidationReason::NotFound)
                    .await
                {
                    if let Some(fleet) = &self.fleet {
                        fleet.invalidate(id).await;
                    }
                } else if let (Some(fleet), Some(reader)) = (&self.fleet, reader) {
                    fleet.not_found(id, &reader).await;
                }
            }
            MutationEffect::Unknown => {
                let dropped = self.cache.invalidate(id).await;
                self.metrics
                    .invalidated(InvalidationReason::Mutation, dropped);
                if let Some(fleet) = &self.fleet {
                    fleet.invalidate_if_shared(id).await;
                }
            }
        }
    }
}
