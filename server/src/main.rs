//! The `tandem` binary: parse configuration, set up logging, serve until SIGINT/SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use tandem::config::{Cli, Command};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.config.log).unwrap_or_else(|e| {
        eprintln!(
            "invalid --log filter {:?}: {e}; using \"info\"",
            cli.config.log
        );
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            let url = cli.config.effective_database_url();
            let result = async {
                let store = tandem::storage::open_store(&url, &cli.config).await?;
                store.migrate().await?;
                Ok::<_, crdt_store::StoreError>(store.backend())
            };
            match result.await {
                Ok(backend) => {
                    tracing::info!(%backend, "migrations applied");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tracing::error!("migration failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve => {
            let listener = match listen(cli.config.addr) {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::error!("cannot listen on {}: {e}", cli.config.addr);
                    return ExitCode::FAILURE;
                }
            };
            match tandem::serve(listener, cli.config, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
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

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
