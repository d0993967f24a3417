//! `idle`: opens many synced connections spread over rooms, holds them, and reports the connect
//! rate and what the server pays to hold them.
//!
//! One process may hold at most ~20,000 files, so the parent re-executes itself as `--procs`
//! hidden `idle-worker` children, each holding its share of sockets; source addresses cycle over
//! `127.0.0.<base>..` so no source address runs out of ephemeral ports. Children talk to the
//! parent with JSON lines on stdout and wait for `close` on stdin.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::conn::{self, Target};
use crate::stats::{self, Latency};
use crate::{Common, Error, procstat, run_id};

/// Most sockets one worker process may open (its file limit is 20,000).
pub const MAX_CONNS_PER_PROC: usize = 19_000;
/// Most connections per source address (the ephemeral port range holds ~28,000).
const MAX_CONNS_PER_SOURCE_IP: usize = 25_000;

/// Options of the `idle` scenario.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    pub conns: usize,
    /// Rooms the connections are spread over (round robin).
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Worker processes (each holds at most 19,000 sockets).
    #[arg(long, default_value_t = 2)]
    pub procs: usize,
    /// Number of loopback source addresses to cycle through.
    #[arg(long, default_value_t = 4)]
    pub source_ips: u8,
    /// Last byte of the first source address (127.0.0.<base>).
    #[arg(long, default_value_t = 2)]
    pub source_ip_base: u8,
    /// Seconds to hold the connections once all are synced.
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,
    /// Connection attempts in flight per worker process.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Seconds allowed for all connections to sync.
    #[arg(long, default_value_t = 180.0)]
    pub connect_timeout: f64,
}

/// Options of a worker process (set by the parent).
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Server URL.
    #[arg(long)]
    pub url: String,
    /// Run id shared by all workers (part of the room names).
    #[arg(long)]
    pub run: String,
    /// Connections this worker opens.
    #[arg(long)]
    pub conns: usize,
    /// Global index of this worker's first connection.
    #[arg(long)]
    pub first_index: usize,
    /// Rooms in the whole run.
    #[arg(long)]
    pub rooms: usize,
    /// Number of source addresses.
    #[arg(long)]
    pub source_ips: u8,
    /// First source address's last byte.
    #[arg(long)]
    pub source_ip_base: u8,
    /// Connection attempts in flight.
    #[arg(long)]
    pub concurrency: usize,
    /// Seconds allowed for all connections to sync.
    #[arg(long)]
    pub connect_timeout: f64,
    /// Seconds after which the worker exits even without `close` from the parent.
    #[arg(long, default_value_t = 900.0)]
    pub max_lifetime: f64,
}

/// First line a worker prints: the connect phase.
#[derive(Debug, Serialize, Deserialize)]
struct WorkerSynced {
    kind: String,
    ok: u64,
    failed: u64,
    elapsed_s: f64,
    errors: Vec<String>,
    /// Connect-to-SyncStep2 latency histogram as (µs, count) pairs.
    hist: Vec<(u64, u64)>,
}

/// Second line a worker prints: the hold phase.
#[derive(Debug, Serialize, Deserialize)]
struct WorkerDone {
    kind: String,
    dropped: u64,
    cpu_s: f64,
    rss_kb: u64,
}

#[derive(Debug, Serialize)]
struct IdleResult {
    scenario: &'static str,
    conns: usize,
    rooms: usize,
    procs: usize,
    source_ips: u8,
    synced: u64,
    failed: u64,
    connect_s: f64,
    conns_per_s: f64,
    connect_latency: Latency,
    hold_s: f64,
    dropped_during_hold: u64,
    errors: Vec<String>,
    /// Server during the connect phase (start = before the first connection).
    server_connect: Option<procstat::Usage>,
    /// Server while holding.
    server_hold: Option<procstat::Usage>,
    /// Server RSS growth per held connection, KiB.
    server_kb_per_conn: Option<f64>,
    bench_cpu_s: f64,
    bench_rss_kb: u64,
    /// CPU used by other processes while connecting / holding, % of one core.
    other_cpu_pct_connect: Option<f64>,
    other_cpu_pct_hold: Option<f64>,
}

