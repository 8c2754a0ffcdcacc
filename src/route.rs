//! Request classification: a pure function from (method, raw request target) to [`Route`].
//!
//! It matches the target exactly as received, before any decoding or normalisation, so that
//! a look-alike (`%6c`, `//`, a trailing slash, capitals, a query string) can never reach the
//! cache: only the one exact Image.Get shape is cacheable, everything else passes through.

use http::Method;

/// The path prefix of the image collection.
pub const IMAGES_PREFIX: &str = "/baremetal/v1alpha/images/";

/// Longest image ID the cache accepts (real IDs are 20 characters).
pub const MAX_ID_LEN: usize = 64;

/// What the proxy does with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET` or `HEAD` of exactly `/baremetal/v1alpha/images/{id}`: served from the cache.
    ImageGet { id: &'a str, head: bool },
    /// `PATCH`, `DELETE` or `POST` on an image: forwarded, and the ID is invalidated.
    ImageMutation { id: String },
    /// Anything else: forwarded untouched, never cached.
    Passthrough,
}

impl Route<'_> {
    /// Which kind of route this is.
    pub fn kind(&self) -> RouteKind {
        match self {
            Route::ImageGet { .. } => RouteKind::ImageGet,
            Route::ImageMutation { .. } => RouteKind::ImageMutation,
            Route::Passthrough => RouteKind::Passthrough,
        }
    }
}

/// The kinds of route, as the `route` label of metrics and logs names them: computed here
/// and nowhere else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    ImageGet,
    ImageMutation,
    Passthrough,
}

impl RouteKind {
    pub const ALL: [RouteKind; 3] = [
        RouteKind::ImageGet,
        RouteKind::ImageMutation,
        RouteKind::Passthrough,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::ImageGet => "image_get",
            RouteKind::ImageMutation => "image_mutation",
            RouteKind::Passthrough => "passthrough",
        }
    }

    /// The position in [`RouteKind::ALL`], for metrics resolved up front.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Whether `id` has the shape of an image ID: `^[a-z][a-z0-9]*$`, at most 64 characters.
pub fn is_valid_image_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_ID_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|&b| ID_BYTES[usize::from(b)])
}

/// The bytes an image ID is made of, `[a-z0-9]`, as a table: one load per byte on the hot
/// path rather than two range tests.
static ID_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_lowercase() || (b as u8).is_ascii_digit();
        b += 1;
    }
    table
};

/// Classifies a request by its method and raw request target (path and query as received).
pub fn classify<'a>(method: &Method, target: &'a str) -> Route<'a> {
    if *method == Method::GET || *method == Method::HEAD {
        if let Some(id) = target.strip_prefix(IMAGES_PREFIX) {
            if is_valid_image_id(id) {
                return Route::ImageGet {
                    id,
                    head: *method == Method::HEAD,
                };
            }
        }
        return Route::Passthrough;
    }
    if *method == Method::PATCH || *method == Method::DELETE || *method == Method::POST {
        if let Some(id) = mutated_image_id(target) {
            return Route::ImageMutation { id };
        }
    }
    Route::Passthrough
}

/// The image a mutation may change. Invalidating too much is harmless and too little serves
/// a stale image, so this is lenient where `classify` is strict: the upstream may decode
/// percent-escapes, so the ID segment is decoded before it is checked, and a query string or
/// `:action` suffix is ignored.
fn mutated_image_id(target: &str) -> Option<String> {
    let path = target.split('?').next().unwrap_or(target);
    let rest = path.strip_prefix(IMAGES_PREFIX)?;
    let segment = rest.split(':').next().unwrap_or(rest);
    if segment.contains('/') {
        return None;
    }
    let id = percent_decode(segment)?.to_ascii_lowercase();
    is_valid_image_id(&id).then_some(id)
}

/// Decodes `%XX` escapes; `None` if an escape is malformed or the result is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "ly5alice0ready000001";

    #[test]
    fn exact_image_get_is_cacheable() {
        let target = format!("{IMAGES_PREFIX}{ID}");
        assert_eq!(
            classify(&Method::GET, &target),
            Route::ImageGet {
                id: ID,
                head: false
            }
        );
        assert_eq!(
            classify(&Method::HEAD, &target),
            Route::ImageGet { id: ID, head: true }
        );
    }

    #[test]
    fn look_alikes_pass_through() {
        for target in [
            format!("{IMAGES_PREFIX}{ID}/"),
            format!("{IMAGES_PREFIX}{ID}?"),
            format!("{IMAGES_PREFIX}{ID}?view=full"),
            format!("{IMAGES_PREFIX}{ID}/operations"),
            format!("{IMAGES_PREFIX}%6cy5alice0ready000001"),
            format!("{IMAGES_PREFIX}ly5%2Falice"),
            format!("{IMAGES_PREFIX}LY5ALICE0READY000001"),
            format!("{IMAGES_PREFIX}../images/{ID}"),
            format!("/baremetal/v1alpha//images/{ID}"),
            format!("/baremetal/v1alpha/images//{ID}"),
            format!("/baremetal/v1alpha/standardImages/{ID}"),
            format!("/baremetal/v2/folders/f/images/{ID}"),
            format!("{IMAGES_PREFIX}{}", "a".repeat(65)),
            format!("{IMAGES_PREFIX}1abc"),
            IMAGES_PREFIX.to_string(),
            "/baremetal/v1alpha/images".to_string(),
        ] {
            assert_eq!(
                classify(&Method::GET, &target),
                Route::Passthrough,
                "{target}"
            );
        }
    }

    #[test]
    fn other_methods_on_the_image_path() {
        let target = format!("{IMAGES_PREFIX}{ID}");
        for method in [Method::PATCH, Method::DELETE, Method::POST] {
            assert_eq!(
                classify(&method, &target),
                Route::ImageMutation { id: ID.to_string() }
            );
        }
        assert_eq!(
            classify(&Method::POST, &format!("{target}:restore")),
            Route::ImageMutation { id: ID.to_string() }
        );
        assert_eq!(
            classify(
                &Method::PATCH,
                &format!("{IMAGES_PREFIX}%6cy5alice0ready000001")
            ),
            Route::ImageMutation { id: ID.to_string() }
        );
        assert_eq!(
            classify(&Method::POST, "/baremetal/v1alpha/images"),
            Route::Passthrough
        );
        assert_eq!(classify(&Method::PUT, &target), Route::Passthrough);
        assert_eq!(classify(&Method::OPTIONS, &target), Route::Passthrough);
    }
}
