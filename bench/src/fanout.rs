//! `fanout`: R rooms × C clients, every client types at a steady rate; measures how long each
//! update takes to reach every other client of its room.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::{MissedTickBehavior, interval_at};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, Target};
use crate::editor::Editor;
use crate::proto::{self, Incoming};
use crate::stats::{self, Latency, Plan, SendLog};
use crate::{Common, Error, procstat, run_id};

/// Options of the `fanout` scenario.
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Number of rooms (documents).
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Clients in each room.
    #[arg(long, default_value_t = 10)]
    pub clients_per_room: usize,
    /// Updates per second sent by every client, spread evenly over time.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Seconds of sending before measuring starts.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Longest wait, in seconds, for the last updates after sending stops.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Seconds allowed for all clients to connect and sync.
    #[arg(long, default_value_t = 30.0)]
    pub connect_timeout: f64,
    /// Use this existing document instead of fresh ones (needs `--rooms 1`): e.g. one loaded
    /// with `trace-load`, so the fan-out runs on a large document.
    #[arg(long)]
    pub room: Option<String>,
    /// During the measured window, restore the document through the admin API every this
    /// many seconds (0 = never): shows what a restore does to the keystrokes of everyone else.
    /// Needs `--room` and `--admin-token`.
    #[arg(long, default_value_t = 0.0)]
    pub restore_every: f64,
    /// Sequence numbers the restores go to, in turn (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub restore_seqs: Vec<i64>,
    /// Admin token for the restores.
    #[arg(long, env = "TANDEM_BENCH_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
}

/// State shared by all clients of the run.
struct Shared {
    /// Send times per client (global index).
    logs: Vec<SendLog>,
    /// Number of updates each client sent once it stopped; `u32::MAX` while still sending.
    finished: Vec<AtomicU32>,
    clients_per_room: usize,
    total: usize,
    /// Yjs client ids are `base + 1 ..= base + total`: 0 in fresh rooms; in an existing
    /// document (`--room`) a value of this run's own, so two runs never write the same ids.
    base: u64,
}

/// What one client saw.
struct ClientOut {
    /// Latency to this client of updates sent by others in the measured window.
    others: Histogram<u64>,
    /// Latency of this client's own updates coming back (the echo).
    echo: Histogram<u64>,
    sent_total: u64,
    sent_in_window: u64,
    /// Clocks of other clients that never arrived although later ones did.
    gaps: u64,
    /// Frames that could not be parsed.
    bad_frames: u64,
    /// Whether every update of every other client in the room arrived.
    complete: bool,
    error: Option<String>,
}

impl ClientOut {
    fn new() -> Self {
        ClientOut {
            others: stats::new_histogram(),
            echo: stats::new_histogram(),
            sent_total: 0,
            sent_in_window: 0,
            gaps: 0,
            bad_frames: 0,
            complete: false,
            error: None,
        }
    }
}

/// The machine-readable result of a fanout run.
#[derive(Debug, Serialize)]
struct FanoutResult {
    scenario: &'static str,
    rooms: usize,
    clients_per_room: usize,
    rate_per_client: f64,
    duration_s: f64,
    connect_s: f64,
    /// Updates sent including the warm-up.
    sent_total: u64,
    /// Updates sent in the measured window.
    sent: u64,
    expected_deliveries: u64,
    delivered: u64,
    delivered_ratio: f64,
    latency: Latency,
    echo_latency: Latency,
    gaps: u64,
    bad_frames: u64,
    incomplete_clients: usize,
    errors: Vec<String>,
    server: Option<procstat::Usage>,
    bench: Option<procstat::Usage>,
    /// CPU used by other processes on the machine during the window, % of one core.
    other_cpu_pct: Option<f64>,
    /// Restores made during the window (`--restore-every`), when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    restore: Option<RestoreOut>,
}

/// Client id of the client with global index `gi` (ids are unique per run: rooms are fresh).
fn client_id(base: u64, gi: usize) -> u64 {
    base + gi as u64 + 1
}

