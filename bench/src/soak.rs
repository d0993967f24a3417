//! `soak`: a long mixed load against a real `tandem` process on Postgres, with a database outage
//! in the middle, checking at the end that nothing acknowledged was lost.
//!
//! The scenario owns everything it measures: it creates a fresh Postgres schema, starts a TCP
//! proxy (`testkit::Proxy`) between the server and the database, starts the server binary, runs
//! the load, cuts the proxy for `--outage` seconds in the middle, and afterwards restarts the
//! server straight on the database to read every document back from storage.
//!
//! Load, all at once:
//! - typing rooms: `--rooms` × `--writers` clients typing `--rate` updates/s each (real `yrs`
//!   documents, one character per update) plus `--readers` that only receive; every member keeps
//!   a mirror document of everything it received, for the convergence check;
//! - churn: `--churners` loops that join a room (a typing room or one of `--churn-rooms` rooms
//!   that are loaded and unloaded as people come and go), type one update, wait for its
//!   acknowledgement, and leave;
//! - silent peers: every `--silent-every` s a client joins, announces awareness, then neither
//!   reads nor answers pings; it must be closed by the server's ping timeout (or its slow-consumer
//!   limit) and its awareness must disappear for the readers of the room;
//! - malformed frames: every `--malformed-every` s a client joins and sends one bad frame
//!   (truncated, bad varint, unknown sync type, undecodable update, deeply nested update, text
//!   frame, oversized frame, one frame packed with many messages); it must be closed (any close
//!   code) while the others go on.
//!
//! Acknowledgement = the server's echo of a writer's own update, which Tandem releases only once
//! the update is durable (persist before relay). Lost updates are acknowledged clocks missing from
//! the document a fresh client receives, before and after the restart.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Transact, Update};

use crate::conn::{self, Target, Ws};
use crate::editor::{Editor, TEXT_NAME};
use crate::proto::{self, Incoming};
use crate::stats::{self, Rng};
use crate::{Common, Error, procstat, run_id};

/// Options of the `soak` scenario.
#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// The `tandem` binary to start (release build).
    #[arg(long, default_value = "target/release/tandem")]
    pub server_bin: PathBuf,
    /// Postgres to run on; a fresh schema is created in it (and dropped afterwards).
    #[arg(
        long,
        env = "TANDEM_TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub database_url: String,
    /// Seconds of load.
    #[arg(long, default_value_t = 1200.0)]
    pub duration: f64,
    /// Seconds the database is cut off, centred in the run (0 = no outage).
    #[arg(long, default_value_t = 60.0)]
    pub outage: f64,
    /// Typing rooms.
    #[arg(long, default_value_t = 20)]
    pub rooms: usize,
    /// Writers per typing room.
    #[arg(long, default_value_t = 5)]
    pub writers: usize,
    /// Readers (receive only) per typing room.
    #[arg(long, default_value_t = 2)]
    pub readers: usize,
    /// Updates per second of each writer.
    #[arg(long, default_value_t = 3.0)]
    pub rate: f64,
    /// Concurrent join-type-leave loops.
    #[arg(long, default_value_t = 8)]
    pub churners: usize,
    /// Rooms only churners visit (loaded and unloaded as they come and go).
    #[arg(long, default_value_t = 40)]
    pub churn_rooms: usize,
    /// Seconds between two silent peers.
    #[arg(long, default_value_t = 10.0)]
    pub silent_every: f64,
    /// Seconds between two malformed frames.
    #[arg(long, default_value_t = 5.0)]
    pub malformed_every: f64,
    /// Nesting depth of the deeply nested update (arrays in arrays).
    #[arg(long, default_value_t = 10_000)]
    pub nesting_depth: usize,
    /// Size of the oversized frame (the server's default limit is 16 MiB).
    #[arg(long, default_value_t = 16 * 1024 * 1024 + 1)]
    pub oversized_bytes: usize,
    /// Messages packed into one frame by the many-messages attack (query-awareness, 1 byte each).
    #[arg(long, default_value_t = 256 * 1024)]
    pub packed_messages: usize,
    /// Server `--ping-interval` (short, so silent peers are closed within the run).
    #[arg(long, default_value = "5s")]
    pub ping_interval: String,
    /// Server `--ping-timeout`.
    #[arg(long, default_value = "15s")]
    pub ping_timeout: String,
    /// Seconds between two samples of the server's RSS, CPU and fds.
    #[arg(long, default_value_t = 5.0)]
    pub sample_every: f64,
    /// Where the samples go (CSV); the server's logs go next to it.
    #[arg(long, default_value = "soak-rss.csv")]
    pub csv: PathBuf,
    /// More server options (repeatable), e.g. `--server-arg=--max-backlog-bytes=64MiB`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Keep the Postgres schema afterwards (its name is printed).
    #[arg(long)]
    pub keep_schema: bool,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Yjs client ids of silent peers start here, so readers can tell them from everyone else.
const SILENT_BASE: u64 = 1 << 50;
/// Seconds a member keeps trying to reach the final state before it reports.
const CONVERGE_WAIT: Duration = Duration::from_secs(60);
/// Longest wait for one connection's handshake.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(20);
/// Longest wait for a churner's or attacker's join and a churner's acknowledgement (covers an
/// outage in progress).
const ACK_WAIT: Duration = Duration::from_secs(120);
/// Longest wait for a server-side close after an attack.
const CLOSE_WAIT: Duration = Duration::from_secs(20);

/// What the load is told to do.
#[derive(Debug, Clone)]
enum Phase {
    /// Keep going.
    Run,
    /// Stop creating load; writers wait for their last acknowledgements.
    Stop,
    /// Read until the mirror equals the final state of the room (by room URL), then report.
    Report(Arc<HashMap<String, StateVector>>),
}

/// Phase labels of the samples.
const LABELS: [&str; 5] = ["load", "outage", "recovered", "drain", "checks"];

/// Counters every task adds to.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    member_reconnects: AtomicU64,
    churn_joins: AtomicU64,
    churn_refused: AtomicU64,
    churn_errors: AtomicU64,
    churn_acked: AtomicU64,
    churn_unacked: AtomicU64,
    silent_opened: AtomicU64,
    silent_closed: AtomicU64,
    silent_not_closed: AtomicU64,
    silent_failed: AtomicU64,
    apply_errors: AtomicU64,
    writers_done: AtomicU64,
    members_joined: AtomicU64,
}

/// Outcome counts of one kind of malformed frame.
#[derive(Debug, Default, Clone, Serialize)]
struct AttackStats {
    sent: u64,
    /// Closed by the server: close code (or "eof") → count.
    closed: BTreeMap<String, u64>,
    not_closed: u64,
    /// Could not even join (e.g. during the outage); not counted as sent.
    join_failed: u64,
}

/// State shared by every task of the run.
struct Ctx {
    target: Target,
    args: SoakArgs,
    typing_rooms: Vec<String>,
    churn_rooms: Vec<String>,
    attack_room: String,
    /// Room URL → client id → acknowledged clocks (one past the last).
    ledger: Mutex<HashMap<String, HashMap<u64, u32>>>,
    counters: Counters,
    next_client: AtomicU64,
    next_silent: AtomicU64,
    attacks: Mutex<BTreeMap<&'static str, AttackStats>>,
    label: AtomicU8,
    /// Set when the server process exits on its own.
    crashed: AtomicBool,
    ping_timeout: Duration,
}

