//! `throughput`: in each of N documents (`--rooms`, default 1), W writers pipeline updates as fast
//! as the server accepts them (a bounded window of unacknowledged updates, the echo being the
//! acknowledgement) and R readers only receive. Measures accepted and delivered updates per
//! second, summed over all documents. With a persisting server the echo is released only once the
//! update is durable, so "accepted" = durable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use futures::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::interval_at;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::conn::{self, Target};
use crate::editor::Editor;
use crate::proto::{self, ClockRange, Incoming};
use crate::stats::{self, Latency, Plan, SendLog};
use crate::{Common, Error, procstat, run_id};

/// Options of the `throughput` scenario.
#[derive(Debug, Clone, Args)]
pub struct ThroughputArgs {
    /// Documents written at once; `--writers` and `--readers` are per document.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Connections per document that send updates as fast as the server accepts them.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Connections per document that only receive.
    #[arg(long, default_value_t = 16)]
    pub readers: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Seconds of sending before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Most updates a writer has in flight (sent, echo not yet seen).
    #[arg(long, default_value_t = 64)]
    pub window: u32,
    /// Longest wait, in seconds, for readers to catch up after sending stops.
    #[arg(long, default_value_t = 15.0)]
    pub drain: f64,
    /// Seconds allowed for all connections to connect and sync.
    #[arg(long, default_value_t = 30.0)]
    pub connect_timeout: f64,
}

/// Ring size of the per-writer send-time logs.
const LOG_SLOTS: usize = 1 << 18;

struct Shared {
    logs: Vec<SendLog>,
    /// Updates each writer has sent so far.
    sent: Vec<AtomicU32>,
    /// Updates each writer sent in total; `u32::MAX` while still sending.
    finished: Vec<AtomicU32>,
    window: u32,
}

#[derive(Default)]
struct Counts {
    /// Writers: own updates whose echo arrived in the window. Readers: updates received in it.
    updates: u64,
    /// Frames received in the window.
    frames: u64,
    /// Updates sent in total (writers).
    sent: u64,
    /// Readers: updates sent but not yet received when the window closed.
    lag_at_end: u64,
    bad_frames: u64,
    gaps: u64,
    complete: bool,
    error: Option<String>,
}

struct Out {
    role: Role,
    counts: Counts,
    hist: Histogram<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer(usize),
    Reader,
}

#[derive(Debug, Serialize)]
struct ThroughputResult {
    scenario: &'static str,
    rooms: usize,
    /// Per document.
    writers: usize,
    /// Per document.
    readers: usize,
    window: u32,
    duration_s: f64,
    sent_total: u64,
    accepted: u64,
    accepted_per_s: f64,
    delivered: u64,
    delivered_per_s: f64,
    delivered_per_reader_per_s: f64,
    reader_frames_per_s: f64,
    updates_per_frame: f64,
    max_reader_lag_at_end: u64,
    echo_latency: Latency,
    reader_latency: Latency,
    gaps: u64,
    bad_frames: u64,
    incomplete: usize,
    errors: Vec<String>,
    server: Option<procstat::Usage>,
    bench: Option<procstat::Usage>,
    /// CPU used by other processes on the machine during the window, % of one core.
    other_cpu_pct: Option<f64>,
}

