//! How a request path becomes a document name.
//!
//! Distinct URL paths must be distinct documents: a reverse proxy that guards `/team/` sees
//! `/team%2Fsecret` as a different path (RFC 3986, 6.2.2.2: a percent-encoded reserved
//! character is not the same as the literal one), so Tandem must not open `team/secret` for
//! it. The name is therefore the path after the first `/` (the query string is not part of
//! it) with only the escapes that RFC 3986 says are equivalent to their character decoded:
//!
//! - an escape of a character that is not reserved is decoded: unreserved ASCII (`%41` → `A`,
//!   `%7E` → `~`), other ASCII that a URL cannot carry literally (`%20` → space, `%22` → `"`),
//!   and UTF-8 sequences (`%C3%BC` → `ü`);
//! - an escape of a reserved character (gen-delims `:/?#[]@`, sub-delims `!$&'()*+,;=`) or of
//!   `%` itself is kept as an escape, normalised to uppercase hex (`%2f` → `%2F`), so
//!   `/a%2Fb` is the document `a%2Fb` and `/a/b` is `a/b`;
//! - a `%` not followed by two hex digits is kept as it is (`/100%` → `100%`).
//!
//! The result is the same for every spelling of one RFC 3986 path (`/%61` and `/a` are both
//! `a`), and differs for paths a proxy tells apart. Token grants (`team/*`) match this name.

/// Why a path is not a usable document name (answered with HTTP 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum NameError {
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

/// RFC 3986 reserved characters (gen-delims and sub-delims) and `%`: their escapes are kept.
fn keeps_escape(b: u8) -> bool {
    matches!(
        b,
        b':' | b'/'
            | b'?'
            | b'#'
            | b'['
            | b']'
            | b'@'
            | b'!'
            | b'$'
            | b'&'
            | b'\''
            | b'('
            | b')'
            | b'*'
            | b'+'
            | b','
            | b';'
            | b'='
            | b'%'
    )
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Decodes the escapes of `raw` that name a non-reserved character (see the module docs).
fn decode(raw: &str) -> Result<String, NameError> {
    const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match (bytes.get(i), bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(b'%'), Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| (h << 4) | l),
            _ => None,
        };
        match escaped {
            Some(b) if keeps_escape(b) => {
                out.extend_from_slice(&[
                    b'%',
                    UPPER_HEX[usize::from(b >> 4)],
                    UPPER_HEX[usize::from(b & 0xF)],
                ]);
                i += 3;
            }
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| NameError::NotUtf8)
}

/// The document name for request path `path` (which starts with `/`).
pub(crate) fn from_path(path: &str, max_len: usize) -> Result<String, NameError> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    if raw.is_empty() {
        return Err(NameError::Empty);
    }
    validate(decode(raw)?, max_len)
}

/// Checks an already decoded document name (from the admin API's path) by the same rules.
pub(crate) fn validate(name: String, max_len: usize) -> Result<String, NameError> {
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

    fn name(path: &str) -> Result<String, NameError> {
        from_path(path, 512)
    }

    #[test]
    fn plain_names() {
        assert_eq!(name("/doc"), Ok("doc".into()));
        assert_eq!(name("/a/b/c"), Ok("a/b/c".into()));
        assert_eq!(name("/ü"), Ok("ü".into()));
        assert_eq!(name("/metrics"), Ok("metrics".into()));
        assert_eq!(name("/a:b@c+d"), Ok("a:b@c+d".into()));
    }

    #[test]
    fn escapes_of_non_reserved_characters_are_decoded() {
        assert_eq!(name("/with%20space"), Ok("with space".into()));
        assert_eq!(name("/%C3%BC-%E6%96%87"), Ok("ü-文".into()));
        assert_eq!(name("/%c3%bc"), Ok("ü".into()));
        // Unreserved: the same document as the literal spelling (RFC 3986 6.2.2.2).
        assert_eq!(name("/%61%2D%2e%5F%7e%30"), Ok("a-._~0".into()));
        assert_eq!(
            name("/%22q%22%3C%3E%5C%5E%60%7B%7C%7D"),
            Ok("\"q\"<>\\^`{|}".into())
        );
    }

    #[test]
    fn escapes_of_reserved_characters_stay_escapes_in_uppercase() {
        assert_eq!(name("/a%2Fb"), Ok("a%2Fb".into()));
        assert_eq!(name("/a%2fb"), Ok("a%2Fb".into()));
        assert_eq!(name("/team%2Fsecret"), Ok("team%2Fsecret".into()));
        assert_ne!(name("/a%2Fb"), name("/a/b"));
        for (b, c) in ":/?#[]@!$&'()*+,;=%".bytes().map(|b| (b, char::from(b))) {
            let path = format!("/x%{b:02x}y");
            assert_eq!(name(&path), Ok(format!("x%{b:02X}y")), "{c}");
        }
        // An escaped `%` is not decoded, so it cannot form a second escape.
        assert_eq!(name("/100%25"), Ok("100%25".into()));
        assert_eq!(name("/%252F"), Ok("%252F".into()));
    }

    #[test]
    fn lone_percent_is_kept() {
        assert_eq!(name("/100%"), Ok("100%".into()));
        assert_eq!(name("/a%zzb"), Ok("a%zzb".into()));
        assert_eq!(name("/a%2"), Ok("a%2".into()));
        assert_eq!(name("/%%41"), Ok("%A".into()));
    }

    #[test]
    fn refusals() {
        assert_eq!(name("/"), Err(NameError::Empty));
        assert_eq!(name("/%FF"), Err(NameError::NotUtf8));
        assert_eq!(name("/%C3"), Err(NameError::NotUtf8));
        assert_eq!(name("/a%00b"), Err(NameError::Control));
        assert_eq!(name("/a%0Ab"), Err(NameError::Control));
        assert_eq!(from_path("/abcdef", 5), Err(NameError::TooLong(5)));
        // The limit applies to the name, after decoding.
        assert_eq!(from_path("/%41%42%43", 3), Ok("ABC".into()));
    }
}
