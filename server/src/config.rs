//! Server configuration: every option is a command-line flag and an environment variable.
//!
//! Tests build a [`Config`] with [`Config::default`] (the same defaults as the binary) and
//! change the fields they care about.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Longest duration any option accepts. Timers add durations to the clock, and a clock plus
/// an absurd duration (`1000000y`) overflows; ten years is longer than any server runs.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Parses durations like `500ms`, `10s`, `2m` (at most [`MAX_DURATION`]).
fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    if d > MAX_DURATION {
        return Err(format!("invalid duration {s:?}: longer than 10 years"));
    }
    Ok(d)
}

/// Parses sizes like `1048576`, `512KiB`, `16MiB`.
fn size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: usize = digits
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected e.g. 65536, 512KiB or 16MiB"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size unit {other:?}: use B, KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses one entry of `--allowed-origins`: an origin as browsers send it in `Origin`
/// (`scheme://host[:port]`, no path), surrounding spaces trimmed (`'a, b'` lists `b`), scheme
/// and host lowercased (browsers send them so). An empty entry parses as `""`: a wholly empty
/// setting (`TANDEM_ALLOWED_ORIGINS=`) means "any origin", while an empty entry in a list
/// (`a,,b`, a trailing comma) is refused by [`allowed_origins`]. Anything else is refused
/// with the reason.
pub fn origin(s: &str) -> Result<String, String> {
    let entry = s.trim();
    if entry.is_empty() {
        return Err("empty origin in the list (check for a doubled or trailing comma)".to_string());
    }
    let invalid = |why: &str| {
        Err(format!(
            "invalid origin {entry:?}: {why}; expected scheme://host[:port], e.g. https://app.example.com"
        ))
    };
    let Some((scheme, authority)) = entry.split_once("://") else {
        return invalid("no scheme");
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return invalid("bad scheme");
    }
    if authority.is_empty() {
        return invalid("no host");
    }
    if authority
        .chars()
        .any(|c| matches!(c, '/' | '?' | '#' | '@' | '*') || c.is_whitespace() || c.is_control())
    {
        return invalid("an origin has no path, query, user or wildcard");
    }
    let host = match authority.rsplit_once(':') {
        // An IPv6 literal's colons are inside brackets.
        Some((host, port)) if !port.contains(']') => {
            if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
                return invalid("bad port");
            }
            host
        }
        _ => authority,
    };
    if host.is_empty() {
        return invalid("no host");
    }
    Ok(entry.to_ascii_lowercase())
}

/// The allow-list `--allowed-origins` gives, each entry checked by [`origin`]: empty (any
/// origin) for an unset or wholly empty setting; an error for an empty entry among others.
pub fn allowed_origins(entries: &[String]) -> Result<Vec<String>, String> {
    if entries.iter().all(|e| e.trim().is_empty()) && entries.len() <= 1 {
        return Ok(Vec::new());
    }
    entries
        .iter()
        .map(|e| match origin(e)? {
            empty if empty.is_empty() => {
                Err("empty origin in the list (check for a doubled or trailing comma)".to_string())
            }
            ok => Ok(ok),
        })
        .collect()
}

/// `tandem --version`: the crate version and the git commit it was built from (`unknown` when
/// built outside a git checkout; see `build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TANDEM_GIT_COMMIT"),
    ")"
);

/// Parses `--max-messages-per-frame`: at least 1.
fn messages_per_frame(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "invalid count {s:?}: expected a whole number of at least 1"
        )),
    }
}

/// Parses `--max-nesting-depth`: 1 to [`crate::update_check::MAX_NESTING_DEPTH_CAP`].
fn nesting_depth(s: &str) -> Result<usize, String> {
    let cap = crate::update_check::MAX_NESTING_DEPTH_CAP;
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=cap).contains(&n) => Ok(n),
        _ => Err(format!("invalid depth {s:?}: expected 1 to {cap}")),
    }
}

/// The `tandem` command line.
#[derive(Debug, Parser)]
#[command(
    name = "tandem",
    version = VERSION,
    about = "Tandem: a durable Yjs (y-websocket) sync server"
)]
pub struct Cli {
    /// What to do; without a subcommand, serve.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server options.
    #[command(flatten)]
    pub config: Config,
}

/// How connections are authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// No tokens: every connection may read and write every document.
    Open,
    /// JWTs required.
    Token,
}