/// Runs the scenario and prints the summary.
///
/// Why one function: a benchmark driver run once per invocation: set up, measure, report, in the
/// order of the report it prints, over locals every phase shares; split, the phases would pass
/// those around for nothing.
pub async fn run(common: &Common, args: &ThroughputArgs) -> Result<(), Error> {
    if args.writers == 0 {
        return Err("need at least one writer".into());
    }
    if !(args.duration > 0.0 && args.duration <= 3600.0) {
        return Err("--duration must be in (0, 3600]".into());
    }
    if args.window == 0 || args.window as usize > LOG_SLOTS / 4 {
        return Err(format!("--window must be in 1..={}", LOG_SLOTS / 4).into());
    }
    if !(1..=10_000).contains(&args.rooms) {
        return Err("--rooms must be in 1..=10000".into());
    }
    let targets = Target::parse_many(&common.url)?;
    let run = run_id();
    // Smaller send logs when many writers run at once: each writer has at most `window` updates
    // in flight, so a few windows of slots are plenty.
    let slots = if args.rooms * args.writers > 16 {
        (args.window as usize * 16).next_power_of_two().max(4096)
    } else {
        LOG_SLOTS
    };
    let rooms: Vec<(String, Arc<Shared>)> = (0..args.rooms)
        .map(|r| {
            let name = if args.rooms == 1 {
                format!("throughput-{run}")
            } else {
                format!("throughput-{run}-{r}")
            };
            let shared = Arc::new(Shared {
                logs: (0..args.writers).map(|_| SendLog::new(slots)).collect(),
                sent: (0..args.writers).map(|_| AtomicU32::new(0)).collect(),
                finished: (0..args.writers)
                    .map(|_| AtomicU32::new(u32::MAX))
                    .collect(),
                window: args.window,
            });
            (name, shared)
        })
        .collect();
    let server0 = procstat::maybe_sample(common.server_pid);
    let per_room = args.writers + args.readers;
    let total = per_room * args.rooms;
    let (synced_tx, mut synced_rx) = mpsc::channel::<Result<(), String>>(total);
    let (plan_tx, plan_rx) = watch::channel::<Option<Plan>>(None);
    let started = Instant::now();
    let mut handles = Vec::with_capacity(total);
    for i in 0..total {
        let (name, shared) = &rooms[i / per_room];
        let target = &targets[i % targets.len()];
        let url = target.room_url(name);
        let role = if i % per_room < args.writers {
            Role::Writer(i % per_room)
        } else {
            Role::Reader
        };
        handles.push(tokio::spawn(client(
            role,
            target.clone(),
            url,
            shared.clone(),
            synced_tx.clone(),
            plan_rx.clone(),
            Duration::from_secs_f64(args.connect_timeout),
        )));
    }
    drop(synced_tx);
    let deadline = Instant::now() + Duration::from_secs_f64(args.connect_timeout);
    let mut ok = 0;
    let mut first_error = None;
    while ok < total {
        match tokio::time::timeout_at(deadline.into(), synced_rx.recv()).await {
            Ok(Some(Ok(()))) => ok += 1,
            Ok(Some(Err(e))) => {
                first_error = Some(e);
                break;
            }
            Ok(None) | Err(_) => break,
        }
    }
    if ok < total {
        drop(plan_tx);
        for h in handles {
            h.abort();
        }
        return Err(format!(
            "only {ok}/{total} connections synced; first error: {}",
            first_error.unwrap_or_else(|| "timeout".to_owned())
        )
        .into());
    }
    println!(
        "throughput: {total} connections synced in {:.2} s; writing",
        started.elapsed().as_secs_f64()
    );
    let plan = Plan::new(
        Duration::from_millis(100),
        args.warmup,
        args.duration,
        args.drain,
    );
    plan_tx.send_replace(Some(plan));
    let window = procstat::measure_window(
        common.server_pid,
        server0.as_ref(),
        plan.measure_start,
        plan.measure_end,
    )
    .await;

    let mut echo = stats::new_histogram();
    let mut reader_lat = stats::new_histogram();
    let (mut accepted, mut delivered, mut frames, mut sent_total) = (0, 0, 0, 0);
    let (mut max_lag, mut gaps, mut bad_frames, mut incomplete) = (0, 0, 0, 0);
    let mut errors = Vec::new();
    for h in handles {
        let out = match h.await {
            Ok(o) => o,
            Err(e) => {
                errors.push(format!("task failed: {e}"));
                continue;
            }
        };
        let c = &out.counts;
        match out.role {
            Role::Writer(_) => {
                accepted += c.updates;
                sent_total += c.sent;
                let _ = echo.add(&out.hist);
            }
            Role::Reader => {
                delivered += c.updates;
                frames += c.frames;
                max_lag = max_lag.max(c.lag_at_end);
                let _ = reader_lat.add(&out.hist);
            }
        }
        gaps += c.gaps;
        bad_frames += c.bad_frames;
        if !c.complete {
            incomplete += 1;
        }
        if let Some(e) = &c.error {
            errors.push(e.clone());
        }
    }
    let per_s = |n: u64| (n as f64 / args.duration).round();
    let result = ThroughputResult {
        scenario: "throughput",
        rooms: args.rooms,
        writers: args.writers,
        readers: args.readers,
        window: args.window,
        duration_s: args.duration,
        sent_total,
        accepted,
        accepted_per_s: per_s(accepted),
        delivered,
        delivered_per_s: per_s(delivered),
        delivered_per_reader_per_s: if args.readers > 0 {
            (delivered as f64 / args.duration / (args.readers * args.rooms) as f64).round()
        } else {
            0.0
        },
        reader_frames_per_s: per_s(frames),
        updates_per_frame: if frames > 0 {
            (delivered as f64 / frames as f64 * 100.0).round() / 100.0
        } else {
            0.0
        },
        max_reader_lag_at_end: max_lag,
        echo_latency: Latency::of(&echo),
        reader_latency: Latency::of(&reader_lat),
        gaps,
        bad_frames,
        incomplete,
        errors: errors.iter().take(10).cloned().collect(),
        server: window.server,
        bench: window.bench,
        other_cpu_pct: window.other_cpu_pct,
    };
    println!(
        "throughput {} room(s) × {} writers (window {}) / {} readers, {} s: accepted {:.0} \
         updates/s, delivered {:.0} updates/s to readers ({:.0} per reader, {:.2} updates per \
         frame)",
        result.rooms,
        result.writers,
        result.window,
        result.readers,
        result.duration_s,
        result.accepted_per_s,
        result.delivered_per_s,
        result.delivered_per_reader_per_s,
        result.updates_per_frame
    );
    println!("  echo (ack) latency: {}", result.echo_latency.describe());
    println!("  reader latency:     {}", result.reader_latency.describe());
    println!(
        "  max reader lag when sending stopped: {} updates",
        result.max_reader_lag_at_end
    );
    if gaps > 0 || bad_frames > 0 || incomplete > 0 || !errors.is_empty() {
        println!(
            "  PROBLEMS: {gaps} gaps, {bad_frames} bad frames, {incomplete} incomplete, {} errors {:?}",
            errors.len(),
            result.errors
        );
    }
    if let Some(s) = &result.server {
        println!("  server during window: {}", procstat::describe(s));
    }
    if let Some(b) = &result.bench {
        println!("  load generator:       {}", procstat::describe(b));
    }
    procstat::describe_other(result.other_cpu_pct);
    stats::print_json(&result);
    Ok(())
}

