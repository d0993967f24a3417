//! How a request path becomes a document name.
//!
//! The y-websocket provider connects to `<server url>/<room name>`, and browsers and the `ws`
//! package percent-encode what a URL path cannot carry (spaces, Unicode). The document name is
//! therefore the path after the first `/`, percent-decoded, with the query string already
//! stripped: `/notes/2024%20plan` → `notes/2024 plan`, `/%C3%BC` and `/ü` → `ü`. A `%` not followed
//! by two hex digits is kept literally. Consequently `a%20b` and `a b` name the same document.

use percent_encoding::percent_decode_str;

/// Why a path is not a usable document name (answered with HTTP 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// The path is `/`.
    #[error("document name is empty: connect to /<document name>")]
    Empty,
    /// Longer than the configured limit.
    #[error("document name is longer than {0} bytes")]
    TooLong(usize),
    /// Percent-escapes that decode to invalid UTF-8.
    #[error("document name is not valid UTF-8 after percent-decoding")]
    NotUtf8,
    /// Control characters (including NUL) would corrupt logs and storage keys.
    #[error("document name contains control characters")]
    Control,
}

/// The document name for request path `path` (which starts with `/`).
pub fn from_path(path: &str, max_len: usize) -> Result<String, NameError> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    if raw.is_empty() {
        return Err(NameError::Empty);
    }
    let name = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| NameError::NotUtf8)?
        .into_owned();
    validate(name, max_len)
}

/// Checks an already decoded document name (from the admin API's path) by the same rules.
pub fn validate(name: String, max_len: usize) -> Result<String, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max_len {
        return Err(NameError::TooLong(max_len));
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(from_path("/doc", 512), Ok("doc".into()));
        assert_eq!(from_path("/a/b/c", 512), Ok("a/b/c".into()));
        assert_eq!(from_path("/with%20space", 512), Ok("with space".into()));
        assert_eq!(from_path("/%C3%BC-%E6%96%87", 512), Ok("ü-文".into()));
        assert_eq!(from_path("/ü", 512), Ok("ü".into()));
        assert_eq!(from_path("/100%", 512), Ok("100%".into()));
        assert_eq!(from_path("/metrics", 512), Ok("metrics".into()));
        assert_eq!(from_path("/", 512), Err(NameError::Empty));
        assert_eq!(from_path("/%FF", 512), Err(NameError::NotUtf8));
        assert_eq!(from_path("/a%00b", 512), Err(NameError::Control));
        assert_eq!(from_path("/abcdef", 5), Err(NameError::TooLong(5)));
    }
}