/// Raises this process's soft file limit to the hard limit.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Runs the parent: spawns the workers, holds, aggregates, prints.
///
/// Why one function: a benchmark driver run once per invocation: set up, measure, report, in the
/// order of the report it prints, over locals every phase shares; split, the phases would pass
/// those around for nothing.
pub fn run(common: &Common, args: &IdleArgs) -> Result<(), Error> {
    Target::parse_many(&common.url)?;
    if args.conns == 0 || args.rooms == 0 || args.procs == 0 {
        return Err("--conns, --rooms and --procs must be positive".into());
    }
    if args.conns > 200_000 {
        return Err("--conns above 200,000 is not supported".into());
    }
    let per_proc = args.conns.div_ceil(args.procs);
    if per_proc > MAX_CONNS_PER_PROC {
        return Err(format!(
            "{per_proc} sockets per process exceeds {MAX_CONNS_PER_PROC}: use --procs {} or more",
            args.conns.div_ceil(MAX_CONNS_PER_PROC)
        )
        .into());
    }
    let ips = usize::from(args.source_ips.max(1));
    if args.conns.div_ceil(ips) > MAX_CONNS_PER_SOURCE_IP {
        return Err(format!(
            "too many connections per source address: use --source-ips {} or more",
            args.conns.div_ceil(MAX_CONNS_PER_SOURCE_IP)
        )
        .into());
    }
    if usize::from(args.source_ip_base) + ips > 255 || args.source_ip_base == 0 {
        return Err("source addresses must stay within 127.0.0.1-254".into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let run = run_id();
    let server0 = procstat::maybe_sample(common.server_pid);
    let machine0 = procstat::machine();
    let t0 = Instant::now();

    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<String, String>)>();
    let mut children: Vec<(Child, Option<ChildStdin>)> = Vec::new();
    let mut first = 0;
    for p in 0..args.procs {
        let n = per_proc.min(args.conns - first);
        if n == 0 {
            break;
        }
        let spawned = Command::new(&exe)
            .arg("idle-worker")
            .args(["--url", &common.url, "--run", &run])
            .args(["--conns", &n.to_string()])
            .args(["--first-index", &first.to_string()])
            .args(["--rooms", &args.rooms.to_string()])
            .args(["--source-ips", &args.source_ips.to_string()])
            .args(["--source-ip-base", &args.source_ip_base.to_string()])
            .args(["--concurrency", &args.concurrency.to_string()])
            .args(["--connect-timeout", &args.connect_timeout.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                stop_children(&mut children);
                return Err(format!("spawn worker: {e}").into());
            }
        };
        let stdin = child.stdin.take();
        if let Some(out) = child.stdout.take() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let msg = line.map_err(|e| e.to_string());
                    let stop = msg.is_err();
                    if tx.send((p, msg)).is_err() || stop {
                        break;
                    }
                }
            });
        }
        children.push((child, stdin));
        first += n;
    }
    drop(tx);
    let workers = children.len();

    // Connect phase.
    let deadline = t0 + Duration::from_secs_f64(args.connect_timeout + 30.0);
    let mut synced: Vec<WorkerSynced> = Vec::new();
    let mut problems = Vec::new();
    while synced.len() < workers {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((_, Ok(line))) => match serde_json::from_str::<WorkerSynced>(&line) {
                Ok(s) if s.kind == "synced" => synced.push(s),
                _ => problems.push(format!("unexpected worker output: {line}")),
            },
            Ok((p, Err(e))) => problems.push(format!("worker {p}: {e}")),
            Err(_) => {
                problems.push("workers did not finish connecting in time".to_owned());
                break;
            }
        }
    }
    let connect_s = t0.elapsed().as_secs_f64();
    let server1 = procstat::maybe_sample(common.server_pid);
    let machine1 = procstat::machine();
    let ok: u64 = synced.iter().map(|s| s.ok).sum();
    let failed: u64 = synced.iter().map(|s| s.failed).sum();
    let mut hist = stats::new_histogram();
    for s in &synced {
        for &(v, c) in &s.hist {
            let _ = hist.record_n(v.max(1), c);
        }
    }
    let mut errors: Vec<String> = problems.clone();
    errors.extend(synced.iter().flat_map(|s| s.errors.iter().cloned()));
    println!(
        "idle: {ok}/{} connections synced ({failed} failed) in {connect_s:.2} s = {:.0} conns/s \
         over {workers} processes",
        args.conns,
        ok as f64 / connect_s
    );
    println!("  connect+sync latency: {}", Latency::of(&hist).describe());
    if let Some(pid) = common.server_pid {
        println!(
            "  holding {} s -- read the server's memory now: grep -E 'VmRSS|VmHWM' /proc/{pid}/status",
            args.hold
        );
    } else {
        println!(
            "  holding {} s -- read the server's RSS now (pass --server-pid to have it sampled)",
            args.hold
        );
    }
    let _ = std::io::stdout().flush();
    if ok > 0 {
        std::thread::sleep(Duration::from_secs_f64(args.hold.clamp(0.0, 3600.0)));
    }
    let server2 = procstat::maybe_sample(common.server_pid);
    let machine2 = procstat::machine();

    // Release the workers and collect their hold reports.
    for (_, stdin) in children.iter_mut() {
        if let Some(mut s) = stdin.take() {
            let _ = s.write_all(b"close\n");
        }
    }
    let mut done: Vec<WorkerDone> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.len() < synced.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((_, Ok(line))) => match serde_json::from_str::<WorkerDone>(&line) {
                Ok(d) if d.kind == "done" => done.push(d),
                _ => errors.push(format!("unexpected worker output: {line}")),
            },
            Ok((p, Err(e))) => errors.push(format!("worker {p}: {e}")),
            Err(_) => {
                errors.push("workers did not report after close".to_owned());
                break;
            }
        }
    }
    stop_children(&mut children);

    let usage = |a: &Option<procstat::Sample>, b: &Option<procstat::Sample>| match (a, b) {
        (Some(a), Some(b)) => Some(procstat::usage(a, b)),
        _ => None,
    };
    let server_connect = usage(&server0, &server1);
    let server_hold = usage(&server1, &server2);
    let kb_per_conn = match (&server0, &server1) {
        (Some(a), Some(b)) if ok > 0 => {
            Some(((b.rss_kb as f64 - a.rss_kb as f64) / ok as f64 * 100.0).round() / 100.0)
        }
        _ => None,
    };
    // The workers are nearly idle while holding, so only the server is left out of the hold
    // figure; the connect figure leaves out the workers' whole CPU time.
    let bench_cpu_s: f64 = done.iter().map(|d| d.cpu_s).sum();
    let other_hold = procstat::other_load(&machine1, &machine2, [(&server1, &server2)]);
    let other_connect =
        procstat::other_load(&machine0, &machine1, [(&server0, &server1)]).map(|o| {
            let wall = connect_s.max(1e-3);
            procstat::round1((o - 100.0 * bench_cpu_s / wall).max(0.0))
        });
    let result = IdleResult {
        scenario: "idle",
        conns: args.conns,
        rooms: args.rooms,
        procs: workers,
        source_ips: args.source_ips,
        synced: ok,
        failed,
        connect_s: (connect_s * 100.0).round() / 100.0,
        conns_per_s: (ok as f64 / connect_s).round(),
        connect_latency: Latency::of(&hist),
        hold_s: args.hold,
        dropped_during_hold: done.iter().map(|d| d.dropped).sum(),
        errors: errors.iter().take(10).cloned().collect(),
        server_connect,
        server_hold,
        server_kb_per_conn: kb_per_conn,
        bench_cpu_s: (bench_cpu_s * 100.0).round() / 100.0,
        bench_rss_kb: done.iter().map(|d| d.rss_kb).sum(),
        other_cpu_pct_connect: other_connect,
        other_cpu_pct_hold: other_hold,
    };
    if let Some(s) = &result.server_connect {
        println!("  server while connecting: {}", procstat::describe(s));
    }
    if let Some(s) = &result.server_hold {
        println!("  server while holding:    {}", procstat::describe(s));
    }
    if let Some(k) = result.server_kb_per_conn {
        println!("  server RSS per connection: {k:.1} KiB");
    }
    println!(
        "  dropped during hold: {}; load generator: {:.2} CPU s, {:.0} MiB RSS",
        result.dropped_during_hold,
        result.bench_cpu_s,
        result.bench_rss_kb as f64 / 1024.0
    );
    procstat::describe_other(match (other_connect, other_hold) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    });
    if !errors.is_empty() {
        println!("  PROBLEMS ({}): {:?}", errors.len(), result.errors);
    }
    stats::print_json(&result);
    Ok(())
}

