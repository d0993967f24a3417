//! A webhook receiver's URL, checked once at start-up: http or https, a host, no user info
//! or fragment. What the HTTP client needs from it is kept parsed.

use hyper::Uri;

/// One `--webhook-url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The URL as configured (trimmed); deliveries in the outbox name their receiver by it.
    pub(crate) url: String,
    /// Whether to speak TLS.
    pub(crate) https: bool,
    /// Host name or IP literal (without brackets), for connecting and for TLS.
    pub(crate) host: String,
    /// TCP port (the scheme's default when the URL names none).
    pub(crate) port: u16,
    /// `Host` header value.
    pub(crate) authority: String,
    /// Path and query to request (`/` when empty).
    pub(crate) path: String,
}

impl Target {
    /// Parses and checks a receiver URL; the error says what is wrong with it.
    pub(crate) fn parse(s: &str) -> Result<Target, String> {
        let url = s.trim();
        let bad = |why: &str| {
            Err(format!(
                "invalid webhook URL {url:?}: {why}; expected http(s)://host[:port][/path], \
                 e.g. https://api.example.com/hooks/tandem"
            ))
        };
        if url.is_empty() {
            return bad("empty (check for a doubled or trailing comma)");
        }
        if url.contains('#') {
            return bad("a fragment is never sent");
        }
        let Ok(uri) = url.parse::<Uri>() else {
            return bad("not a URL");
        };
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(_) => return bad("only http and https are supported"),
            None => return bad("no scheme"),
        };
        let Some(authority) = uri.authority() else {
            return bad("no host");
        };
        if authority.as_str().contains('@') {
            return bad("user info is not supported (the signature authenticates Tandem)");
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return bad("no host");
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        Ok(Target {
            url: url.to_string(),
            https,
            host: host.to_string(),
            port,
            authority: authority.as_str().to_string(),
            path: if path.is_empty() { "/".into() } else { path },
        })
    }

    /// Connections to this receiver are reused for deliveries to the same scheme, host and
    /// port.
    pub(crate) fn pool_key(&self) -> (bool, String, u16) {
        (self.https, self.host.clone(), self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let t = Target::parse(" https://api.example.com/hooks?x=1 ").expect("valid");
        assert_eq!(t.url, "https://api.example.com/hooks?x=1");
        assert!(t.https);
        assert_eq!((t.host.as_str(), t.port), ("api.example.com", 443));
        assert_eq!(t.path, "/hooks?x=1");
        let t = Target::parse("http://[::1]:8080").expect("valid");
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 8080, "/")
        );
        assert_eq!(t.authority, "[::1]:8080");
        for bad in [
            "",
            "example.com/hook",
            "ftp://example.com/",
            "ws://example.com/",
            "https://user:pw@example.com/",
            "https:///path",
            "https://example.com/#frag",
            "http://exa mple.com/",
        ] {
            let err = Target::parse(bad).expect_err(bad);
            assert!(err.contains("invalid webhook URL"), "{bad}: {err}");
        }
    }
}
