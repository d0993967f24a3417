//! The default run shows everything: with `--auth open` on a loopback address and no admin
//! token configured, the binary makes a one-time admin token and prints a link to the history
//! viewer carrying it (as Jupyter does), so the demo's "History" works on the first run.

use std::net::SocketAddr;

use crate::config::{AuthMode, Config};

/// What the binary does about the admin token at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminToken {
    /// One was configured (`--admin-token`): nothing to do, nothing printed.
    Configured,
    /// A one-time token was made; the link to print carries it.
    Generated {
        /// The token (also set in the configuration).
        token: String,
        /// `http://<addr>/history?token=<token>`.
        link: String,
    },
    /// None was made; the admin API stays off. The reason is one log line.
    Off(String),
}

/// Decides, and on [`AdminToken::Generated`] sets `config.admin_token`. `addr` is the bound
/// address (the real port when `--addr` asked for port 0).
pub fn admin_token(config: &mut Config, addr: SocketAddr) -> AdminToken {
    if config.admin_token.is_some() {
        return AdminToken::Configured;
    }
    if config.auth == AuthMode::Token {
        return AdminToken::Off(
            "admin API off: no --admin-token, and none is made with --auth token".into(),
        );
    }
    if !addr.ip().is_loopback() {
        return AdminToken::Off(format!(
            "admin API off: no --admin-token, and none is made on {addr}, which is not a \
             loopback address (anyone who can reach it could use the link)"
        ));
    }
    let token = match random_token() {
        Ok(token) => token,
        Err(e) => return AdminToken::Off(format!("admin API off: no randomness for a token: {e}")),
    };
    config.admin_token = Some(token.clone());
    AdminToken::Generated {
        link: format!("http://{addr}/history?token={token}"),
        token,
    }
}

/// 32 random bytes from the OS, hex-encoded (URL-safe without escaping).
fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_open_loopback_without_token_gets_one() {
        let local: SocketAddr = "127.0.0.1:1234".parse().unwrap();
        let mut c = Config::default();
        match admin_token(&mut c, local) {
            AdminToken::Generated { token, link } => {
                assert_eq!(token.len(), 64);
                assert_eq!(link, format!("http://127.0.0.1:1234/history?token={token}"));
                assert_eq!(c.admin_token.as_deref(), Some(token.as_str()));
            }
            other => panic!("expected a token, got {other:?}"),
        }
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        let mut c = Config::default();
        assert!(matches!(
            admin_token(&mut c, v6),
            AdminToken::Generated { .. }
        ));

        let mut c = Config::default();
        let any: SocketAddr = "0.0.0.0:1234".parse().unwrap();
        assert!(matches!(admin_token(&mut c, any), AdminToken::Off(_)));
        assert_eq!(c.admin_token, None);

        let mut c = Config {
            auth: AuthMode::Token,
            ..Config::default()
        };
        assert!(matches!(admin_token(&mut c, local), AdminToken::Off(_)));

        let mut c = Config {
            admin_token: Some("x".repeat(32)),
            ..Config::default()
        };
        assert_eq!(admin_token(&mut c, local), AdminToken::Configured);
    }
}