/// What happens to awareness from read-only connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadOnlyAwareness {
    /// Relayed like anyone's (others see read-only users' cursors and names).
    Relay,
    /// Dropped (read-only users are invisible).
    Drop,
}

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured only when standard error is a terminal).
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// Subcommands of `tandem`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve documents (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Write the whole store (documents, full history, snapshots, labels, tombstones,
    /// revocations) to a new directory; see `tandem import`. Safe while a server runs on the
    /// same database, but updates made during the export may be missed: stop the server or
    /// export from a quiet replica for an exact copy.
    Export {
        /// Export everything (required: the only kind of export; one document's state can be
        /// exported through the admin API).
        #[arg(long, required = true)]
        all: bool,
        /// Directory to create (it must not exist or be empty).
        dir: std::path::PathBuf,
    },
    /// Load a directory written by `tandem export --all` into the database (migrating it
    /// first). Refuses a store that holds any document or revocation unless `--force`.
    Import {
        /// Directory written by `tandem export --all`.
        dir: std::path::PathBuf,
        /// Import into a store that is not empty (a document whose name exists there is an
        /// error and stops the import).
        #[arg(long)]
        force: bool,
    },
}

/// Everything the server can be told. Field docs are the `--help` text.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on (HTTP and WebSocket on one port).
    #[arg(long, env = "TANDEM_ADDR", default_value = "127.0.0.1:1234")]
    pub addr: SocketAddr,

    /// Largest WebSocket message (and frame) accepted from a client; larger ones close the
    /// connection with 1009.
    #[arg(long, env = "TANDEM_MAX_MESSAGE_SIZE", default_value = "16MiB", value_parser = size)]
    pub max_message_size: usize,

    /// Most messages one WebSocket frame may carry; a frame with more closes the connection
    /// with 1008. y-websocket 3 sends one message per frame, older clients a handful. Checked
    /// while decoding, so a frame of millions of tiny messages is refused before it costs
    /// memory.
    #[arg(long, env = "TANDEM_MAX_MESSAGES_PER_FRAME", default_value_t = 64, value_parser = messages_per_frame)]
    pub max_messages_per_frame: usize,

    /// Deepest nesting of values (arrays and objects inside embedded data, JSON in formatting
    /// attributes and embeds) an update may hold; deeper updates close the connection with
    /// 1007 (admin import: 400). Yjs type nesting (nested lists, XML elements) does not count.
    /// At most 1024: thousands of levels crash JavaScript clients.
    #[arg(long, env = "TANDEM_MAX_NESTING_DEPTH", default_value_t = 128, value_parser = nesting_depth)]
    pub max_nesting_depth: usize,

    /// Frames that may wait in one connection's outgoing queue before the connection is
    /// closed with 4001 (slow consumer) so its client reconnects and resyncs.
    #[arg(long, env = "TANDEM_OUTBOX_FRAMES", default_value_t = 4096)]
    pub outbox_frames: usize,

    /// Bytes that may wait in one connection's outgoing queue before it is closed with 4001.
    #[arg(long, env = "TANDEM_OUTBOX_BYTES", default_value = "32MiB", value_parser = size)]
    pub outbox_bytes: usize,

    /// How often the server pings each connection.
    #[arg(long, env = "TANDEM_PING_INTERVAL", default_value = "10s", value_parser = duration)]
    pub ping_interval: Duration,

    /// A connection from which nothing (not even a pong) arrives for this long is closed with
    /// 4002 and its awareness removed, even while a write to it is stuck. Time during which the
    /// server does not read it (throttled by the message rate) does not count.
    #[arg(long, env = "TANDEM_PING_TIMEOUT", default_value = "25s", value_parser = duration)]
    pub ping_timeout: Duration,

    /// Awareness states not renewed for this long are removed (y-protocols uses 30 s).
    #[arg(long, env = "TANDEM_AWARENESS_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub awareness_timeout: Duration,

    /// Most client ids one connection may announce in awareness (a browser tab announces
    /// one); beyond it the connection is closed with 1008. Entries for ids other connections
    /// own (y-websocket clients echo everyone's) are ignored and do not count.
    #[arg(long, env = "TANDEM_MAX_AWARENESS_IDS_PER_CONN", default_value_t = 8)]
    pub max_awareness_ids_per_conn: usize,

    /// Most bytes of awareness state (JSON) one connection may own at once, all its ids
    /// together; beyond it the connection is closed with 1008.
    #[arg(long, env = "TANDEM_MAX_AWARENESS_BYTES_PER_CONN", default_value = "64KiB", value_parser = size)]
    pub max_awareness_bytes_per_conn: usize,

    /// How long a document with no connections stays in memory before it is unloaded.
    #[arg(long, env = "TANDEM_UNLOAD_AFTER", default_value = "10s", value_parser = duration)]
    pub unload_after: Duration,

    /// Upper bound on graceful shutdown: closing sockets and flushing storage.
    #[arg(long, env = "TANDEM_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub shutdown_timeout: Duration,

    /// Largest document name in bytes (after percent-decoding).
    #[arg(long, env = "TANDEM_MAX_NAME_LEN", default_value_t = 512)]
    pub max_name_len: usize,

    /// The path where WebSocket upgrades speak the Hocuspocus protocol (`@hocuspocus/provider`,
    /// several documents per socket) instead of y-websocket. `/` by default, the bare address
    /// Hocuspocus's docs use; set it to the path a reverse proxy forwards (e.g. `/collab`), which
    /// then is no longer a y-websocket document name. A trailing slash does not matter.
    #[arg(long, env = "TANDEM_HOCUSPOCUS_PATH", default_value = "/", value_parser = hocuspocus_path)]
    pub hocuspocus_path: String,

    /// Where documents are stored: `sqlite://path/file.db` (the default, created on first run),
    /// `postgres://user@host/db`, or `memory` (nothing is stored; for benchmarks and tests).
    /// `DATABASE_URL` is used when this is not set.
    #[arg(long, env = "TANDEM_DATABASE_URL", global = true)]
    pub database_url: Option<String>,

    /// Turns on clustering: several Tandem nodes serve the same documents, sharing the log in
    /// Postgres (required: the server refuses to start on SQLite or memory) and relaying
    /// updates, awareness and administrative actions through this Redis
    /// (`redis://host:6379`). Redis is a fast path only: a node that misses a message catches
    /// up from the log. See README, "Running more than one node".
    #[arg(long, env = "TANDEM_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of the Redis channels this cluster uses, so several clusters can share one
    /// Redis.
    #[arg(long, env = "TANDEM_REDIS_PREFIX", default_value = "tandem")]
    pub redis_prefix: String,

    /// Most database connections in the pool.
    #[arg(
        long,
        env = "TANDEM_DB_MAX_CONNECTIONS",
        default_value_t = 8,
        global = true
    )]
    pub db_max_connections: u32,

    /// Write a new snapshot once this many updates were logged since the last one.
    #[arg(long, env = "TANDEM_SNAPSHOT_EVERY_UPDATES", default_value_t = 1000)]
    pub snapshot_every_updates: u64,

    /// Write a new snapshot once this many update bytes were logged since the last one.
    #[arg(long, env = "TANDEM_SNAPSHOT_EVERY_BYTES", default_value = "4MiB", value_parser = size)]
    pub snapshot_every_bytes: usize,

    /// Delete log rows older than this that a snapshot already covers. Unset (the default):
    /// keep the whole history.
    #[arg(long, env = "TANDEM_LOG_RETENTION", value_parser = duration)]
    pub log_retention: Option<Duration>,

    /// Memory bound on updates accepted but not yet durable (while the database is slow or
    /// down). Past it, new updates are refused: the sender is closed with 1013 and keeps its
    /// edits, which it resends when it reconnects.
    #[arg(long, env = "TANDEM_MAX_BACKLOG_BYTES", default_value = "256MiB", value_parser = size)]
    pub max_backlog_bytes: usize,

    /// Memory bound on one document's pending updates: updates that arrived before the
    /// updates they build on, which yrs holds (in memory only) until the gap is filled. An
    /// update that would take the document past it closes its sender with 1008 and is not
    /// kept; the client resends it when it reconnects and resyncs.
    #[arg(long, env = "TANDEM_MAX_PENDING_BYTES", default_value = "1MiB", value_parser = size)]
    pub max_pending_bytes: usize,

    /// `open`: anyone may read and write every document (development default; a warning is
    /// logged). `token`: every connection needs a JWT granting the document.
    #[arg(long, env = "TANDEM_AUTH", value_enum, default_value_t = AuthMode::Open)]
    pub auth: AuthMode,

    /// HS256 secret for tokens (at least 32 bytes).
    #[arg(long, env = "TANDEM_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM file with an Ed25519 (EdDSA) or P-256 (ES256) public key for tokens.
    #[arg(long, env = "TANDEM_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<std::path::PathBuf>,

    /// Audience tokens must name in their `aud` claim (refused with 401 otherwise, and when
    /// they have none). Unset: `aud` is not checked.
    #[arg(long, env = "TANDEM_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Bearer token for the admin API (`/api/v1/admin/...`); without it the admin API is off.
    #[arg(long, env = "TANDEM_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Largest request body the admin API accepts (a document import); larger ones get 413.
    #[arg(long, env = "TANDEM_MAX_IMPORT_SIZE", default_value = "64MiB", value_parser = size)]
    pub max_import_size: usize,

    /// Whether awareness (cursors, names) from read-only connections is relayed.
    #[arg(long, env = "TANDEM_READONLY_AWARENESS", value_enum, default_value_t = ReadOnlyAwareness::Relay)]
    pub readonly_awareness: ReadOnlyAwareness,

    /// Allowed `Origin` headers for WebSocket upgrades, comma-separated (e.g.
    /// `https://app.example.com, https://admin.example.com`; spaces around entries are
    /// ignored, empty or malformed entries refused at start-up). Unset: any origin.
    #[arg(long, env = "TANDEM_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = origin)]
    pub allowed_origins: Vec<String>,

    /// Most connections to one document (0 = unlimited); beyond it upgrades get HTTP 429.
    #[arg(long, env = "TANDEM_MAX_CONNS_PER_DOC", default_value_t = 5000)]
    pub max_conns_per_doc: usize,

    /// Most connections from one client IP address (0 = unlimited); beyond it upgrades get
    /// HTTP 429. Off by default because many users can share one address behind NAT.
    #[arg(long, env = "TANDEM_MAX_CONNS_PER_IP", default_value_t = 0)]
    pub max_conns_per_ip: usize,

    /// Messages per second one connection may send on average (0 = unlimited). A connection
    /// above it is throttled: its socket is not read until the budget refills, so TCP slows
    /// the sender down; it is not closed. Only a single frame holding more messages than
    /// `--message-burst` is closed with 4429.
    #[arg(long, env = "TANDEM_MAX_MESSAGES_PER_SEC", default_value_t = 500)]
    pub max_messages_per_sec: u32,

    /// Burst allowance for `--max-messages-per-sec` (at least the rate); also the most
    /// messages one frame may hold before the connection is closed with 4429.
    #[arg(long, env = "TANDEM_MESSAGE_BURST", default_value_t = 2000)]
    pub message_burst: u32,

    /// A connection that sends no message within this time after the upgrade is closed with
    /// 4408.
    #[arg(long, env = "TANDEM_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub handshake_timeout: Duration,

    /// A connection that sends no message (pongs do not count) for this long is closed with
    /// 4409. y-websocket clients renew awareness every 15 s, so a live editor never idles.
    #[arg(long, env = "TANDEM_IDLE_TIMEOUT", default_value = "30m", value_parser = duration)]
    pub idle_timeout: Duration,

    /// URL that document events are POSTed to, signed (webhooks): `document.created`,
    /// `document.changed`, `document.restored`, `document.deleted`. Repeat the flag, or
    /// separate URLs with commas, for several receivers. http or https only; needs
    /// `--webhook-secret` and durable storage.
    #[arg(long = "webhook-url", env = "TANDEM_WEBHOOK_URL", value_delimiter = ',', value_parser = webhook_url)]
    pub webhook_urls: Vec<String>,

    /// Secret the webhook signatures (`Tandem-Signature`, HMAC-SHA256) are made with; at
    /// least 16 bytes. Required with `--webhook-url`.
    #[arg(long, env = "TANDEM_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// How long a document's changes are gathered into one `document.changed` event (its seq
    /// range and authors), counted from the first change after the last event.
    #[arg(long, env = "TANDEM_WEBHOOK_COALESCE", default_value = "2s", value_parser = duration)]
    pub webhook_coalesce: Duration,

    /// Wait before the first retry of a webhook delivery that was not answered 2xx; it
    /// doubles with each failure (with jitter) up to `--webhook-retry-max`. Retries go on
    /// until a 2xx.
    #[arg(long, env = "TANDEM_WEBHOOK_RETRY_MIN", default_value = "1s", value_parser = duration)]
    pub webhook_retry_min: Duration,

    /// Longest wait between two attempts of one webhook delivery.
    #[arg(long, env = "TANDEM_WEBHOOK_RETRY_MAX", default_value = "5m", value_parser = duration)]
    pub webhook_retry_max: Duration,

    /// A webhook receiver that has not answered within this time (connecting included) counts
    /// as failed for that attempt.
    #[arg(long, env = "TANDEM_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub webhook_timeout: Duration,

    /// Log filter, in `tracing` env-filter syntax (e.g. `info`, `tandem=debug`).
    #[arg(long, env = "TANDEM_LOG", default_value = "info", global = true)]
    pub log: String,

    /// Log line format: `text` (coloured only on a terminal) or `json` (one object a line).
    #[arg(long, env = "TANDEM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// On SIGTERM, how long `/readyz` reports 503 (draining) while everything is still
    /// served, so load balancers stop sending new clients before sockets close. SIGINT
    /// (Ctrl-C) and a second signal skip it.
    #[arg(long, env = "TANDEM_DRAIN_GRACE", default_value = "5s", value_parser = duration)]
    pub drain_grace: Duration,
}