/// Closes the workers' stdin, gives them a few seconds to exit, then kills the stragglers (only
/// our own children, by handle).
fn stop_children(children: &mut [(Child, Option<ChildStdin>)]) {
    for (_, stdin) in children.iter_mut() {
        stdin.take();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (child, _) in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
    }
}

/// Runs one worker process.
///
/// Why one function: one worker process's life (connect, hold, report) over shared locals, run
/// once.
pub async fn worker(args: &WorkerArgs) -> Result<(), Error> {
    raise_nofile_limit();
    let targets = Target::parse_many(&args.url)?;
    if args.conns > MAX_CONNS_PER_PROC || args.rooms == 0 {
        return Err("worker: bad --conns or --rooms".into());
    }
    let t0 = Instant::now();
    // The parent writes "close" (or goes away) when the hold is over.
    let (close_tx, mut close_rx) = watch::channel(false);
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = close_tx.send(true);
    });

    let dropped = Arc::new(AtomicU64::new(0));
    let sem = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<u64, String>>();
    let sync_timeout = Duration::from_secs_f64(args.connect_timeout.min(60.0));
    let config = conn::ws_config(4096);
    for j in 0..args.conns {
        let gi = args.first_index + j;
        let target = targets[gi % targets.len()].clone();
        let url = target.room_url(&format!("idle-{}-{}", args.run, gi % args.rooms));
        let source = conn::source_ip(args.source_ip_base, args.source_ips, gi);
        let sem = sem.clone();
        let tx = tx.clone();
        let dropped = dropped.clone();
        tokio::spawn(async move {
            let Ok(permit) = sem.acquire_owned().await else {
                return;
            };
            let start = Instant::now();
            let ws = async {
                let mut ws = conn::connect(&target, &url, Some(source), config).await?;
                conn::sync_handshake(&mut ws, sync_timeout).await?;
                Ok::<_, Error>(ws)
            }
            .await;
            drop(permit);
            let mut ws = match ws {
                Ok(ws) => ws,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = tx.send(Ok(start.elapsed().as_micros() as u64));
            drop(tx);
            // Hold: keep reading (answers pings, notices closes) until the process ends.
            loop {
                match ws.next().await {
                    Some(Ok(_)) => continue,
                    _ => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        });
    }
    drop(tx);

    let mut hist = stats::new_histogram();
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut errors = Vec::new();
    let deadline = t0 + Duration::from_secs_f64(args.connect_timeout);
    while ok + failed < args.conns as u64 {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(Ok(us))) => {
                ok += 1;
                hist.saturating_record(us.max(1));
            }
            Ok(Some(Err(e))) => {
                failed += 1;
                if errors.len() < 5 {
                    errors.push(e);
                }
            }
            Ok(None) => break,
            Err(_) => {
                let missing = args.conns as u64 - ok - failed;
                failed += missing;
                errors.push(format!("{missing} connections not synced in time"));
                break;
            }
        }
    }
    let synced = WorkerSynced {
        kind: "synced".to_owned(),
        ok,
        failed,
        elapsed_s: t0.elapsed().as_secs_f64(),
        errors,
        hist: histogram_pairs(&hist),
    };
    print_line(&synced)?;

    let lifetime = Duration::from_secs_f64(args.max_lifetime.clamp(1.0, 3600.0));
    let _ =
        tokio::time::timeout_at((t0 + lifetime).into(), close_rx.wait_for(|closed| *closed)).await;
    let me = procstat::sample(0).ok();
    let done = WorkerDone {
        kind: "done".to_owned(),
        dropped: dropped.load(Ordering::Relaxed),
        cpu_s: me
            .as_ref()
            .map(|s| procstat::ticks_to_seconds(s.cpu_ticks))
            .unwrap_or(0.0),
        rss_kb: me.map(|s| s.rss_kb).unwrap_or(0),
    };
    print_line(&done)?;
    Ok(())
}

fn histogram_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

fn print_line<T: Serialize>(v: &T) -> Result<(), Error> {
    let s = serde_json::to_string(v)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}")?;
    out.flush()?;
    Ok(())
}