impl Ctx {
    fn record_ack(&self, room: &str, client: u64, end: u32) {
        if let Ok(mut ledger) = self.ledger.lock() {
            let e = ledger
                .entry(room.to_owned())
                .or_default()
                .entry(client)
                .or_insert(0);
            *e = (*e).max(end);
        }
    }

    /// A writer learnt that its clocks up to `end` are durable.
    fn advance_ack(&self, room: &str, client: u64, acked: &mut u32, end: u32) {
        if end > *acked {
            self.counters
                .acked
                .fetch_add(u64::from(end - *acked), Ordering::Relaxed);
            *acked = end;
            self.record_ack(room, client, end);
        }
    }

    fn client_id(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }
}

/// Parses `500ms`, `5s`, `2m` (what the server accepts for its durations, minus the rest).
fn parse_duration(s: &str) -> Result<Duration, Error> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let v: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (like 500ms, 15s, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s or m)").into()),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// The server process and where its output goes.
struct Server {
    child: Arc<Mutex<Child>>,
    pid: u32,
}

impl Server {
    /// Starts `bin` listening on `addr` with `db_url`, its output appended to `log`.
    fn spawn(args: &SoakArgs, addr: SocketAddr, db_url: &str, log: &Path) -> Result<Server, Error> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("server log {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("server log: {e}"))?;
        let child = Command::new(&args.server_bin)
            .arg("--addr")
            .arg(addr.to_string())
            .arg("--database-url")
            .arg(db_url)
            .arg("--ping-interval")
            .arg(&args.ping_interval)
            .arg("--ping-timeout")
            .arg(&args.ping_timeout)
            .args(&args.server_args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("start {}: {e}", args.server_bin.display()))?;
        let pid = child.id();
        Ok(Server {
            child: Arc::new(Mutex::new(child)),
            pid,
        })
    }

