//! Credentials refused outright (401), whose grants are void on every image.

use std::sync::atomic::{AtomicU64, Ordering};

use super::moment::Moment;
use crate::auth::Fingerprint;

/// Slots of the credential revocation tables.
const REVOCATION_SLOTS: usize = 4096;

/// Credentials the API called invalid (401) after they were granted something: every grant
/// of theirs made before that is void, on every image. Two fixed tables indexed by the
/// fingerprint, so the hit path reads one atomic and memory stays fixed:
/// - `granted` remembers, per slot, the last credential granted anything there, so only a
///   refusal of a credential that really held grants is recorded (a flood of forged tokens
///   ends nobody's grants);
/// - `refused` holds, per slot, when its last such credential was refused. A credential
///   sharing the slot loses its older grants too, which costs it one upstream check.
pub(super) struct Revocations {
    granted: Box<[AtomicU64]>,
    /// [`Moment::nonzero`] of the last refusal (0 means never).
    refused: Box<[AtomicU64]>,
}

impl Revocations {
    pub(super) fn new() -> Self {
        let table = || (0..REVOCATION_SLOTS).map(|_| AtomicU64::new(0)).collect();
        Revocations {
            granted: table(),
            refused: table(),
        }
    }

    fn slot(who: Fingerprint) -> (usize, u64) {
        let (index, tag) = who.halves();
        ((index % REVOCATION_SLOTS as u64) as usize, tag)
    }

    pub(super) fn granted(&self, who: Fingerprint) {
        let (slot, tag) = Self::slot(who);
        self.granted[slot].store(tag, Ordering::Release);
    }

    /// Records that `who` was refused at `now`, if it holds grants; whether it did.
    pub(super) fn refused(&self, who: Fingerprint, now: Moment) -> bool {
        let (slot, tag) = Self::slot(who);
        if self.granted[slot].load(Ordering::Acquire) != tag {
            return false;
        }
        self.refused[slot].fetch_max(now.nonzero(), Ordering::AcqRel);
        true
    }

    /// Whether a grant made to `who` at `at` was voided by a later refusal.
    pub(super) fn voids(&self, who: Fingerprint, at: Moment) -> bool {
        let (slot, _) = Self::slot(who);
        let refused = self.refused[slot].load(Ordering::Acquire);
        refused != 0 && at.nonzero() <= refused
    }
}
