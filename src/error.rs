//! Error helpers, used everywhere and depending on nothing of ours: the boxed error type, and
//! walking an error's chain of causes (as linkerd's `linkerd/error` does).

use std::error::Error as StdError;

/// Any error, sendable between tasks.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The first error of type `E` in the chain of `e`, `e` included.
pub fn cause_of<'a, E: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        current = cause(err);
    }
    None
}

/// Whether an error of type `E` is anywhere in the chain of `e`.
pub fn is_caused_by<E: StdError + 'static>(e: &(dyn StdError + 'static)) -> bool {
    cause_of::<E>(e).is_some()
}

/// The next error in the chain. `io::Error::source` skips the error it wraps (and rustls
/// errors arrive wrapped twice), so wrapped errors are unpacked by hand.
fn cause<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    if let Some(io) = err.downcast_ref::<std::io::Error>() {
        if let Some(inner) = io.get_ref() {
            return Some(inner);
        }
    }
    err.source()
}

/// The error and its causes on one line, each cause once.
pub fn describe(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut current = cause(e);
    while let Some(err) = current {
        let part = err.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        current = cause(err);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Inner;
    impl std::fmt::Display for Inner {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("inner")
        }
    }
    impl StdError for Inner {}

    #[test]
    fn causes_are_found_through_io_errors() {
        let wrapped = std::io::Error::other(Inner);
        assert!(is_caused_by::<Inner>(&wrapped));
        assert!(!is_caused_by::<std::fmt::Error>(&wrapped));
        assert_eq!(describe(&wrapped), "inner");
    }
}