async fn client(
    role: Role,
    target: Target,
    url: String,
    shared: Arc<Shared>,
    synced: mpsc::Sender<Result<(), String>>,
    mut plan: watch::Receiver<Option<Plan>>,
    sync_timeout: Duration,
) -> Out {
    let mut out = Out {
        role,
        counts: Counts::default(),
        hist: stats::new_histogram(),
    };
    let connected = async {
        let mut ws = conn::connect(&target, &url, None, conn::ws_config(128 * 1024)).await?;
        conn::sync_handshake(&mut ws, sync_timeout).await?;
        Ok::<_, Error>(ws)
    }
    .await;
    let mut ws = match connected {
        Ok(ws) => {
            let _ = synced.send(Ok(())).await;
            ws
        }
        Err(e) => {
            let _ = synced.send(Err(e.to_string())).await;
            out.counts.error = Some(e.to_string());
            return out;
        }
    };
    drop(synced);
    let plan = match plan.wait_for(Option::is_some).await.map(|p| *p) {
        Ok(Some(p)) => p,
        _ => return out,
    };
    let r = match role {
        Role::Writer(w) => writer(&mut ws, w, &shared, &plan, &mut out).await,
        Role::Reader => reader(&mut ws, &shared, &plan, &mut out).await,
    };
    if let Err(e) = r {
        out.counts.error = Some(format!("{role:?}: {e}"));
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    out
}

/// Parses one received message into `ranges`; `Ok(false)` when it carries no update.
fn ranges_of(
    msg: Option<Result<Message, tungstenite::Error>>,
    ranges: &mut Vec<ClockRange>,
    counts: &mut Counts,
) -> Result<bool, Error> {
    let frame = match msg {
        None => return Err("connection closed by server".into()),
        Some(Err(e)) => return Err(format!("read: {e}").into()),
        Some(Ok(Message::Binary(b))) => b,
        Some(Ok(Message::Close(f))) => return Err(format!("server closed: {f:?}").into()),
        Some(Ok(_)) => return Ok(false),
    };
    let update = match proto::parse_frame(&frame) {
        Ok(Incoming::Update(u) | Incoming::Step2(u)) => u,
        Ok(_) => return Ok(false),
        Err(_) => {
            counts.bad_frames += 1;
            return Ok(false);
        }
    };
    if proto::update_ranges(update, ranges).is_err() {
        counts.bad_frames += 1;
        return Ok(false);
    }
    Ok(true)
}

/// Index of the writer that owns a yrs client id.
fn writer_of(client: u64, writers: usize) -> Option<usize> {
    let w = (client as usize).checked_sub(1)?;
    (w < writers).then_some(w)
}

/// One writer connection: sends its updates at the planned pace and times their echoes.
///
/// Why one function: one loop whose pacing state and counters are locals every branch updates.
async fn writer(
    ws: &mut conn::Ws,
    w: usize,
    shared: &Shared,
    plan: &Plan,
    out: &mut Out,
) -> Result<(), Error> {
    let mut editor = Editor::new(w as u64 + 1);
    let log = &shared.logs[w];
    let mut acked: u32 = 0;
    let mut sending = true;
    let mut ranges = Vec::with_capacity(8);
    tokio::time::sleep_until(plan.start.into()).await;
    loop {
        let now = Instant::now();
        if sending && now >= plan.measure_end {
            sending = false;
            shared.finished[w].store(editor.clock(), Ordering::Release);
        }
        if sending && editor.clock() - acked < shared.window {
            let t = stats::us_of(now);
            while editor.clock() - acked < shared.window {
                let (clock, frame) = editor.next_update();
                log.record(clock, t);
                ws.feed(Message::Binary(Bytes::from(frame)))
                    .await
                    .map_err(|e| format!("send: {e}"))?;
            }
            ws.flush().await.map_err(|e| format!("flush: {e}"))?;
            shared.sent[w].store(editor.clock(), Ordering::Release);
            out.counts.sent = u64::from(editor.clock());
        }
        if !sending && acked >= editor.clock() {
            out.counts.complete = true;
            return Ok(());
        }
        let wake = if sending {
            plan.measure_end
        } else {
            plan.deadline
        };
        let first = tokio::select! {
            biased;
            m = ws.next() => m,
            _ = tokio::time::sleep_until(wake.into()) => {
                if sending {
                    continue;
                }
                return Err(format!("{} updates never echoed", editor.clock() - acked).into());
            }
        };
        // Handle this message and whatever else is already buffered, then refill the window.
        let mut msg = Some(first);
        let mut budget = 256;
        while let Some(m) = msg.take() {
            if ranges_of(m, &mut ranges, &mut out.counts)? {
                let now = stats::now_us();
                let in_window = plan.in_window(now);
                if in_window {
                    out.counts.frames += 1;
                }
                for r in &ranges {
                    if r.client != w as u64 + 1 || r.end <= acked {
                        continue;
                    }
                    if let Some(s) = r.start
                        && s > acked
                    {
                        out.counts.gaps += u64::from(s - acked);
                    }
                    if in_window {
                        out.counts.updates += u64::from(r.end - acked);
                    }
                    if let Some(t) = log.get(r.end - 1)
                        && plan.in_window(t)
                    {
                        out.hist.saturating_record(now.saturating_sub(t).max(1));
                    }
                    acked = r.end;
                }
            }
            budget -= 1;
            if budget > 0 {
                msg = ws.next().now_or_never();
            }
        }
    }
}

async fn reader(
    ws: &mut conn::Ws,
    shared: &Shared,
    plan: &Plan,
    out: &mut Out,
) -> Result<(), Error> {
    let writers = shared.logs.len();
    let mut seen = vec![0u32; writers];
    let mut ranges = Vec::with_capacity(8);
    let lag_timer = tokio::time::sleep_until(plan.measure_end.into());
    tokio::pin!(lag_timer);
    let mut lag_taken = false;
    let mut check = interval_at(
        (plan.measure_end + Duration::from_millis(20)).into(),
        Duration::from_millis(50),
    );
    loop {
        tokio::select! {
            biased;
            m = ws.next() => {
                if !ranges_of(m, &mut ranges, &mut out.counts)? {
                    continue;
                }
                let now = stats::now_us();
                let in_window = plan.in_window(now);
                if in_window {
                    out.counts.frames += 1;
                }
                for r in &ranges {
                    let Some(w) = writer_of(r.client, writers) else { continue };
                    if r.end <= seen[w] {
                        continue;
                    }
                    if let Some(s) = r.start
                        && s > seen[w]
                    {
                        out.counts.gaps += u64::from(s - seen[w]);
                    }
                    if in_window {
                        out.counts.updates += u64::from(r.end - seen[w]);
                    }
                    if let Some(t) = shared.logs[w].get(r.end - 1)
                        && plan.in_window(t)
                    {
                        out.hist.saturating_record(now.saturating_sub(t).max(1));
                    }
                    seen[w] = r.end;
                }
            }
            _ = &mut lag_timer, if !lag_taken => {
                lag_taken = true;
                out.counts.lag_at_end = (0..writers)
                    .map(|w| u64::from(shared.sent[w].load(Ordering::Acquire).saturating_sub(seen[w])))
                    .sum();
            }
            _ = check.tick() => {
                let done = (0..writers).all(|w| {
                    let f = shared.finished[w].load(Ordering::Acquire);
                    f != u32::MAX && seen[w] >= f
                });
                if done {
                    out.counts.complete = true;
                    return Ok(());
                }
                if Instant::now() >= plan.deadline {
                    let missing: u64 = (0..writers)
                        .map(|w| u64::from(shared.sent[w].load(Ordering::Acquire).saturating_sub(seen[w])))
                        .sum();
                    return Err(format!("{missing} updates not received by the deadline").into());
                }
            }
        }
    }
}