/// The embedded default database, relative to the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/tandem.db";

impl Config {
    /// The database URL in effect: `--database-url`, else `DATABASE_URL`, else the embedded
    /// SQLite file.
    pub fn effective_database_url(&self) -> String {
        self.database_url
            .clone()
            .or_else(|| std::env::var("DATABASE_URL").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string())
    }
}

/// Parses one `--webhook-url` (see [`crate::webhooks::target::Target::parse`]).
fn webhook_url(s: &str) -> Result<String, String> {
    crate::webhooks::target::Target::parse(s).map(|t| t.url)
}

/// A `--hocuspocus-path`: starts with `/`; stored without trailing slashes (`/` stays `/`).
fn hocuspocus_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err("must start with /".into());
    }
    let trimmed = s.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/" } else { trimmed }.to_string())
}

impl Default for Config {
    fn default() -> Self {
        // The binary's defaults, parsed from an empty command line so they cannot drift.
        Cli::parse_from(["tandem"]).config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(size("16MiB"), Ok(16 << 20));
        assert_eq!(size("512KiB"), Ok(512 << 10));
        assert_eq!(size("100"), Ok(100));
        assert!(size("12 parsecs").is_err());
        assert!(size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn durations_parse_within_ten_years() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("3650days"), Ok(MAX_DURATION));
        // A clock plus this would overflow in the timers: refused at start-up instead.
        assert!(duration("1000000years").is_err());
        assert!(duration("ten seconds").is_err());
    }

