//! The `tandem` binary: parse configuration, set up logging, serve until SIGINT/SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tandem::config::{Cli, Command, Config, LogFormat};
use tandem::first_run::AdminToken;
use tandem::{Drain, backup};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tandem::logging::init(&cli.config);

    let config = &cli.config;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            let result = migrated_store(config).await.map(|store| store.backend());
            outcome(result, "migration failed", |backend| {
                tracing::info!(%backend, "migrations applied");
            })
        }
        Command::Export { all: _, dir } => {
            let result = async { backup::export_all(&migrated_store(config).await?, &dir).await };
            outcome(result.await, "export failed", |summary| {
                tracing::info!(dir = %dir.display(), ?summary, "export written");
            })
        }
        Command::Import { dir, force } => {
            let result =
                async { backup::import(&migrated_store(config).await?, &dir, force).await };
            outcome(result.await, "import failed", |summary| {
                tracing::info!(dir = %dir.display(), ?summary, "import done");
            })
        }
        Command::Serve => serve(cli.config).await,
    }
}

/// The exit code of a command, logging its outcome: `done` with the result, or `failed` with
/// the error.
fn outcome<T, E: std::fmt::Display>(
    result: Result<T, E>,
    failed: &str,
    done: impl FnOnce(T),
) -> ExitCode {
    match result {
        Ok(value) => {
            done(value);
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{failed}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The store `config` names, migrated (the offline commands need the current schema).
async fn migrated_store(config: &Config) -> Result<crdt_store::Store, crdt_store::StoreError> {
    let store = open_store(config).await?;
    store.migrate().await?;
    Ok(store)
}

/// Serves until SIGINT/SIGTERM (draining first for `--drain-grace`).
async fn serve(mut config: Config) -> ExitCode {
    let signals = Signals::new();
    let listener = match listen(config.addr) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("cannot listen on {}: {e}", config.addr);
            return ExitCode::FAILURE;
        }
    };
    let bound = listener.local_addr().unwrap_or(config.addr);
    match tandem::first_run::admin_token(&mut config, bound) {
        AdminToken::Configured => {}
        AdminToken::Generated { link, .. } => show_link(&link, config.log_format),
        AdminToken::Off(why) => tracing::info!("{why}"),
    }
    let drain = Drain::default();
    let shutdown = shutdown_signal(signals, drain.clone(), config.drain_grace);
    match tandem::serve_with_drain(listener, config, drain, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn open_store(config: &Config) -> Result<crdt_store::Store, crdt_store::StoreError> {
    tandem::storage::open_store(&config.effective_database_url(), config).await
}

/// Prints the history viewer's link. In text mode straight to standard error, so no log
/// filter hides it and a terminal shows it on a line of its own (clickable); in JSON mode as
/// a log object, so the output stays one object a line.
fn show_link(link: &str, format: LogFormat) {
    match format {
        LogFormat::Text => eprintln!(
            "\n    History viewer (one-time admin token, valid until this process stops):\n    \
             {link}\n"
        ),
        LogFormat::Json => tracing::info!(
            url = link,
            "history viewer (one-time admin token, valid until this process stops)"
        ),
    }
}

/// Pending-connection queue length. Tokio's default (128) overflows when thousands of clients
/// reconnect at once (after a restart), costing each dropped SYN a 1 s retransmit.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the listening socket with a deep accept backlog.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Which signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Interrupt,
    Terminate,
}

/// SIGINT and SIGTERM, listened to from start-up (before storage is open, so an early signal
/// is a clean stop, not a kill) until the process exits (a second signal must be seen).
struct Signals {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                int: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    #[cfg(unix)]
    async fn next(&mut self) -> Signal {
        async fn recv(s: Option<&mut tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = recv(self.int.as_mut()) => Signal::Interrupt,
            _ = recv(self.term.as_mut()) => Signal::Terminate,
        }
    }

    #[cfg(not(unix))]
    async fn next(&mut self) -> Signal {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        Signal::Interrupt
    }
}

/// Resolves when the server should shut down: at once on SIGINT; on SIGTERM after `grace`
/// spent draining (`/readyz` 503, everything still served), or at a second signal.
async fn shutdown_signal(mut signals: Signals, drain: Drain, grace: Duration) {
    let first = signals.next().await;
    if first == Signal::Terminate && !grace.is_zero() {
        drain.start();
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "SIGTERM: draining (/readyz reports 503) before shutting down"
        );
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            _ = signals.next() => {}
        }
    }
}