    /// The exit status if the process has ended.
    fn exited(&self) -> Option<String> {
        let mut child = self.child.lock().ok()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("wait failed: {e}")),
        }
    }

    /// Waits until the server accepts connections (it migrates first).
    async fn wait_listening(&self, addr: SocketAddr) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                return Err(format!("server exited at start ({status})").into());
            }
            if Instant::now() > deadline {
                return Err(format!("server did not listen on {addr} within 60 s").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then waits (30 s, then SIGKILL). Returns the exit status.
    async fn stop(&self) -> String {
        if let Some(status) = self.exited() {
            return status;
        }
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return "bad pid".to_owned();
        };
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet (exited() is None).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            if Instant::now() > deadline {
                if let Ok(mut child) = self.child.lock() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return "killed after ignoring SIGTERM for 30 s".to_owned();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Entry point: builds the runtimes (the proxy gets its own thread, so a busy load generator
/// does not delay the server's database traffic) and runs the scenario.
pub fn main(common: &Common, args: &SoakArgs) -> Result<(), Error> {
    let proxy_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("soak-proxy")
        .enable_all()
        .build()?;
    let rt = crate::runtime(common.threads)?;
    let result = rt.block_on(run(common, args, proxy_rt.handle().clone()));
    drop(rt);
    proxy_rt.shutdown_background();
    result
}

/// The soak: starts the server behind a proxy, runs the rooms through a database outage in
/// the middle of the run, samples the server, and prints the summary.
///
/// Why one function: a benchmark driver run once per invocation: set up, measure, report, in the
/// order of the report it prints, over locals every phase shares; split, the phases would pass
/// those around for nothing.
async fn run(
    common: &Common,
    args: &SoakArgs,
    proxy_rt: tokio::runtime::Handle,
) -> Result<(), Error> {
    if !(args.duration >= 10.0 && args.duration <= 24.0 * 3600.0) {
        return Err("--duration must be in [10, 86400] seconds".into());
    }
    if !(0.0..=args.duration * 0.8).contains(&args.outage) {
        return Err("--outage must be in [0, 0.8 × --duration]".into());
    }
    if args.rooms == 0 || args.writers == 0 || !(args.rate > 0.0 && args.rate <= 100.0) {
        return Err("need --rooms ≥ 1, --writers ≥ 1 and --rate in (0, 100]".into());
    }
    if args.churn_rooms == 0 || args.silent_every <= 0.0 || args.malformed_every <= 0.0 {
        return Err("--churn-rooms, --silent-every and --malformed-every must be positive".into());
    }
    let target = Target::parse(&common.url)?;
    if !target.prefix.is_empty() {
        return Err("--url must have no path: the soak starts the server itself".into());
    }
    let ping_timeout = parse_duration(&args.ping_timeout)?;
    let ping_interval = parse_duration(&args.ping_interval)?;
    let run = run_id();
    let log_dir = args
        .csv
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let server_log = log_dir.join("soak-server.log");
    let restart_log = log_dir.join("soak-server-restart.log");
    let _ = std::fs::remove_file(&server_log);
    let _ = std::fs::remove_file(&restart_log);
    let mut csv = std::fs::File::create(&args.csv)
        .map_err(|e| format!("create {}: {e}", args.csv.display()))?;
    writeln!(csv, "t_s,phase,rss_kb,hwm_kb,cpu_pct,fds,threads,acked")?;

    // Database: a fresh schema, reached through the proxy while under load.
    let upstream = testkit::upstream_addr(&args.database_url);
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&upstream),
    )
    .await
    .map_err(|_| format!("Postgres at {upstream}: connect timed out"))?
    .map_err(|e| format!("Postgres at {upstream}: {e}"))?;
    let schema = testkit::PgSchema::create(&args.database_url).await;
    let proxy = proxy_rt
        .spawn(testkit::Proxy::start(upstream.clone()))
        .await
        .map_err(|e| format!("proxy: {e}"))?;
    let proxied_url = testkit::with_search_path(
        &testkit::with_host_port(&args.database_url, proxy.addr),
        &schema.name,
    );
    println!(
        "soak {run}: server {} on {} (schema {}, through proxy {}), log {}",
        args.server_bin.display(),
        target.addr,
        schema.name,
        proxy.addr,
        server_log.display()
    );
    let server = Server::spawn(args, target.addr, &proxied_url, &server_log)?;
    server.wait_listening(target.addr).await?;

    let typing_rooms: Vec<String> = (0..args.rooms)
        .map(|r| target.room_url(&format!("soak-{run}-typing-{r}")))
        .collect();
    let churn_rooms: Vec<String> = (0..args.churn_rooms)
        .map(|r| target.room_url(&format!("soak-{run}-churn-{r}")))
        .collect();
    let ctx = Arc::new(Ctx {
        target: target.clone(),
        args: args.clone(),
        attack_room: target.room_url(&format!("soak-{run}-attack")),
        typing_rooms,
        churn_rooms,
        ledger: Mutex::default(),
        counters: Counters::default(),
        next_client: AtomicU64::new(1_000_000),
        next_silent: AtomicU64::new(SILENT_BASE),
        attacks: Mutex::default(),
        label: AtomicU8::new(0),
        crashed: AtomicBool::new(false),
        ping_timeout,
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);

    // Typing rooms first; the clock starts once they are all in.
    let mut members = Vec::new();
    let mut rng = Rng(args.seed);
    let period = Duration::from_secs_f64(1.0 / args.rate);
    for room in &ctx.typing_rooms {
        for m in 0..args.writers + args.readers {
            let writes = m < args.writers;
            let offset = Duration::from_micros(rng.range(0, period.as_micros() as u64));
            members.push(tokio::spawn(member(
                Arc::clone(&ctx),
                room.clone(),
                ctx.client_id(),
                writes,
                offset,
                phase_rx.clone(),
            )));
        }
    }
    let writers_total = (args.rooms * args.writers) as u64;
    let members_total = members.len() as u64;
    let joined_by = Instant::now() + Duration::from_secs(120);
    while ctx.counters.members_joined.load(Ordering::SeqCst) < members_total
        && Instant::now() < joined_by
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{} of {members_total} room members joined; load starts",
        ctx.counters.members_joined.load(Ordering::SeqCst)
    );
    let t0 = Instant::now();
    let (sampler_stop_tx, sampler_stop) = watch::channel(false);
    let sampler = tokio::spawn(sample_loop(
        Arc::clone(&ctx),
        Arc::clone(&server.child),
        server.pid,
        t0,
        csv,
        sampler_stop,
    ));
    let mut load: Vec<JoinHandle<()>> = Vec::new();
    for c in 0..args.churners {
        load.push(tokio::spawn(churner(
            Arc::clone(&ctx),
            args.seed.wrapping_add(c as u64 + 1),
            phase_rx.clone(),
        )));
    }
    // Silent peers stop early enough for their closes and awareness removals to be seen.
    let silent_hold = ping_timeout + ping_interval + Duration::from_secs(10);
    let silent_until = t0 + Duration::from_secs_f64(args.duration).saturating_sub(silent_hold);
    load.push(tokio::spawn(silent_spawner(
        Arc::clone(&ctx),
        silent_hold,
        silent_until,
        phase_rx.clone(),
    )));
    load.push(tokio::spawn(malformed_loop(
        Arc::clone(&ctx),
        phase_rx.clone(),
    )));

    // The timeline: outage centred in the run.
    let end = t0 + Duration::from_secs_f64(args.duration);
    let outage_start = t0 + Duration::from_secs_f64((args.duration - args.outage) / 2.0);
    let outage_end = outage_start + Duration::from_secs_f64(args.outage);
    let mut outage_done = args.outage <= 0.0;
    let mut cut = false;
    let mut recovered_s: Option<f64> = None;
    let mut last_progress = t0;
    while Instant::now() < end && !ctx.crashed.load(Ordering::SeqCst) {
        let now = Instant::now();
        if !outage_done && !cut && now >= outage_start {
            proxy.cut();
            cut = true;
            ctx.label.store(1, Ordering::Relaxed);
            println!("t={:.0}s: database cut off", t0.elapsed().as_secs_f64());
        }
        if cut && now >= outage_end {
            proxy.restore();
            cut = false;
            outage_done = true;
            recovered_s = Some(t0.elapsed().as_secs_f64());
            ctx.label.store(2, Ordering::Relaxed);
            println!("t={:.0}s: database restored", t0.elapsed().as_secs_f64());
        }
        if now.duration_since(last_progress) >= Duration::from_secs(60) {
            last_progress = now;
            println!(
                "t={:.0}s: sent {}, acked {}, churn joins {}, silent {}, attacks {}",
                t0.elapsed().as_secs_f64(),
                ctx.counters.sent.load(Ordering::Relaxed),
                ctx.counters.acked.load(Ordering::Relaxed),
                ctx.counters.churn_joins.load(Ordering::Relaxed),
                ctx.counters.silent_opened.load(Ordering::Relaxed),
                attacks_sent(&ctx)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if cut {
        proxy.restore();
    }
    ctx.label.store(3, Ordering::Relaxed);
    let load_s = t0.elapsed().as_secs_f64();
    let _ = phase_tx.send(Phase::Stop);
    println!("t={load_s:.0}s: load stopped; waiting for the last acknowledgements");

    // Drain: every writer sees its last acknowledgement (or two minutes pass).
    let drain_deadline = Instant::now() + Duration::from_secs(120);
    while ctx.counters.writers_done.load(Ordering::SeqCst) < writers_total
        && Instant::now() < drain_deadline
        && !ctx.crashed.load(Ordering::SeqCst)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain_s = t0.elapsed().as_secs_f64() - load_s;
    for mut h in load {
        if tokio::time::timeout(Duration::from_secs(60), &mut h)
            .await
            .is_err()
        {
            h.abort();
        }
    }
    // What the live check holds the documents to: acknowledgements seen before it started.
    let ledger_live = ctx.ledger.lock().map(|l| l.clone()).unwrap_or_default();

    // Live check: a fresh client of every room, on the server that took the load.
    ctx.label.store(4, Ordering::Relaxed);
    let mut checks = Vec::new();
    let crashed_live = server.exited();
    let live = if crashed_live.is_none() {
        let states = fresh_states(&ctx).await;
        Some(states)
    } else {
        None
    };
    let targets: HashMap<String, StateVector> = live
        .as_ref()
        .map(|states| {
            states
                .iter()
                .filter_map(|(room, s)| Some((room.clone(), s.as_ref().ok()?.0.clone())))
                .collect()
        })
        .unwrap_or_default();
    let _ = phase_tx.send(Phase::Report(Arc::new(targets)));
    let mut reports = Vec::new();
    for h in members {
        match tokio::time::timeout(CONVERGE_WAIT + Duration::from_secs(30), h).await {
            Ok(Ok(r)) => reports.push(r),
            _ => reports.push(MemberReport::missing()),
        }
    }
    let _ = sampler_stop_tx.send(true);
    let samples = sampler.await.unwrap_or_default();

    // Crash = the process ended before we stopped it.
    let crash_status = server.exited().or(crashed_live);
    let stop_status = server.stop().await;
    drop(proxy);

    // Restart straight on the database and read everything back.
    let restarted = Server::spawn(args, target.addr, &schema.url, &restart_log)?;
    let after = match restarted.wait_listening(target.addr).await {
        Ok(()) => Some(fresh_states(&ctx).await),
        Err(e) => {
            eprintln!("restart failed: {e}");
            None
        }
    };
    let restart_stop_status = restarted.stop().await;
    if args.keep_schema {
        println!("schema kept: {}", schema.name);
    } else {
        schema.remove().await;
    }

    // Verdicts.
    let ledger = ctx.ledger.lock().map(|l| l.clone()).unwrap_or_default();
    if let Some(states) = &live {
        checks.push(check_states("live", &ledger_live, states, None));
    }
    if let Some(states) = &after {
        checks.push(check_states(
            "after restart",
            &ledger,
            states,
            live.as_ref(),
        ));
    }
    let converged = reports.iter().filter(|r| r.converged).count();
    let writer_reports = reports.iter().filter(|r| r.writer);
    let unacked: u64 = writer_reports
        .clone()
        .map(|r| u64::from(r.sent.saturating_sub(r.acked)))
        .sum();
    let ghosts: u64 = {
        let mut ids: Vec<u64> = reports
            .iter()
            .flat_map(|r| r.silent_present.clone())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len() as u64
    };
    let panics = count_panics(&server_log) + count_panics(&restart_log);
    let rss = rss_summary(&samples, load_s, recovered_s);
    let c = &ctx.counters;
    let lost_live = checks.iter().find(|c| c.when == "live").map(|c| c.lost);
    let lost_restart = checks
        .iter()
        .find(|c| c.when == "after restart")
        .map(|c| c.lost);
    let crashes = u64::from(crash_status.is_some());
    let attacks = ctx.attacks.lock().map(|a| a.clone()).unwrap_or_default();
    let result = SoakResult {
        scenario: "soak",
        duration_s: procstat::round1(load_s),
        drain_s: procstat::round1(drain_s),
        outage_s: args.outage,
        rooms: args.rooms,
        writers: args.writers,
        readers: args.readers,
        rate: args.rate,
        churners: args.churners,
        rss,
        sent: c.sent.load(Ordering::Relaxed),
        acked: c.acked.load(Ordering::Relaxed),
        unacked_after_drain: unacked,
        lost_live,
        lost_after_restart: lost_restart,
        lost: lost_live.unwrap_or(0) + lost_restart.unwrap_or(0),
        restart_mismatches: checks
            .iter()
            .find(|c| c.when == "after restart")
            .map_or(0, |c| c.mismatches),
        unreadable_rooms: checks.iter().map(|c| c.unreadable).sum(),
        clients: reports.len(),
        converged,
        // Without a live state (the server died) there was nothing to converge to.
        diverged: if live.is_some() {
            reports.len() - converged
        } else {
            0
        },
        convergence_checked: live.is_some(),
        member_reconnects: c.member_reconnects.load(Ordering::Relaxed),
        apply_errors: c.apply_errors.load(Ordering::Relaxed),
        churn_joins: c.churn_joins.load(Ordering::Relaxed),
        churn_refused: c.churn_refused.load(Ordering::Relaxed),
        churn_errors: c.churn_errors.load(Ordering::Relaxed),
        churn_acked: c.churn_acked.load(Ordering::Relaxed),
        churn_unacked: c.churn_unacked.load(Ordering::Relaxed),
        silent_opened: c.silent_opened.load(Ordering::Relaxed),
        silent_closed: c.silent_closed.load(Ordering::Relaxed),
        silent_not_closed: c.silent_not_closed.load(Ordering::Relaxed),
        silent_failed: c.silent_failed.load(Ordering::Relaxed),
        ghosts,
        attacks,
        crashes,
        crash_status,
        stop_status,
        restart_ok: after.is_some(),
        restart_stop_status,
        panics_logged: panics,
        bench_hwm_mib: procstat::sample(0).map_or(0.0, |s| mib(s.hwm_kb)),
        csv: args.csv.display().to_string(),
    };
    print_summary(&result);
    stats::print_json(&result);
    let mut failures = Vec::new();
    if result.crashes > 0 {
        failures.push("the server crashed".to_owned());
    }
    if result.lost > 0 || lost_restart.is_none() {
        failures.push(format!(
            "lost updates: {} live, {} after restart",
            fmt_opt(lost_live),
            fmt_opt(lost_restart)
        ));
    }
    if result.diverged > 0 || result.restart_mismatches > 0 || result.unreadable_rooms > 0 {
        failures.push(format!(
            "{} clients diverged, {} documents changed across the restart, {} unreadable",
            result.diverged, result.restart_mismatches, result.unreadable_rooms
        ));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("soak failed: {}", failures.join("; ")).into())
    }
}

fn fmt_opt(v: Option<u64>) -> String {
    v.map_or_else(|| "unknown".to_owned(), |v| v.to_string())
}

fn attacks_sent(ctx: &Ctx) -> u64 {
    ctx.attacks
        .lock()
        .map(|a| a.values().map(|s| s.sent).sum())
        .unwrap_or(0)
}

/// Counts lines of a server log that report a panic or a fatal runtime error (stack overflow).
fn count_panics(log: &Path) -> u64 {
    std::fs::read_to_string(log)
        .map(|s| {
            s.lines()
                .filter(|l| l.contains("panicked") || l.contains("fatal runtime error"))
                .count() as u64
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Typing-room members

/// What a writer or reader of a typing room ends with.
struct MemberReport {
    writer: bool,
    sent: u32,
    acked: u32,
    converged: bool,
    /// Silent peers whose awareness this member still sees at the end.
    silent_present: Vec<u64>,
}

impl MemberReport {
    fn missing() -> Self {
        MemberReport {
            writer: false,
            sent: 0,
            acked: 0,
            converged: false,
            silent_present: Vec::new(),
        }
    }
}

/// Everything a member received, applied to a document of its own.
struct Mirror {
    doc: Doc,
    /// Awareness presence of silent peers, as this member last heard it.
    silent: HashMap<u64, bool>,
}

impl Mirror {
    fn new() -> Self {
        Mirror {
            doc: Doc::new(),
            silent: HashMap::new(),
        }
    }

    /// Applies an update; returns false when it could not be decoded or applied.
    fn apply(&self, update: &[u8]) -> bool {
        let Ok(u) = Update::decode_v1(update) else {
            return false;
        };
        self.doc.transact_mut().apply_update(u).is_ok()
    }

    fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }

    fn clock_of(&self, client: u64) -> u32 {
        self.state_vector().get(&yrs::ClientID::new(client))
    }

    fn awareness(&mut self, frame: &[u8]) {
        if let Ok(entries) = proto::awareness_entries(frame) {
            for (client, present) in entries {
                if client >= SILENT_BASE {
                    self.silent.insert(client, present);
                }
            }
        }
    }
}

/// Joins `url`: connect, handshake, the server's SyncStep2 applied to `mirror`.
async fn join(ctx: &Ctx, url: &str, mirror: &Mirror) -> Result<Ws, String> {
    let mut ws = conn::connect(&ctx.target, url, None, conn::ws_config(64 * 1024))
        .await
        .map_err(|e| e.to_string())?;
    let step2 = conn::sync_handshake_update(&mut ws, HANDSHAKE_WAIT)
        .await
        .map_err(|e| e.to_string())?;
    if !mirror.apply(&step2) {
        ctx.counters.apply_errors.fetch_add(1, Ordering::Relaxed);
    }
    Ok(ws)
}

/// An awareness frame announcing a user named after its role and client id.
fn awareness_state(client: u64, clock: u32, role: &str) -> Vec<u8> {
    proto::frame_awareness(
        client,
        clock,
        &format!(r#"{{"user":{{"name":"{role}-{client}"}}}}"#),
    )
}

/// One writer (types `--rate` updates/s) or reader of a typing room. Reconnects when it loses
/// its connection, and then resends its edits (the server ignores what it already has).
///
/// Why one function: one client's loop across reconnects; its connection, unacknowledged edits and
/// counters are locals that every branch updates.
async fn member(
    ctx: Arc<Ctx>,
    url: String,
    client: u64,
    writes: bool,
    offset: Duration,
    mut phase: watch::Receiver<Phase>,
) -> MemberReport {
    let mut editor = writes.then(|| Editor::new(client));
    let mut mirror = Mirror::new();
    let mut acked = 0u32;
    let mut ranges = Vec::new();
    let mut awareness_clock = 0u32;
    let role = if writes { "writer" } else { "reader" };
    let mut tick = tokio::time::interval_at(
        (Instant::now() + offset).into(),
        Duration::from_secs_f64(1.0 / ctx.args.rate),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renew = tokio::time::interval(Duration::from_secs(15));
    let mut typing = writes;
    let mut done = !writes;
    let mut target: Option<Arc<HashMap<String, StateVector>>> = None;
    let mut report_deadline: Option<Instant> = None;
    let mut connections = 0u32;
    'outer: loop {
        if let Some(d) = report_deadline
            && Instant::now() > d
        {
            break;
        }
        // No final state to reach (the live check could not read the room): nothing to wait for.
        if let Phase::Report(t) = &*phase.borrow()
            && !t.contains_key(&url)
        {
            break;
        }
        let mut ws = match join(&ctx, &url, &mirror).await {
            Ok(ws) => ws,
            Err(_) => {
                // Refused (e.g. 4003 while the database is away) or timed out: retry.
                tokio::time::sleep(Duration::from_secs(1)).await;
                if report_deadline.is_none() && matches!(*phase.borrow(), Phase::Report(_)) {
                    report_deadline = Some(Instant::now() + CONVERGE_WAIT);
                }
                continue;
            }
        };
        connections += 1;
        if connections == 1 {
            ctx.counters.members_joined.fetch_add(1, Ordering::SeqCst);
        } else {
            ctx.counters
                .member_reconnects
                .fetch_add(1, Ordering::Relaxed);
        }
        // What the server sent in SyncStep2 is durable: count it as acknowledged.
        ctx.advance_ack(&url, client, &mut acked, mirror.clock_of(client));
        if let Some(ed) = &editor
            && ed.clock() > acked
            && ws
                .send(Message::Binary(Bytes::from(ed.full_update())))
                .await
                .is_err()
        {
            continue;
        }
        awareness_clock += 1;
        let aw = awareness_state(client, awareness_clock, role);
        if ws.send(Message::Binary(Bytes::from(aw))).await.is_err() {
            continue;
        }
        loop {
            // Done with the drain: all own updates acknowledged.
            if !done && !typing && editor.as_ref().is_some_and(|e| e.clock() <= acked) {
                done = true;
                ctx.counters.writers_done.fetch_add(1, Ordering::SeqCst);
            }
            if let Some(t) = &target {
                let want = t.get(&url);
                if want.is_none_or(|sv| *sv == mirror.state_vector()) {
                    break 'outer;
                }
            }
            let deadline =
                report_deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                changed = phase.changed() => {
                    if changed.is_err() {
                        break 'outer;
                    }
                    let p = phase.borrow_and_update().clone();
                    match p {
                        Phase::Run => {}
                        Phase::Stop => typing = false,
                        Phase::Report(t) => {
                            typing = false;
                            target = Some(t);
                            report_deadline = Some(Instant::now() + CONVERGE_WAIT);
                        }
                    }
                }
                msg = ws.next() => {
                    let Some(Ok(msg)) = msg else { break };
                    match msg {
                        Message::Binary(b) => match proto::parse_frame(&b) {
                            Ok(Incoming::Update(u)) | Ok(Incoming::Step2(u)) => {
                                if !mirror.apply(u) {
                                    ctx.counters.apply_errors.fetch_add(1, Ordering::Relaxed);
                                }
                                if writes && proto::update_ranges(u, &mut ranges).is_ok() {
                                    let end = ranges
                                        .iter()
                                        .filter(|r| r.client == client)
                                        .map(|r| r.end)
                                        .max()
                                        .unwrap_or(0);
                                    ctx.advance_ack(&url, client, &mut acked, end);
                                }
                            }
                            Ok(Incoming::Step1(_)) => {
                                let step2 = Bytes::from_static(&proto::STEP2_EMPTY);
                                if ws.send(Message::Binary(step2)).await.is_err() {
                                    break;
                                }
                            }
                            Ok(Incoming::Other(1)) => mirror.awareness(&b),
                            _ => {}
                        },
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
                _ = tick.tick(), if typing => {
                    if let Some(ed) = editor.as_mut() {
                        let (_, frame) = ed.next_update();
                        ctx.counters.sent.fetch_add(1, Ordering::Relaxed);
                        if ws.send(Message::Binary(Bytes::from(frame))).await.is_err() {
                            break;
                        }
                    }
                }
                _ = renew.tick() => {
                    awareness_clock += 1;
                    let aw = awareness_state(client, awareness_clock, role);
                    if ws.send(Message::Binary(Bytes::from(aw))).await.is_err() {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => break 'outer,
            }
        }
        // Connection lost: reconnect after a breath.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let converged = target
        .as_ref()
        .and_then(|t| t.get(&url))
        .is_some_and(|sv| *sv == mirror.state_vector());
    MemberReport {
        writer: writes,
        sent: editor.as_ref().map_or(0, Editor::clock),
        acked,
        converged,
        silent_present: mirror
            .silent
            .iter()
            .filter(|(_, p)| **p)
            .map(|(c, _)| *c)
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Churn

/// Joins a room, types one update, waits for its acknowledgement, lingers a moment, leaves;
/// again and again until the load stops.
async fn churner(ctx: Arc<Ctx>, seed: u64, mut phase: watch::Receiver<Phase>) {
    let mut rng = Rng(seed);
    let mut ranges = Vec::new();
    while matches!(*phase.borrow(), Phase::Run) {
        let url = if rng.range(0, 1) == 0 {
            ctx.typing_rooms[rng.range(0, ctx.typing_rooms.len() as u64 - 1) as usize].clone()
        } else {
            ctx.churn_rooms[rng.range(0, ctx.churn_rooms.len() as u64 - 1) as usize].clone()
        };
        let client = ctx.client_id();
        let mut ws = match conn::connect(&ctx.target, &url, None, conn::ws_config(64 * 1024)).await
        {
            Ok(ws) => ws,
            Err(_) => {
                ctx.counters.churn_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // While the database is away a join takes as long as the outage (a loaded room holds the
        // SyncStep2 until what it carries is durable) or is refused (a room that cannot be
        // loaded: 4003); a real client waits too.
        if let Err(e) = conn::sync_handshake(&mut ws, ACK_WAIT).await {
            if e.to_string().contains("closed before SyncStep2") {
                ctx.counters.churn_refused.fetch_add(1, Ordering::Relaxed);
            } else {
                ctx.counters.churn_errors.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        ctx.counters.churn_joins.fetch_add(1, Ordering::Relaxed);
        if !matches!(*phase.borrow(), Phase::Run) {
            // The load stopped while this join waited: no edit after the checks began.
            break;
        }
        let mut editor = Editor::new(client);
        let (_, frame) = editor.next_update();
        let sent = ws
            .send(Message::Binary(Bytes::from(awareness_state(
                client, 0, "churn",
            ))))
            .await
            .is_ok()
            && ws.send(Message::Binary(Bytes::from(frame))).await.is_ok();
        let mut acked = false;
        let ack_deadline = Instant::now() + ACK_WAIT;
        let linger = Duration::from_millis(rng.range(200, 3000));
        let mut leave_at: Option<Instant> = None;
        // Until acknowledged and lingered, the wait for the acknowledgement timed out, the load
        // stopped, or the connection ended.
        let mut waiting = sent;
        while waiting {
            let until = leave_at.unwrap_or(ack_deadline);
            tokio::select! {
                _ = phase.changed() => waiting = false,
                _ = tokio::time::sleep_until(until.into()) => waiting = false,
                msg = ws.next() => {
                    let Some(Ok(msg)) = msg else { break };
                    if let Message::Binary(b) = msg
                        && let Ok(Incoming::Update(u)) = proto::parse_frame(&b)
                        && !acked
                        && proto::update_ranges(u, &mut ranges).is_ok()
                        && ranges.iter().any(|r| r.client == client && r.end >= 1)
                    {
                        acked = true;
                        ctx.record_ack(&url, client, 1);
                        leave_at = Some(Instant::now() + linger);
                    }
                }
            }
        }
        if acked {
            ctx.counters.churn_acked.fetch_add(1, Ordering::Relaxed);
        } else {
            ctx.counters.churn_unacked.fetch_add(1, Ordering::Relaxed);
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Silent peers

/// Starts a silent peer every `--silent-every` s until `until`.
async fn silent_spawner(
    ctx: Arc<Ctx>,
    hold: Duration,
    until: Instant,
    phase: watch::Receiver<Phase>,
) {
    let mut rng = Rng(ctx.args.seed ^ 0x5113);
    let mut peers = Vec::new();
    let every = Duration::from_secs_f64(ctx.args.silent_every);
    tokio::time::sleep(every / 2).await;
    while Instant::now() < until && matches!(*phase.borrow(), Phase::Run) {
        let url =
            ctx.typing_rooms[rng.range(0, ctx.typing_rooms.len() as u64 - 1) as usize].clone();
        peers.push(tokio::spawn(silent_peer(Arc::clone(&ctx), url, hold)));
        tokio::time::sleep(every).await;
    }
    for p in peers {
        let _ = p.await;
    }
}

/// Connects, sends SyncStep1 and its awareness, then neither reads nor answers pings for `hold`
/// (not even the server's SyncStep2: a client that froze right after connecting); afterwards
/// checks (by reading on) that the server has closed the connection.
async fn silent_peer(ctx: Arc<Ctx>, url: String, hold: Duration) {
    let client = ctx.next_silent.fetch_add(1, Ordering::Relaxed);
    let Ok(mut ws) = conn::connect(&ctx.target, &url, None, conn::ws_config(64 * 1024)).await
    else {
        ctx.counters.silent_failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if ws
        .send(Message::Binary(Bytes::from_static(&proto::STEP1_EMPTY)))
        .await
        .is_err()
        || ws
            .send(Message::Binary(Bytes::from(awareness_state(
                client, 0, "silent",
            ))))
            .await
            .is_err()
    {
        ctx.counters.silent_failed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    ctx.counters.silent_opened.fetch_add(1, Ordering::Relaxed);
    // Not polling the socket: pings stay unanswered, the receive buffer fills up.
    tokio::time::sleep(hold).await;
    match closed_within(&mut ws, CLOSE_WAIT.max(ctx.ping_timeout)).await {
        Some(_) => ctx.counters.silent_closed.fetch_add(1, Ordering::Relaxed),
        None => ctx
            .counters
            .silent_not_closed
            .fetch_add(1, Ordering::Relaxed),
    };
}

/// Reads until the server closes the connection: `Some(close code or "eof"/"error")`, or
/// `None` when it is still open after `within`.
async fn closed_within(ws: &mut Ws, within: Duration) -> Option<String> {
    let read = async {
        loop {
            match ws.next().await {
                None => return "eof".to_owned(),
                Some(Err(_)) => return "reset".to_owned(),
                Some(Ok(Message::Close(frame))) => {
                    return frame
                        .map_or_else(|| "close".to_owned(), |f| u16::from(f.code).to_string());
                }
                Some(Ok(_)) => {}
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()
}

// ---------------------------------------------------------------------------------------------
// Malformed frames

/// The kinds of bad frames, sent in turn.
const ATTACKS: [&str; 8] = [
    "truncated",
    "bad-varint",
    "unknown-sync-type",
    "invalid-update",
    "deep-nesting",
    "text-frame",
    "oversized",
    "many-messages",
];

/// An update holding one item in root `nest` whose content is `depth` arrays in arrays,
/// written by hand (yrs' own encoder and decoder recurse, which is the point of the attack).
fn nested_update(client: u64, depth: usize) -> Vec<u8> {
    let mut u = Vec::with_capacity(depth * 2 + 32);
    proto::write_var_uint(&mut u, 1); // clients
    proto::write_var_uint(&mut u, 1); // structs of this client
    proto::write_var_uint(&mut u, client);
    proto::write_var_uint(&mut u, 0); // clock
    u.push(8); // Item, content Any, no origins, no parent sub
    proto::write_var_uint(&mut u, 1); // parent is a root type, by name
    proto::write_var_uint(&mut u, 4);
    u.extend_from_slice(b"nest");
    proto::write_var_uint(&mut u, 1); // one Any value
    for _ in 0..depth {
        u.extend_from_slice(&[117, 1]); // array of one element
    }
    u.push(126); // null
    proto::write_var_uint(&mut u, 0); // empty delete set
    u
}

/// The frame of one attack and the room it is sent to. Everything but the deeply nested update
/// goes to a busy typing room (whose members must not notice); the nested update, which an
/// unhardened server may accept and store, goes to a room of its own.
fn attack(ctx: &Ctx, kind: &str, rng: &mut Rng) -> (String, Message) {
    let typing = ctx.typing_rooms[rng.range(0, ctx.typing_rooms.len() as u64 - 1) as usize].clone();
    let bin = |v: Vec<u8>| Message::Binary(Bytes::from(v));
    match kind {
        "truncated" => (typing, bin(vec![0, 2, 50, 1, 2, 3])),
        "bad-varint" => (typing, bin(vec![0xff; 12])),
        "unknown-sync-type" => (typing, bin(vec![0, 7, 1, 0])),
        "invalid-update" => (
            typing,
            bin(proto::frame_update(&[3, 200, 17, 99, 42, 1, 2, 3])),
        ),
        "deep-nesting" => (
            ctx.attack_room.clone(),
            bin(proto::frame_update(&nested_update(
                ctx.client_id(),
                ctx.args.nesting_depth,
            ))),
        ),
        "text-frame" => (typing, Message::Text("hello".into())),
        "oversized" => {
            let mut v = vec![0u8; ctx.args.oversized_bytes.max(4)];
            v[..2].copy_from_slice(&[0, 2]);
            (typing, bin(v))
        }
        _ => (typing, bin(vec![3; ctx.args.packed_messages.max(1)])),
    }
}

/// Every `--malformed-every` s: join, send one bad frame, expect to be closed.
async fn malformed_loop(ctx: Arc<Ctx>, phase: watch::Receiver<Phase>) {
    let mut rng = Rng(ctx.args.seed ^ 0xbad);
    let every = Duration::from_secs_f64(ctx.args.malformed_every);
    let mut n = 0usize;
    let mut tasks = Vec::new();
    while matches!(*phase.borrow(), Phase::Run) {
        tokio::time::sleep(every).await;
        let kind = ATTACKS[n % ATTACKS.len()];
        n += 1;
        let (url, frame) = attack(&ctx, kind, &mut rng);
        let ctx = Arc::clone(&ctx);
        tasks.push(tokio::spawn(async move {
            let outcome = send_attack(&ctx, &url, frame).await;
            if let Ok(mut a) = ctx.attacks.lock() {
                let s = a.entry(kind).or_default();
                match outcome {
                    Err(()) => s.join_failed += 1,
                    Ok(closed) => {
                        s.sent += 1;
                        match closed {
                            Some(code) => *s.closed.entry(code).or_default() += 1,
                            None => s.not_closed += 1,
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// `Err` when the attacker could not join; `Ok(None)` when it was not closed.
async fn send_attack(ctx: &Ctx, url: &str, frame: Message) -> Result<Option<String>, ()> {
    let mut ws = conn::connect(&ctx.target, url, None, conn::ws_config(64 * 1024))
        .await
        .map_err(|_| ())?;
    // Joined first (during the outage that takes until the database is back), so the frame
    // lands in a room with other people in it.
    conn::sync_handshake(&mut ws, ACK_WAIT)
        .await
        .map_err(|_| ())?;
    if ws.send(frame).await.is_err() {
        // The server closed the connection while the frame was still being written.
        return Ok(Some("reset".to_owned()));
    }
    Ok(closed_within(&mut ws, CLOSE_WAIT).await)
}

// ---------------------------------------------------------------------------------------------
// Checks

/// A document as a fresh client receives it: state vector and text, or why it could not.
type Fresh = Result<(StateVector, String), String>;

/// Fetches every room with acknowledged updates, plus every typing room, with a fresh client.
async fn fresh_states(ctx: &Ctx) -> BTreeMap<String, Fresh> {
    let mut rooms: Vec<String> = ctx.typing_rooms.clone();
    if let Ok(ledger) = ctx.ledger.lock() {
        rooms.extend(ledger.keys().cloned());
    }
    rooms.sort();
    rooms.dedup();
    let mut out = BTreeMap::new();
    for room in rooms {
        let mut last = String::new();
        let mut got = None;
        for _ in 0..5 {
            let mirror = Mirror::new();
            match join(ctx, &room, &mirror).await {
                Ok(mut ws) => {
                    let text = mirror.doc.get_or_insert_text(TEXT_NAME);
                    let s = text.get_string(&mirror.doc.transact());
                    got = Some((mirror.state_vector(), s));
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    break;
                }
                Err(e) => {
                    last = e;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        out.insert(room, got.ok_or(last));
    }
    out
}

/// The verdict of one check of all documents.
struct Check {
    when: &'static str,
    lost: u64,
    mismatches: u64,
    unreadable: u64,
}

/// Lost = acknowledged clocks the document does not hold. With `before`, also counts documents
/// whose state differs from it (a restart must change nothing).
fn check_states(
    when: &'static str,
    ledger: &HashMap<String, HashMap<u64, u32>>,
    states: &BTreeMap<String, Fresh>,
    before: Option<&BTreeMap<String, Fresh>>,
) -> Check {
    let mut check = Check {
        when,
        lost: 0,
        mismatches: 0,
        unreadable: 0,
    };
    for (room, fresh) in states {
        let acked = ledger.get(room);
        let Ok((sv, text)) = fresh else {
            check.unreadable += 1;
            let n: u64 = acked.map_or(0, |a| a.values().map(|v| u64::from(*v)).sum());
            check.lost += n;
            eprintln!(
                "{when}: {room}: unreadable ({:?}); counting its {n} acknowledged updates as lost",
                fresh.as_ref().err()
            );
            continue;
        };
        for (client, end) in acked.into_iter().flatten() {
            let have = sv.get(&yrs::ClientID::new(*client));
            if have < *end {
                check.lost += u64::from(end - have);
                eprintln!(
                    "{when}: {room}: client {client} acknowledged {end} updates, document has {have}"
                );
            }
        }
        if let Some(Ok((sv0, text0))) = before.and_then(|b| b.get(room))
            && (sv0 != sv || text0 != text)
        {
            check.mismatches += 1;
            eprintln!("{when}: {room}: differs from the document before the restart");
        }
    }
    check
}

// ---------------------------------------------------------------------------------------------
// Sampling

/// One row of the series.
#[derive(Debug, Clone)]
struct Row {
    t_s: f64,
    rss_kb: u64,
    fds: Option<u64>,
    cpu_pct: f64,
}

/// Samples the server every `--sample-every` s into the CSV until told to stop; notices when the
/// process ends on its own (a crash).
async fn sample_loop(
    ctx: Arc<Ctx>,
    child: Arc<Mutex<Child>>,
    pid: u32,
    t0: Instant,
    mut csv: std::fs::File,
    mut stop: watch::Receiver<bool>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut prev: Option<procstat::Sample> = None;
    let every = Duration::from_secs_f64(ctx.args.sample_every.max(0.5));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let exited = child
            .lock()
            .ok()
            .and_then(|mut c| c.try_wait().ok().flatten());
        if let Some(status) = exited {
            if !ctx.crashed.swap(true, Ordering::SeqCst) {
                println!(
                    "t={:.0}s: SERVER EXITED ({status})",
                    t0.elapsed().as_secs_f64()
                );
            }
            break;
        }
        let Ok(s) = procstat::sample(pid) else {
            continue;
        };
        let cpu = prev.as_ref().map_or(0.0, |p| procstat::cpu_percent(p, &s));
        let t_s = s.at.duration_since(t0).as_secs_f64();
        let label = LABELS[usize::from(ctx.label.load(Ordering::Relaxed)).min(LABELS.len() - 1)];
        let _ = writeln!(
            csv,
            "{:.1},{label},{},{},{:.1},{},{},{}",
            t_s,
            s.rss_kb,
            s.hwm_kb,
            cpu,
            s.fds.map(|f| f.to_string()).unwrap_or_default(),
            s.threads,
            ctx.counters.acked.load(Ordering::Relaxed)
        );
        rows.push(Row {
            t_s,
            rss_kb: s.rss_kb,
            fds: s.fds,
            cpu_pct: cpu,
        });
        prev = Some(s);
    }
    let _ = csv.flush();
    rows
}

/// RSS over the run: start, peak and end are taken over the load (until the load stops; the
/// samples of the drain and checks are in the CSV only).
#[derive(Debug, Default, Serialize)]
struct RssSummary {
    samples: usize,
    start_mib: f64,
    peak_mib: f64,
    peak_at_s: f64,
    end_mib: f64,
    /// Least-squares slope over the second half of the load, MiB per hour.
    last_half_slope_mib_per_h: f64,
    /// The same from a minute after the database came back to the end of the load (None
    /// without an outage or when that window holds fewer than 3 samples): growth with the
    /// outage's backlog and its flush left out.
    after_recovery_slope_mib_per_h: Option<f64>,
    /// RSS once the checks were done (fresh clients loaded every document).
    after_checks_mib: f64,
    fds_start: Option<u64>,
    fds_max: Option<u64>,
    fds_end: Option<u64>,
    cpu_mean_pct: f64,
}

fn mib(kb: u64) -> f64 {
    (kb as f64 / 1024.0 * 10.0).round() / 10.0
}

/// Least-squares slope of RSS over the samples in `from..=to` seconds, MiB per hour; `None`
/// with fewer than `min` samples.
fn slope(rows: &[Row], from: f64, to: f64, min: usize) -> Option<f64> {
    let w: Vec<&Row> = rows
        .iter()
        .filter(|r| r.t_s >= from && r.t_s <= to)
        .collect();
    if w.len() < min.max(2) {
        return None;
    }
    let n = w.len() as f64;
    let mt = w.iter().map(|r| r.t_s).sum::<f64>() / n;
    let mr = w.iter().map(|r| r.rss_kb as f64).sum::<f64>() / n;
    let cov: f64 = w
        .iter()
        .map(|r| (r.t_s - mt) * (r.rss_kb as f64 - mr))
        .sum();
    let var: f64 = w.iter().map(|r| (r.t_s - mt).powi(2)).sum();
    let kb_per_s = if var > 0.0 { cov / var } else { 0.0 };
    Some(procstat::round1(kb_per_s * 3600.0 / 1024.0))
}

/// Summarises the samples; `load_s` is when the load stopped, `recovered_s` when the database
/// came back.
fn rss_summary(all: &[Row], load_s: f64, recovered_s: Option<f64>) -> RssSummary {
    let rows: Vec<Row> = all
        .iter()
        .filter(|r| r.t_s <= load_s + 0.5)
        .cloned()
        .collect();
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return RssSummary::default();
    };
    let peak = rows.iter().max_by_key(|r| r.rss_kb).unwrap_or(first);
    RssSummary {
        samples: all.len(),
        start_mib: mib(first.rss_kb),
        peak_mib: mib(peak.rss_kb),
        peak_at_s: peak.t_s.round(),
        end_mib: mib(last.rss_kb),
        last_half_slope_mib_per_h: slope(&rows, load_s / 2.0, load_s, 2).unwrap_or(0.0),
        after_recovery_slope_mib_per_h: recovered_s.and_then(|r| slope(&rows, r + 60.0, load_s, 3)),
        after_checks_mib: all.last().map_or(0.0, |r| mib(r.rss_kb)),
        fds_start: first.fds,
        fds_max: rows.iter().filter_map(|r| r.fds).max(),
        fds_end: last.fds,
        cpu_mean_pct: procstat::round1(
            rows.iter().skip(1).map(|r| r.cpu_pct).sum::<f64>() / (rows.len().max(2) - 1) as f64,
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Report

#[derive(Debug, Serialize)]
struct SoakResult {
    scenario: &'static str,
    duration_s: f64,
    drain_s: f64,
    outage_s: f64,
    rooms: usize,
    writers: usize,
    readers: usize,
    rate: f64,
    churners: usize,
    rss: RssSummary,
    sent: u64,
    acked: u64,
    unacked_after_drain: u64,
    lost_live: Option<u64>,
    lost_after_restart: Option<u64>,
    lost: u64,
    restart_mismatches: u64,
    unreadable_rooms: u64,
    clients: usize,
    converged: usize,
    diverged: usize,
    convergence_checked: bool,
    member_reconnects: u64,
    apply_errors: u64,
    churn_joins: u64,
    churn_refused: u64,
    churn_errors: u64,
    churn_acked: u64,
    churn_unacked: u64,
    silent_opened: u64,
    silent_closed: u64,
    silent_not_closed: u64,
    silent_failed: u64,
    ghosts: u64,
    attacks: BTreeMap<&'static str, AttackStats>,
    crashes: u64,
    crash_status: Option<String>,
    stop_status: String,
    restart_ok: bool,
    restart_stop_status: String,
    panics_logged: u64,
    /// Peak RSS of this load generator (its mirrors of every room included).
    bench_hwm_mib: f64,
    csv: String,
}

/// Prints the soak report.
///
/// Why one function: the report, line by line in the order it is printed.
fn print_summary(r: &SoakResult) {
    println!(
        "soak: {:.0} s of load ({} rooms × {} writers at {}/s + {} readers, {} churners), \
         database outage {:.0} s; drain {:.1} s",
        r.duration_s, r.rooms, r.writers, r.rate, r.readers, r.churners, r.outage_s, r.drain_s
    );
    let s = &r.rss;
    println!(
        "  server RSS:      start {:.1} MiB, peak {:.1} MiB (t={:.0}s), end of load {:.1} MiB, \
         after the checks {:.1} MiB ({} samples in {})",
        s.start_mib, s.peak_mib, s.peak_at_s, s.end_mib, s.after_checks_mib, s.samples, r.csv
    );
    println!(
        "  RSS slope:       last half of the load {:+.1} MiB/h; from a minute after the database \
         came back {}",
        s.last_half_slope_mib_per_h,
        s.after_recovery_slope_mib_per_h.map_or_else(
            || "n/a (too short)".to_owned(),
            |v| format!("{v:+.1} MiB/h")
        )
    );
    println!(
        "  server fds:      start {}, max {}, end {}; CPU mean {:.1}% of one core \
         (load generator: peak RSS {:.1} MiB)",
        fmt_opt(s.fds_start),
        fmt_opt(s.fds_max),
        fmt_opt(s.fds_end),
        s.cpu_mean_pct,
        r.bench_hwm_mib
    );
    println!(
        "  updates:         sent {}, acknowledged {}, unacknowledged after drain {}",
        r.sent, r.acked, r.unacked_after_drain
    );
    println!(
        "  lost updates:    {} (live {}, after restart {}); documents changed by the restart {}, \
         unreadable {}",
        r.lost,
        fmt_opt(r.lost_live),
        fmt_opt(r.lost_after_restart),
        r.restart_mismatches,
        r.unreadable_rooms
    );
    if r.convergence_checked {
        println!(
            "  convergence:     {}/{} room members hold the final document ({} reconnects, {} \
             updates they could not apply)",
            r.converged, r.clients, r.member_reconnects, r.apply_errors
        );
    } else {
        println!(
            "  convergence:     not checked (no live server to read the final documents from)"
        );
    }
    println!(
        "  churn:           {} joins, {} refused (storage away), {} errors; {} acknowledged, {} not",
        r.churn_joins, r.churn_refused, r.churn_errors, r.churn_acked, r.churn_unacked
    );
    println!(
        "  silent peers:    {} opened, {} closed by the server, {} NOT closed, {} failed to connect; \
         {} still visible to readers at the end (ghosts)",
        r.silent_opened, r.silent_closed, r.silent_not_closed, r.silent_failed, r.ghosts
    );
    for (kind, a) in &r.attacks {
        let closed: Vec<String> = a.closed.iter().map(|(c, n)| format!("{c}×{n}")).collect();
        println!(
            "  malformed {kind:<18} sent {:>3}, closed [{}], NOT closed {}, join failed {}",
            a.sent,
            closed.join(" "),
            a.not_closed,
            a.join_failed
        );
    }
    println!(
        "  crashes:         {}{}; panics in the server logs {}; stop: {}; restart {} (stop: {})",
        r.crashes,
        r.crash_status
            .as_ref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default(),
        r.panics_logged,
        r.stop_status,
        if r.restart_ok { "ok" } else { "FAILED" },
        r.restart_stop_status
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("15s").ok(), Some(Duration::from_secs(15)));
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("2m").ok(), Some(Duration::from_secs(120)));
        assert!(parse_duration("5h").is_err());
    }

    /// The hand-written nested update is what yrs would decode (checked at a depth its
    /// recursive decoder survives).
    #[test]
    fn nested_update_decodes() {
        let u = nested_update(42, 50);
        let decoded = Update::decode_v1(&u).expect("decodes");
        let sv = decoded.state_vector();
        assert_eq!(sv.get(&yrs::ClientID::new(42)), 1);
    }

    #[test]
    fn rss_slope() {
        let rows: Vec<Row> = (0..20)
            .map(|i| Row {
                t_s: f64::from(i) * 10.0,
                rss_kb: 10_240 + u64::from(i as u32) * 1024,
                fds: Some(10),
                cpu_pct: 5.0,
            })
            .collect();
        let s = rss_summary(&rows, 200.0, None);
        // 1 MiB per 10 s = 360 MiB/h.
        assert!((s.last_half_slope_mib_per_h - 360.0).abs() < 0.5, "{s:?}");
        assert_eq!(s.peak_mib, 29.0);
    }
}