/// Runs the scenario and prints the summary.
///
/// Why one function: a benchmark driver run once per invocation: set up, measure, report, in the
/// order of the report it prints, over locals every phase shares; split, the phases would pass
/// those around for nothing.
pub async fn run(common: &Common, args: &FanoutArgs) -> Result<(), Error> {
    if args.rooms == 0 || args.clients_per_room < 2 {
        return Err("need at least one room and two clients per room".into());
    }
    if !(args.rate > 0.0 && args.rate <= 10_000.0) {
        return Err("--rate must be in (0, 10000]".into());
    }
    if !(args.duration > 0.0 && args.duration <= 3600.0) {
        return Err("--duration must be in (0, 3600]".into());
    }
    let targets = Target::parse_many(&common.url)?;
    let restores = restore_plan(args)?;
    let total = args.rooms * args.clients_per_room;
    let per_client = (args.rate * (args.warmup + args.duration + 2.0)).ceil() as usize + 16;
    let shared = Arc::new(Shared {
        logs: (0..total).map(|_| SendLog::new(per_client)).collect(),
        finished: (0..total).map(|_| AtomicU32::new(u32::MAX)).collect(),
        clients_per_room: args.clients_per_room,
        total,
        base: if args.room.is_some() {
            // Milliseconds of the clock, spread out: below 2^53 (JavaScript's safe integers).
            (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
                % 1_000_000_000)
                * 1_000
        } else {
            0
        },
    });
    let run = run_id();
    let server0 = procstat::maybe_sample(common.server_pid);
    let started = Instant::now();

    let (synced_tx, mut synced_rx) = mpsc::channel::<Result<(), String>>(total);
    let (plan_tx, plan_rx) = watch::channel::<Option<Plan>>(None);
    let mut handles = Vec::with_capacity(total);
    for gi in 0..total {
        let room = match &args.room {
            Some(room) => room.clone(),
            None => format!("fanout-{run}-{}", gi / args.clients_per_room),
        };
        let target = &targets[gi % targets.len()];
        let url = target.room_url(&room);
        let ctx = ClientCtx {
            gi,
            rate: args.rate,
            target: target.clone(),
            url,
            shared: shared.clone(),
            synced: synced_tx.clone(),
            plan: plan_rx.clone(),
            sync_timeout: Duration::from_secs_f64(args.connect_timeout),
        };
        handles.push(tokio::spawn(client(ctx)));
    }
    drop(synced_tx);

    // Wait until every client is synced.
    let connect_deadline = Instant::now() + Duration::from_secs_f64(args.connect_timeout);
    let mut ok = 0usize;
    let mut connect_errors = Vec::new();
    while ok + connect_errors.len() < total {
        match tokio::time::timeout_at(connect_deadline.into(), synced_rx.recv()).await {
            Ok(Some(Ok(()))) => ok += 1,
            Ok(Some(Err(e))) => connect_errors.push(e),
            Ok(None) => break,
            Err(_) => {
                connect_errors.push(format!("{} clients not synced in time", total - ok));
                break;
            }
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    if ok < total {
        drop(plan_tx);
        for h in handles {
            h.abort();
        }
        let first = connect_errors.first().cloned().unwrap_or_default();
        return Err(format!(
            "only {ok}/{total} clients synced ({} errors; first: {first})",
            connect_errors.len()
        )
        .into());
    }
    println!("fanout: {total} clients synced in {connect_s:.2} s; sending");

    let plan = Plan::new(
        Duration::from_millis(200),
        args.warmup,
        args.duration,
        args.drain,
    );
    plan_tx.send_replace(Some(plan));
    let restorer = restores
        .map(|r| tokio::spawn(r.run(targets[0].addr, plan.measure_start, plan.measure_end)));

    let window = procstat::measure_window(
        common.server_pid,
        server0.as_ref(),
        plan.measure_start,
        plan.measure_end,
    )
    .await;

    let mut others = stats::new_histogram();
    let mut echo = stats::new_histogram();
    let (mut sent, mut sent_total, mut expected) = (0, 0, 0);
    let (mut gaps, mut bad_frames, mut incomplete) = (0, 0, 0);
    let mut errors = Vec::new();
    for h in handles {
        let out = match h.await {
            Ok(out) => out,
            Err(e) => {
                errors.push(format!("client task failed: {e}"));
                continue;
            }
        };
        // Histograms share bounds, so adding cannot fail.
        let _ = others.add(&out.others);
        let _ = echo.add(&out.echo);
        sent += out.sent_in_window;
        expected += out.sent_in_window * (args.clients_per_room as u64 - 1);
        gaps += out.gaps;
        bad_frames += out.bad_frames;
        if !out.complete {
            incomplete += 1;
        }
        if let Some(e) = out.error {
            errors.push(e);
        }
        sent_total += out.sent_total;
    }
    let restore = match restorer {
        Some(h) => Some(h.await.map_err(|e| format!("restore task failed: {e}"))?),
        None => None,
    };
    let delivered = others.len();
    let result = FanoutResult {
        scenario: "fanout",
        rooms: args.rooms,
        clients_per_room: args.clients_per_room,
        rate_per_client: args.rate,
        duration_s: args.duration,
        connect_s: (connect_s * 100.0).round() / 100.0,
        sent_total,
        sent,
        expected_deliveries: expected,
        delivered,
        delivered_ratio: if expected > 0 {
            delivered as f64 / expected as f64
        } else {
            0.0
        },
        latency: Latency::of(&others),
        echo_latency: Latency::of(&echo),
        gaps,
        bad_frames,
        incomplete_clients: incomplete,
        errors: errors.iter().take(10).cloned().collect(),
        server: window.server,
        bench: window.bench,
        other_cpu_pct: window.other_cpu_pct,
        restore,
    };
    print_summary(&result, errors.len());
    stats::print_json(&result);
    Ok(())
}

fn print_summary(r: &FanoutResult, error_count: usize) {
    println!(
        "fanout {} rooms x {} clients @ {}/s for {} s: {} updates sent, {}/{} deliveries ({:.4})",
        r.rooms,
        r.clients_per_room,
        r.rate_per_client,
        r.duration_s,
        r.sent,
        r.delivered,
        r.expected_deliveries,
        r.delivered_ratio
    );
    println!("  latency to other clients: {}", r.latency.describe());
    println!("  echo to sender:           {}", r.echo_latency.describe());
    if r.gaps > 0 || r.bad_frames > 0 || r.incomplete_clients > 0 || error_count > 0 {
        println!(
            "  PROBLEMS: {} gaps, {} bad frames, {} incomplete clients, {} errors {:?}",
            r.gaps, r.bad_frames, r.incomplete_clients, error_count, r.errors
        );
    }
    if let Some(s) = &r.server {
        println!("  server during window: {}", procstat::describe(s));
    }
    if let Some(b) = &r.bench {
        println!("  load generator:       {}", procstat::describe(b));
    }
    procstat::describe_other(r.other_cpu_pct);
    if let Some(x) = &r.restore {
        println!(
            "  restores during window: {} done, {} failed; request time {}",
            x.done,
            x.failed,
            x.latency.describe()
        );
        if let Some(e) = &x.first_error {
            println!("  first restore error: {e}");
        }
    }
}

/// Restores of one document at a fixed interval during the measured window.
struct Restores {
    room: String,
    every: Duration,
    seqs: Vec<i64>,
    token: String,
}

/// What the restores did, in the result.
#[derive(Debug, Serialize)]
struct RestoreOut {
    done: u64,
    failed: u64,
    /// Time of each `POST .../restore` until its answer (the restore is then applied).
    latency: Latency,
    first_error: Option<String>,
}

fn restore_plan(args: &FanoutArgs) -> Result<Option<Restores>, Error> {
    if args.restore_every <= 0.0 {
        return Ok(None);
    }
    let (Some(room), Some(token)) = (&args.room, &args.admin_token) else {
        return Err("--restore-every needs --room and --admin-token".into());
    };
    if args.rooms != 1 || args.restore_seqs.is_empty() {
        return Err("--restore-every needs --rooms 1 and --restore-seqs".into());
    }
    Ok(Some(Restores {
        room: room.clone(),
        every: Duration::from_secs_f64(args.restore_every),
        seqs: args.restore_seqs.clone(),
        token: token.clone(),
    }))
}

impl Restores {
    async fn run(self, addr: std::net::SocketAddr, start: Instant, end: Instant) -> RestoreOut {
        let mut http =
            crate::http::Client::new(addr, Some(self.token.clone()), Duration::from_secs(60));
        let path = format!(
            "/api/v1/admin/documents/{}/restore",
            crate::http::encode_component(&self.room)
        );
        let mut hist = stats::new_histogram();
        let (mut done, mut failed, mut first_error) = (0, 0, None);
        let mut next = start + self.every / 2;
        for seq in self.seqs.iter().cycle() {
            if next >= end {
                break;
            }
            tokio::time::sleep_until(next.into()).await;
            next += self.every;
            let t0 = Instant::now();
            let body = format!("{{\"seq\":{seq}}}");
            match http.post_json(&path, &body).await {
                Ok(r) if r.status == 200 => {
                    done += 1;
                    hist.saturating_record((t0.elapsed().as_micros() as u64).max(1));
                }
                Ok(r) => {
                    failed += 1;
                    first_error.get_or_insert(format!("HTTP {}: {}", r.status, r.snippet()));
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        RestoreOut {
            done,
            failed,
            latency: Latency::of(&hist),
            first_error,
        }
    }
}

/// Everything a client task needs.
struct ClientCtx {
    gi: usize,
    rate: f64,
    target: Target,
    url: String,
    shared: Arc<Shared>,
    synced: mpsc::Sender<Result<(), String>>,
    plan: watch::Receiver<Option<Plan>>,
    sync_timeout: Duration,
}

async fn client(mut ctx: ClientCtx) -> ClientOut {
    let mut out = ClientOut::new();
    let mut ws = match async {
        let mut ws = conn::connect(&ctx.target, &ctx.url, None, conn::ws_config(64 * 1024)).await?;
        conn::sync_handshake(&mut ws, ctx.sync_timeout).await?;
        Ok::<_, Error>(ws)
    }
    .await
    {
        Ok(ws) => {
            let _ = ctx.synced.send(Ok(())).await;
            ws
        }
        Err(e) => {
            let msg = format!("client {}: {e}", ctx.gi);
            let _ = ctx.synced.send(Err(msg.clone())).await;
            out.error = Some(msg);
            return out;
        }
    };
    let plan = match ctx.plan.wait_for(Option::is_some).await {
        Ok(p) => match *p {
            Some(p) => p,
            None => return out,
        },
        Err(_) => return out, // the run was called off
    };
    if let Err(e) = client_loop(&mut ws, &ctx, &plan, &mut out).await {
        out.error = Some(format!("client {}: {e}", ctx.gi));
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    out
}

/// One client of the fan-out: sends on its schedule and times every update it receives.
///
/// Why one function: one `select!` loop whose counters and histograms are locals every branch
/// updates.
async fn client_loop(
    ws: &mut conn::Ws,
    ctx: &ClientCtx,
    plan: &Plan,
    out: &mut ClientOut,
) -> Result<(), Error> {
    let shared = &*ctx.shared;
    let cpr = shared.clients_per_room;
    let room_first = ctx.gi - ctx.gi % cpr;
    let me = ctx.gi % cpr;
    let mut editor = Editor::new(client_id(shared.base, ctx.gi));
    let period = Duration::from_secs_f64(1.0 / ctx.rate);
    // Clients start evenly staggered over one period, so the room sees a steady stream.
    let phase = period.mul_f64(ctx.gi as f64 / shared.total as f64);
    let mut ticker = interval_at((plan.start + phase).into(), period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut check = interval_at(plan.measure_end.into(), Duration::from_millis(20));
    let mut sending = true;
    let mut seen = vec![0u32; cpr];
    let mut ranges = Vec::with_capacity(4);

    let stop_sending = |editor: &Editor| {
        shared.finished[ctx.gi].store(editor.clock(), Ordering::Release);
    };

    loop {
        tokio::select! {
            biased;
            msg = ws.next() => {
                let msg = match msg {
                    None => return Err("connection closed by server".into()),
                    Some(Err(e)) => return Err(format!("read: {e}").into()),
                    Some(Ok(m)) => m,
                };
                let frame = match msg {
                    Message::Binary(b) => b,
                    Message::Close(f) => return Err(format!("server closed: {f:?}").into()),
                    _ => continue,
                };
                let update = match proto::parse_frame(&frame) {
                    Ok(Incoming::Update(u) | Incoming::Step2(u)) => u,
                    Ok(_) => continue,
                    Err(_) => { out.bad_frames += 1; continue; }
                };
                if proto::update_ranges(update, &mut ranges).is_err() {
                    out.bad_frames += 1;
                    continue;
                }
                let now = stats::now_us();
                for r in &ranges {
                    let Some(gi) = r.client.checked_sub(shared.base + 1).map(|g| g as usize) else { continue };
                    if gi < room_first || gi >= room_first + cpr {
                        continue;
                    }
                    let j = gi - room_first;
                    let from = seen[j];
                    if r.end <= from {
                        continue;
                    }
                    let start = match r.start {
                        Some(s) if s > from => {
                            out.gaps += u64::from(s - from);
                            s
                        }
                        _ => from,
                    };
                    seen[j] = r.end;
                    let log = &shared.logs[gi];
                    let hist = if j == me { &mut out.echo } else { &mut out.others };
                    for k in start..r.end {
                        if let Some(t) = log.get(k)
                            && plan.in_window(t)
                        {
                            hist.saturating_record(now.saturating_sub(t).max(1));
                        }
                    }
                }
            }
            _ = ticker.tick(), if sending => {
                let now = Instant::now();
                if now >= plan.measure_end {
                    sending = false;
                    stop_sending(&editor);
                    continue;
                }
                let (clock, frame) = editor.next_update();
                let t = stats::us_of(now);
                shared.logs[ctx.gi].record(clock, t);
                out.sent_total += 1;
                if t >= plan.measure_start_us {
                    out.sent_in_window += 1;
                }
                ws.send(Message::Binary(Bytes::from(frame)))
                    .await
                    .map_err(|e| format!("send: {e}"))?;
            }
            _ = check.tick() => {
                if sending {
                    sending = false;
                    stop_sending(&editor);
                }
                let done = (0..cpr).all(|j| {
                    let f = shared.finished[room_first + j].load(Ordering::Acquire);
                    f != u32::MAX && seen[j] >= f
                });
                if done {
                    out.complete = true;
                    return Ok(());
                }
                if Instant::now() >= plan.deadline {
                    return Ok(());
                }
            }
        }
    }
}
