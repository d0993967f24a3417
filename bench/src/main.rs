//! `tandem-bench`: a load generator for Tandem (or any y-websocket server).
//!
//! Every simulated client is a real `yrs` document with its own client id; updates are
//! identified on receipt by (client id, clock), read from the update itself, so the tool works
//! with servers that re-encode or merge what they relay. Each scenario prints a human summary
//! and, as its last stdout line, one JSON object.

mod conn;
mod editor;
mod fanout;
mod history;
mod http;
mod idle;
mod procstat;
mod proto;
mod soak;
mod stats;
mod throughput;
mod trace;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Error type of the tool: every failure is reported as a message, never a panic.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "tandem-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Options every scenario takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Server base URL; room names are appended as the path. Only 127.0.0.0/8 is accepted.
    /// Several comma-separated URLs (the nodes of a cluster) spread the clients over them in
    /// turn.
    #[arg(long, env = "TANDEM_BENCH_URL", default_value = "ws://127.0.0.1:1234")]
    pub url: String,
    /// Server process id: its CPU time and memory are sampled from /proc and reported.
    #[arg(long, env = "TANDEM_BENCH_SERVER_PID")]
    pub server_pid: Option<u32>,
    /// Runtime threads of the load generator (1 = single-threaded runtime, the cheapest).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Rooms × clients typing at a steady rate; latency to every other client of the room.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: fanout::FanoutArgs,
    },
    /// Many synced connections held open; connect rate and server memory.
    Idle {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: idle::IdleArgs,
    },
    /// Writers pipelining updates into one document as fast as accepted; readers receiving.
    Throughput {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: throughput::ThroughputArgs,
    },
    /// Replays an editing trace into a document, one update per trace transaction, pipelined.
    TraceLoad {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: trace::TraceLoadArgs,
    },
    /// Connect → full document (SyncStep2) latency for a document not in the server's memory.
    ColdLoad {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: trace::ColdLoadArgs,
    },
    /// Times the admin history API (timeline pages, state at a point, diffs) at random points
    /// of documents written by `trace-load`, checking every answer against the trace.
    History {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: history::HistoryArgs,
    },
    /// Twenty minutes (by default) of mixed load with a database outage in the middle: server
    /// RSS over time, lost updates and crashes.
    Soak {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: soak::SoakArgs,
    },
    /// One worker process of `idle` (started by it).
    #[command(hide = true)]
    IdleWorker(idle::WorkerArgs),
}

/// A run id unique enough to give each run fresh room names.
pub fn run_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{ms:x}{:x}", std::process::id())
}

/// A single-threaded runtime for 1 thread, else a multi-threaded one.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    stats::base();
    let result: Result<(), Error> = match &cli.cmd {
        Cmd::Fanout { common, args } => runtime(common.threads)
            .map_err(Error::from)
            .and_then(|rt| rt.block_on(fanout::run(common, args))),
        Cmd::Throughput { common, args } => runtime(common.threads)
            .map_err(Error::from)
            .and_then(|rt| rt.block_on(throughput::run(common, args))),
        Cmd::TraceLoad { common, args } => runtime(common.threads)
            .map_err(Error::from)
            .and_then(|rt| rt.block_on(trace::trace_load(common, args))),
        Cmd::ColdLoad { common, args } => runtime(common.threads)
            .map_err(Error::from)
            .and_then(|rt| rt.block_on(trace::cold_load(common, args))),
        Cmd::History { common, args } => runtime(common.threads)
            .map_err(Error::from)
            .and_then(|rt| rt.block_on(history::run(common, args))),
        Cmd::Idle { common, args } => idle::run(common, args),
        Cmd::Soak { common, args } => soak::main(common, args),
        Cmd::IdleWorker(args) => runtime(1)
            .map_err(Error::from)
            .and_then(|rt| rt.block_on(idle::worker(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