    #[test]
    fn defaults_are_sane() {
        let c = Config::default();
        assert_eq!(c.addr.port(), 1234);
        assert!(c.ping_timeout > c.ping_interval);
    }

    #[test]
    fn origins_are_trimmed_and_checked() {
        assert_eq!(
            origin(" https://a.example "),
            Ok("https://a.example".into())
        );
        assert_eq!(origin("HTTP://Local:8080"), Ok("http://local:8080".into()));
        assert_eq!(origin("http://[::1]:3000"), Ok("http://[::1]:3000".into()));
        assert_eq!(origin("app://x"), Ok("app://x".into()));
        for bad in [
            "",
            " ",
            "a.example",
            "https://",
            "https://a/",
            "https://a/path",
            "https://a:",
            "https://a:x",
            "https://*.a",
            "1http://a",
            "https://u@a",
        ] {
            assert!(origin(bad).is_err(), "{bad:?}");
        }
        let cli = Cli::try_parse_from(["tandem", "--allowed-origins", "https://a, https://b"])
            .expect("parse");
        assert_eq!(cli.config.allowed_origins, ["https://a", "https://b"]);
        for bad in ["https://a,", "https://a,,https://b", "https://a, nope"] {
            let err = Cli::try_parse_from(["tandem", "--allowed-origins", bad])
                .expect_err(bad)
                .to_string();
            assert!(err.contains("origin"), "{bad}: {err}");
        }
    }

    #[test]
    fn frame_limit_defaults_match_the_flags() {
        let c = Config::default();
        assert_eq!(
            crate::protocol::frame_limits(&c),
            crate::protocol::FrameLimits::DEFAULT
        );
        assert_eq!(c.max_pending_bytes, 1 << 20);
    }

    #[test]
    fn limit_flags_are_checked() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["tandem"], args].concat());
        assert!(parse(&["--max-nesting-depth", "0"]).is_err());
        assert!(parse(&["--max-nesting-depth", "1025"]).is_err());
        assert!(parse(&["--max-nesting-depth", "1024"]).is_ok());
        assert!(parse(&["--max-messages-per-frame", "0"]).is_err());
        assert!(parse(&["--max-pending-bytes", "4MiB"]).is_ok());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
