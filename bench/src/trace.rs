//! Real editing traces: `trace-load` replays one into a document on the server, `cold-load`
//! measures how fast a server that does not hold that document in memory serves it in full.
//!
//! Traces are the public "editing-traces" collection by Joseph Gentle (CC BY 4.0,
//! <https://creativecommons.org/licenses/by/4.0/>), gzip-compressed JSON:
//! `{ startContent, endContent, txns: [{ patches: [[pos, delCount, insertText], ...] }] }`;
//! concurrent traces add `agent` and `parents` to every transaction. Positions count Unicode code
//! points.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use futures::{FutureExt, SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, Text, TextRef, Transact, Update};

use crate::conn::{self, Target};
use crate::editor::TEXT_NAME;
use crate::proto::{self, ClockRange, Incoming};
use crate::{Common, Error};

/// One transaction of a trace.
#[derive(Debug, Deserialize)]
pub(crate) struct Txn {
    pub(crate) patches: Vec<(usize, usize, String)>,
    /// Concurrent traces: index of the author.
    #[serde(default)]
    agent: Option<usize>,
    /// Concurrent traces: transactions whose merged state this one was typed against.
    #[serde(default)]
    parents: Option<Vec<usize>>,
}

/// A trace file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TraceFile {
    #[serde(default)]
    pub(crate) start_content: String,
    pub(crate) end_content: String,
    pub(crate) txns: Vec<Txn>,
}

impl TraceFile {
    /// Authors of a concurrent trace (1 for a sequential one): pass `k` of a multi-pass load
    /// uses client ids `FIRST_CLIENT + k * authors ..`.
    fn authors(&self) -> u64 {
        self.txns
            .iter()
            .filter_map(|t| t.agent)
            .max()
            .map_or(1, |a| a as u64 + 1)
    }

    /// Characters (ASCII: bytes, code points and UTF-16 units alike) inserted and deleted by
    /// each update of a replay, in update order (the start content first, if any).
    pub(crate) fn update_counts(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::with_capacity(self.txns.len() + 1);
        if !self.start_content.is_empty() {
            out.push((self.start_content.len() as u64, 0));
        }
        for t in &self.txns {
            let ins = t.patches.iter().map(|p| p.2.len() as u64).sum();
            let del = t.patches.iter().map(|p| p.1 as u64).sum();
            out.push((ins, del));
        }
        out
    }
}

/// The shared text pass `pass` (0-based) of a multi-pass load writes into: `name` for the
/// first, `name-2`, `name-3`, ... for the next ones.
pub(crate) fn pass_root(name: &str, pass: usize) -> String {
    if pass == 0 {
        name.to_owned()
    } else {
        format!("{name}-{}", pass + 1)
    }
}

/// Reads a trace (`.gz` files are decompressed with the system's `gzip -dc`, which keeps the
/// tool free of a compression crate).
pub(crate) fn read_trace(path: &Path) -> Result<TraceFile, Error> {
    let raw = if path.extension().is_some_and(|e| e == "gz") {
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(path)
            .output()
            .map_err(|e| format!("running gzip -dc {}: {e}", path.display()))?;
        if !out.status.success() {
            return Err(format!(
                "gzip -dc {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        out.stdout
    } else {
        let mut buf = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        buf
    };
    let trace: TraceFile = serde_json::from_slice(&raw)
        .map_err(|e| format!("parsing trace {}: {e}", path.display()))?;
    // yrs counts text offsets in UTF-8 bytes (or UTF-16 units), the traces in code points: the
    // two agree only on ASCII, which the published "ASCII-only" variants are.
    let ascii = trace.start_content.is_ascii()
        && trace
            .txns
            .iter()
            .all(|t| t.patches.iter().all(|p| p.2.is_ascii()));
    if !ascii {
        return Err(format!(
            "{}: non-ASCII trace; only ASCII traces are supported (code point offsets)",
            path.display()
        )
        .into());
    }
    Ok(trace)
}

fn apply_patches(
    text: &TextRef,
    txn: &mut yrs::TransactionMut,
    patches: &[(usize, usize, String)],
) {
    for (pos, del, ins) in patches {
        if *del > 0 {
            text.remove_range(txn, *pos as u32, *del as u32);
        }
        if !ins.is_empty() {
            text.insert(txn, *pos as u32, ins);
        }
    }
}

/// The updates of a replayed trace, one per trace transaction, in an order the server can apply
/// one after the other (every update's dependencies come before it).
pub(crate) struct Replayed {
    pub(crate) updates: Vec<Vec<u8>>,
    /// Per update: the yrs client id and the client's clock after it (for acknowledgement).
    acks: Vec<(u64, u32)>,
    end_content: String,
    /// Encoded state of the final document (v1), for reference.
    state_bytes: usize,
    /// Encoded (v1) state vector of the final document.
    state_vector: Vec<u8>,
}

/// Client id of the first author; author `k` is `FIRST_CLIENT + k`.
const FIRST_CLIENT: u64 = 1;

/// Replays the trace into the shared text `root`; author `k` gets client id `first_client + k`.
///
/// Why one function: one pass over the trace's transactions; the document and per-author state are
/// its locals.
pub(crate) fn replay(trace: &TraceFile, root: &str, first_client: u64) -> Result<Replayed, Error> {
    let concurrent = trace.txns.iter().any(|t| t.parents.is_some());
    let mut updates = Vec::with_capacity(trace.txns.len() + 1);
    let mut acks = Vec::with_capacity(trace.txns.len() + 1);
    // The document holding everything: the author's own one for a sequential trace, all
    // updates merged for a concurrent one.
    let final_doc;
    let final_text;
    if !concurrent {
        let doc = Doc::with_client_id(first_client);
        let text = doc.get_or_insert_text(root);
        let mut push = |txn: &yrs::TransactionMut| {
            updates.push(txn.encode_update_v1());
            acks.push((
                first_client,
                txn.state_vector()
                    .get(&yrs::block::ClientID::new(first_client)),
            ));
        };
        if !trace.start_content.is_empty() {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, &trace.start_content);
            push(&txn);
        }
        for t in &trace.txns {
            let mut txn = doc.transact_mut();
            apply_patches(&text, &mut txn, &t.patches);
            push(&txn);
        }
        final_doc = doc;
        final_text = text;
    } else {
        // Each author has a document holding exactly the transactions it has seen; before one of
        // its transactions, the ancestors named by `parents` it lacks are applied to it (their
        // updates, in trace order). Dependencies have lower indexes than their dependants.
        if !trace.start_content.is_empty() {
            return Err("concurrent trace with startContent is not supported".into());
        }
        let mut docs: HashMap<usize, (Doc, TextRef, Vec<bool>)> = HashMap::new();
        let n = trace.txns.len();
        for (i, t) in trace.txns.iter().enumerate() {
            let agent = t.agent.ok_or_else(|| format!("txn {i}: no agent"))?;
            let parents = t.parents.as_deref().unwrap_or(&[]);
            let client = first_client + agent as u64;
            let (doc, text, seen) = docs.entry(agent).or_insert_with(|| {
                let doc = Doc::with_client_id(client);
                let text = doc.get_or_insert_text(root);
                (doc, text, vec![false; n])
            });
            // Ancestors not yet in this author's document (walk stops at seen ones: their
            // ancestors are in it already).
            let mut missing = Vec::new();
            let mut stack: Vec<usize> = parents.to_vec();
            while let Some(p) = stack.pop() {
                if p >= i {
                    return Err(format!("txn {i}: parent {p} is not earlier").into());
                }
                if seen[p] {
                    continue;
                }
                seen[p] = true;
                missing.push(p);
                if let Some(pp) = &trace.txns[p].parents {
                    stack.extend(pp.iter().copied());
                }
            }
            missing.sort_unstable();
            let mut txn = doc.transact_mut();
            for p in missing {
                let u = Update::decode_v1(&updates[p]).map_err(|e| format!("txn {p}: {e}"))?;
                txn.apply_update(u).map_err(|e| format!("txn {p}: {e}"))?;
            }
            drop(txn);
            let mut txn = doc.transact_mut();
            apply_patches(text, &mut txn, &t.patches);
            updates.push(txn.encode_update_v1());
            acks.push((
                client,
                txn.state_vector().get(&yrs::block::ClientID::new(client)),
            ));
            seen[i] = true;
        }
        final_doc = Doc::with_client_id(u64::MAX >> 12);
        final_text = final_doc.get_or_insert_text(root);
        let mut txn = final_doc.transact_mut();
        for u in &updates {
            let u = Update::decode_v1(u).map_err(|e| format!("re-decoding an update: {e}"))?;
            txn.apply_update(u)
                .map_err(|e| format!("applying an update: {e}"))?;
        }
    }
    let txn = final_doc.transact();
    let got = final_text.get_string(&txn);
    if got != trace.end_content {
        return Err(format!(
            "merged text differs from endContent ({} vs {} bytes)",
            got.len(),
            trace.end_content.len()
        )
        .into());
    }
    let state_bytes = txn
        .encode_state_as_update_v1(&yrs::StateVector::default())
        .len();
    Ok(Replayed {
        updates,
        acks,
        end_content: trace.end_content.clone(),
        state_bytes,
        state_vector: txn.state_vector().encode_v1(),
    })
}

/// Options of `trace-load`.
#[derive(Debug, Clone, Args)]
pub struct TraceLoadArgs {
    /// Trace file (`.json.gz` or `.json`).
    #[arg(long)]
    pub trace: PathBuf,
    /// Document to write it into; it must be empty (a fresh name).
    #[arg(long)]
    pub room: String,
    /// Shared text (`Y.Text` root) the trace is typed into.
    #[arg(long, default_value = TEXT_NAME)]
    pub text_name: String,
    /// Replay the trace this many times into the same document, pass k (from 1) into its own
    /// text `NAME-k` (the first into `NAME`) with its own client ids, one after the other: a
    /// document with `passes` × the trace's transactions in its log.
    #[arg(long, default_value_t = 1)]
    pub passes: usize,
    /// Directory where replays of the trace are cached for later runs (replaying a long trace
    /// costs minutes; the cache is keyed by the trace file's name, size and modification time).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Most updates in flight (sent, echo not yet seen).
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Send at most this many updates per second (0 = as fast as they are acknowledged). A
    /// server snapshots every N updates but not while its previous snapshot is still being
    /// written, so an unpaced load of a large document gets fewer snapshots than a typed one.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600.0)]
    pub timeout: f64,
}

#[derive(Debug, Serialize)]
struct TraceLoadResult {
    scenario: &'static str,
    trace: String,
    room: String,
    /// `--rate` (0: unpaced).
    rate: f64,
    /// Texts written, one per pass.
    texts: Vec<String>,
    passes: usize,
    txns: usize,
    updates_sent: usize,
    update_bytes: usize,
    final_state_bytes: usize,
    end_content_chars: usize,
    replay_s: f64,
    send_s: f64,
    updates_per_s: f64,
    /// The document fetched by a fresh connection equals the trace's endContent.
    verified: bool,
    sync_step2_bytes: usize,
    errors: Vec<String>,
}

/// Replays the trace and writes it into the document as one update per trace transaction,
/// pipelined (`--window`), the echo of each update being its acknowledgement.
///
/// Why one function: a benchmark driver run once per invocation: set up, measure, report, in the
/// order of the report it prints, over locals every phase shares; split, the phases would pass
/// those around for nothing.
pub async fn trace_load(common: &Common, args: &TraceLoadArgs) -> Result<(), Error> {
    if args.window == 0 || args.window > 100_000 {
        return Err("--window must be in 1..=100000".into());
    }
    if !(args.timeout > 0.0 && args.timeout <= 3600.0) {
        return Err("--timeout must be in (0, 3600]".into());
    }
    if !(1..=64).contains(&args.passes) {
        return Err("--passes must be in 1..=64".into());
    }
    if args.text_name.is_empty() {
        return Err("--text-name must not be empty".into());
    }
    if !(args.timeout > 0.0 && args.timeout <= 3600.0) {
        return Err("--timeout must be in (0, 3600]".into());
    }
    if !(args.rate >= 0.0 && args.rate <= 10_000_000.0) {
        return Err("--rate must be in [0, 10000000]".into());
    }
    let target = Target::parse(&common.url)?;
    let url = target.room_url(&args.room);
    let t0 = Instant::now();
    let trace = read_trace(&args.trace)?;
    let roots: Vec<String> = (0..args.passes)
        .map(|k| pass_root(&args.text_name, k))
        .collect();
    let cache = args.cache_dir.as_deref().map(|dir| ReplayCache {
        dir,
        trace_path: &args.trace,
    });
    let replayed = replay_passes(&trace, &roots, cache)?;
    let replay_s = t0.elapsed().as_secs_f64();
    println!(
        "trace-load: {} transactions × {} pass(es) replayed into {} updates ({} bytes of state) \
         in {:.2} s",
        trace.txns.len(),
        args.passes,
        replayed.updates.len(),
        replayed.state_bytes,
        replay_s
    );
    let timeout = Duration::from_secs_f64(args.timeout);
    let deadline = Instant::now() + timeout;
    let mut ws = conn::connect(&target, &url, None, conn::ws_config(128 * 1024)).await?;
    let existing = conn::sync_handshake_update(&mut ws, timeout).await?;
    if !is_empty_doc(&existing)? {
        return Err(format!("document {:?} is not empty; use a fresh name", args.room).into());
    }
    let started = Instant::now();
    let mut echoed: HashMap<u64, u32> = HashMap::new();
    let mut in_flight: VecDeque<(u64, u32)> = VecDeque::new();
    let mut next = 0;
    let mut ranges: Vec<ClockRange> = Vec::new();
    let acked = |echoed: &HashMap<u64, u32>, (client, clock): (u64, u32)| {
        clock == 0 || echoed.get(&client).is_some_and(|e| *e >= clock)
    };
    let mut update_bytes = 0;
    // With --rate: when update `i` may be sent at the earliest.
    let due = |i: usize| started + Duration::from_secs_f64(i as f64 / args.rate);
    let paced = args.rate > 0.0;
    loop {
        while in_flight.front().is_some_and(|a| acked(&echoed, *a)) {
            in_flight.pop_front();
        }
        if next == replayed.updates.len() && in_flight.is_empty() {
            break;
        }
        if next < replayed.updates.len() && in_flight.len() < args.window {
            let now = Instant::now();
            while next < replayed.updates.len()
                && in_flight.len() < args.window
                && (!paced || due(next) <= now)
            {
                let u = &replayed.updates[next];
                update_bytes += u.len();
                ws.feed(Message::Binary(Bytes::from(proto::frame_update(u))))
                    .await
                    .map_err(|e| format!("send: {e}"))?;
                in_flight.push_back(replayed.acks[next]);
                next += 1;
            }
            ws.flush().await.map_err(|e| format!("flush: {e}"))?;
        }
        // Paced: wake when the next update is due even if nothing arrives.
        let wake = (paced && next < replayed.updates.len() && in_flight.len() < args.window)
            .then(|| due(next).min(deadline));
        let mut msg =
            match tokio::time::timeout_at(wake.unwrap_or(deadline).into(), ws.next()).await {
                Ok(m) => Some(m),
                Err(_) if wake.is_some_and(|w| w < deadline) => continue,
                Err(_) => {
                    return Err(format!(
                        "timeout: {next} of {} sent, {} unacknowledged",
                        replayed.updates.len(),
                        in_flight.len()
                    )
                    .into());
                }
            };
        let mut budget = 1024;
        while let Some(m) = msg.take() {
            let frame = match m {
                None => return Err("connection closed by server".into()),
                Some(Err(e)) => return Err(format!("read: {e}").into()),
                Some(Ok(Message::Close(f))) => return Err(format!("server closed: {f:?}").into()),
                Some(Ok(Message::Binary(b))) => b,
                Some(Ok(_)) => Bytes::new(),
            };
            if let Ok(Incoming::Update(u) | Incoming::Step2(u)) = proto::parse_frame(&frame) {
                proto::update_ranges(u, &mut ranges).map_err(|e| format!("echo: {e}"))?;
                for r in &ranges {
                    let e = echoed.entry(r.client).or_insert(0);
                    *e = (*e).max(r.end);
                }
            }
            budget -= 1;
            if budget > 0 {
                msg = ws.next().now_or_never();
            }
        }
    }
    // Updates that only delete carry no clock, so their echo cannot be told apart: a SyncStep1 on
    // the same connection is answered only after everything sent before it is durable.
    let sv = &replayed.state_vector;
    let mut step1 = vec![proto::MSG_SYNC, proto::SYNC_STEP1];
    proto::write_var_uint(&mut step1, sv.len() as u64);
    step1.extend_from_slice(sv);
    ws.send(Message::Binary(Bytes::from(step1)))
        .await
        .map_err(|e| format!("send SyncStep1: {e}"))?;
    loop {
        match tokio::time::timeout_at(deadline.into(), ws.next()).await {
            Err(_) => return Err("timeout waiting for the final SyncStep2".into()),
            Ok(None) => return Err("connection closed by server".into()),
            Ok(Some(Err(e))) => return Err(format!("read: {e}").into()),
            Ok(Some(Ok(Message::Binary(b)))) => {
                if let Ok(Incoming::Step2(_)) = proto::parse_frame(&b) {
                    break;
                }
            }
            Ok(Some(Ok(_))) => {}
        }
    }
    let send_s = started.elapsed().as_secs_f64();
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;

    // What a new client gets.
    let mut errors = Vec::new();
    let mut check = conn::connect(&target, &url, None, conn::ws_config(128 * 1024)).await?;
    let full = conn::sync_handshake_update(&mut check, timeout).await?;
    let _ = tokio::time::timeout(Duration::from_secs(2), check.close(None)).await;
    let verified = match texts_of(&full, &roots) {
        Ok(texts) => {
            for (root, t) in roots.iter().zip(&texts) {
                if *t != replayed.end_content {
                    errors.push(format!(
                        "server text {root:?} differs from endContent ({} vs {} bytes)",
                        t.len(),
                        replayed.end_content.len()
                    ));
                }
            }
            errors.is_empty()
        }
        Err(e) => {
            errors.push(format!("server SyncStep2: {e}"));
            false
        }
    };
    let result = TraceLoadResult {
        scenario: "trace-load",
        trace: args.trace.display().to_string(),
        room: args.room.clone(),
        rate: args.rate,
        texts: roots.clone(),
        passes: args.passes,
        txns: trace.txns.len(),
        updates_sent: replayed.updates.len(),
        update_bytes,
        final_state_bytes: replayed.state_bytes,
        end_content_chars: replayed.end_content.chars().count(),
        replay_s: round3(replay_s),
        send_s: round3(send_s),
        updates_per_s: (replayed.updates.len() as f64 / send_s).round(),
        verified,
        sync_step2_bytes: full.len(),
        errors,
    };
    println!(
        "trace-load: {} updates ({} bytes) into {:?} in {:.2} s ({:.0} updates/s, durable); \
         server copy {} endContent",
        result.updates_sent,
        result.update_bytes,
        result.room,
        result.send_s,
        result.updates_per_s,
        if verified { "equals" } else { "DIFFERS FROM" }
    );
    crate::stats::print_json(&result);
    if verified {
        Ok(())
    } else {
        Err(result.errors.join("; ").into())
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Where replays are cached between runs (replaying a long trace through yrs's index-based text
/// API costs minutes: every insert walks the text's item list from its start).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplayCache<'a> {
    /// Directory of cache files (created if missing).
    pub(crate) dir: &'a Path,
    /// The trace file replayed (its name, size and modification time key the cache).
    pub(crate) trace_path: &'a Path,
}

impl ReplayCache<'_> {
    /// File of the replay into `root` with first client id `first_client`, or `None` when the
    /// trace file cannot be described.
    fn file(&self, root: &str, first_client: u64) -> Option<PathBuf> {
        let meta = std::fs::metadata(self.trace_path).ok()?;
        let mtime = meta
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        let name = format!(
            "{}.{root}.{first_client}.{}.{mtime}.replay",
            self.trace_path.file_name()?.to_string_lossy(),
            meta.len()
        );
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Some(self.dir.join(name))
    }
}

/// First bytes of a cache file (bump the digit when the format or the replay changes).
const CACHE_MAGIC: &[u8] = b"tandem-bench replay 1\n";

fn encode_replay(r: &Replayed) -> Vec<u8> {
    let total: usize = r.updates.iter().map(|u| u.len() + 24).sum();
    let mut out = Vec::with_capacity(CACHE_MAGIC.len() + total + r.state_vector.len() + 32);
    out.extend_from_slice(CACHE_MAGIC);
    let put = |out: &mut Vec<u8>, v: u64| out.extend_from_slice(&v.to_le_bytes());
    put(&mut out, r.state_bytes as u64);
    put(&mut out, r.state_vector.len() as u64);
    out.extend_from_slice(&r.state_vector);
    put(&mut out, r.updates.len() as u64);
    for (u, (client, clock)) in r.updates.iter().zip(&r.acks) {
        put(&mut out, u.len() as u64);
        out.extend_from_slice(u);
        put(&mut out, *client);
        put(&mut out, u64::from(*clock));
    }
    out
}

/// Reads a cache file's fields.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn usize(&mut self) -> Option<usize> {
        usize::try_from(self.u64()?).ok()
    }
}

/// Parses a cache file; `None` if it is not a complete one (it is then rebuilt).
fn decode_replay(bytes: &[u8], end_content: &str) -> Option<Replayed> {
    let mut c = Cursor(bytes.strip_prefix(CACHE_MAGIC)?);
    let state_bytes = c.usize()?;
    let sv_len = c.usize()?;
    let state_vector = c.take(sv_len)?.to_vec();
    let count = c.usize()?;
    // Every update takes at least 24 bytes of the file: a lying count allocates nothing big.
    let cap = count.min(bytes.len() / 24);
    let mut updates = Vec::with_capacity(cap);
    let mut acks = Vec::with_capacity(cap);
    for _ in 0..count {
        let len = c.usize()?;
        updates.push(c.take(len)?.to_vec());
        let client = c.u64()?;
        let clock = u32::try_from(c.u64()?).ok()?;
        acks.push((client, clock));
    }
    if !c.0.is_empty() {
        return None;
    }
    Some(Replayed {
        updates,
        acks,
        end_content: end_content.to_owned(),
        state_bytes,
        state_vector,
    })
}

/// [`replay`], read from `cache` when a replay of the same trace file is there (and written
/// there when not; failing to write is only a warning).
pub(crate) fn replay_cached(
    trace: &TraceFile,
    root: &str,
    first_client: u64,
    cache: Option<ReplayCache<'_>>,
) -> Result<Replayed, Error> {
    let file = cache.and_then(|c| c.file(root, first_client));
    if let Some(f) = &file
        && let Ok(bytes) = std::fs::read(f)
        && let Some(r) = decode_replay(&bytes, &trace.end_content)
    {
        return Ok(r);
    }
    let r = replay(trace, root, first_client)?;
    if let (Some(f), Some(c)) = (&file, cache) {
        let tmp = f.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::create_dir_all(c.dir)
            .and_then(|()| std::fs::write(&tmp, encode_replay(&r)))
            .and_then(|()| std::fs::rename(&tmp, f));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            eprintln!("warning: cannot cache the replay in {}: {e}", f.display());
        }
    }
    Ok(r)
}

/// Replays the trace once per root (pass `k` into `roots[k]`, with its own client ids), the
/// passes on parallel threads, and concatenates them in pass order.
fn replay_passes(
    trace: &TraceFile,
    roots: &[String],
    cache: Option<ReplayCache<'_>>,
) -> Result<Replayed, Error> {
    let authors = trace.authors();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, roots.len().max(1));
    let mut passes: Vec<Option<Result<Replayed, Error>>> = (0..roots.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..roots.len())
                        .step_by(threads)
                        .map(|k| {
                            let client = FIRST_CLIENT + k as u64 * authors;
                            (k, replay_cached(trace, &roots[k], client, cache))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            // A panicking thread leaves its passes at `None`, reported below.
            if let Ok(done) = h.join() {
                for (k, r) in done {
                    passes[k] = Some(r);
                }
            }
        }
    });
    let mut all: Option<Replayed> = None;
    let mut sv = yrs::StateVector::default();
    for pass in passes {
        let r = pass.ok_or("a replay thread panicked")??;
        sv.merge(
            yrs::StateVector::decode_v1(&r.state_vector)
                .map_err(|e| format!("re-decoding a state vector: {e}"))?,
        );
        match &mut all {
            None => all = Some(r),
            Some(a) => {
                a.updates.extend(r.updates);
                a.acks.extend(r.acks);
                a.state_bytes += r.state_bytes;
            }
        }
    }
    let mut all = all.ok_or("no pass to replay")?;
    all.state_vector = sv.encode_v1();
    Ok(all)
}

/// Whether a document given as a full v1 update holds nothing at all.
fn is_empty_doc(update: &[u8]) -> Result<bool, Error> {
    let doc = Doc::new();
    let mut txn = doc.transact_mut();
    txn.apply_update(Update::decode_v1(update).map_err(|e| format!("decode: {e}"))?)
        .map_err(|e| format!("apply: {e}"))?;
    Ok(txn.state_vector().is_empty())
}

/// The text of a document given as a full v1 update.
fn text_of(update: &[u8]) -> Result<String, Error> {
    let mut texts = texts_of(update, &[TEXT_NAME.to_owned()])?;
    texts.pop().ok_or_else(|| "no text".into())
}

/// The shared texts `roots` of a document given as a full v1 update (empty when absent).
pub(crate) fn texts_of(update: &[u8], roots: &[String]) -> Result<Vec<String>, Error> {
    let doc = Doc::new();
    let texts: Vec<TextRef> = roots
        .iter()
        .map(|r| doc.get_or_insert_text(r.as_str()))
        .collect();
    let mut txn = doc.transact_mut();
    txn.apply_update(Update::decode_v1(update).map_err(|e| format!("decode: {e}"))?)
        .map_err(|e| format!("apply: {e}"))?;
    Ok(texts.iter().map(|t| t.get_string(&txn)).collect())
}

/// Options of `cold-load`.
#[derive(Debug, Clone, Args)]
pub struct ColdLoadArgs {
    /// Document to fetch (written earlier, e.g. by `trace-load`).
    #[arg(long)]
    pub room: String,
    /// Trace the document was built from: the received text must equal its endContent.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Measurements. Only the first is cold unless the server unloads the document in between
    /// (see `--pause`); `bench/storage.sh` restarts the server and runs `--runs 1` instead.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Seconds to wait between runs (e.g. longer than the server's `--unload-after`).
    #[arg(long, default_value_t = 0.0)]
    pub pause: f64,
    /// After each measurement, fetch the document again while it is still in memory (warm).
    #[arg(long)]
    pub warm: bool,
    /// Give up on one fetch after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
}

#[derive(Debug, Serialize)]
struct ColdLoadResult {
    scenario: &'static str,
    room: String,
    runs: usize,
    /// connect → SyncStep2 received, µs, per run.
    cold_us: Vec<u64>,
    cold_p50_us: u64,
    cold_max_us: u64,
    /// Same with the document in memory (`--warm`).
    warm_us: Vec<u64>,
    warm_p50_us: Option<u64>,
    sync_step2_bytes: usize,
    /// Client-side decode + apply of the SyncStep2 into an empty Doc, µs (not in the latency).
    client_apply_us: u64,
    /// The received text equals the trace's endContent (`null` without `--trace`).
    verified: Option<bool>,
    errors: Vec<String>,
}

fn p50(v: &[u64]) -> u64 {
    let mut s = v.to_vec();
    s.sort_unstable();
    s.get((s.len().saturating_sub(1)) / 2).copied().unwrap_or(0)
}

/// One fetch: connect → SyncStep2; returns (µs, payload).
async fn fetch(target: &Target, url: &str, timeout: Duration) -> Result<(u64, Vec<u8>), Error> {
    let t0 = Instant::now();
    let mut ws = conn::connect(target, url, None, conn::ws_config(128 * 1024)).await?;
    let update = conn::sync_handshake_update(&mut ws, timeout).await?;
    let us = t0.elapsed().as_micros() as u64;
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    Ok((us, update))
}

/// Measures connect → full document (SyncStep2) for a document the server does not hold.
///
/// Why one function: a benchmark driver run once per invocation: set up, measure, report, in the
/// order of the report it prints, over locals every phase shares; split, the phases would pass
/// those around for nothing.
pub async fn cold_load(common: &Common, args: &ColdLoadArgs) -> Result<(), Error> {
    if !(1..=1000).contains(&args.runs) {
        return Err("--runs must be in 1..=1000".into());
    }
    if !((0.0..=600.0).contains(&args.pause) && args.timeout > 0.0 && args.timeout <= 600.0) {
        return Err("--pause must be in [0, 600] and --timeout in (0, 600]".into());
    }
    let target = Target::parse(&common.url)?;
    let url = target.room_url(&args.room);
    let expected = match &args.trace {
        Some(p) => Some(read_trace(p)?.end_content),
        None => None,
    };
    let timeout = Duration::from_secs_f64(args.timeout);
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut errors = Vec::new();
    let mut last = Vec::new();
    for run in 0..args.runs {
        if run > 0 && args.pause > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(args.pause)).await;
        }
        let (us, update) = fetch(&target, &url, timeout).await?;
        cold.push(us);
        if args.warm {
            // Keep one connection open so the document stays loaded, then fetch again.
            let mut hold = conn::connect(&target, &url, None, conn::ws_config(128 * 1024)).await?;
            conn::sync_handshake_update(&mut hold, timeout).await?;
            let (w, _) = fetch(&target, &url, timeout).await?;
            warm.push(w);
            let _ = tokio::time::timeout(Duration::from_secs(2), hold.close(None)).await;
        }
        last = update;
    }
    let t = Instant::now();
    let text = text_of(&last);
    let client_apply_us = t.elapsed().as_micros() as u64;
    let verified = match (&expected, text) {
        (None, _) => None,
        (Some(e), Ok(t)) if *e == t => Some(true),
        (Some(e), Ok(t)) => {
            errors.push(format!(
                "received text differs from endContent ({} vs {} bytes)",
                t.len(),
                e.len()
            ));
            Some(false)
        }
        (Some(_), Err(e)) => {
            errors.push(format!("received SyncStep2: {e}"));
            Some(false)
        }
    };
    let result = ColdLoadResult {
        scenario: "cold-load",
        room: args.room.clone(),
        runs: args.runs,
        cold_p50_us: p50(&cold),
        cold_max_us: cold.iter().copied().max().unwrap_or(0),
        cold_us: cold,
        warm_p50_us: (!warm.is_empty()).then(|| p50(&warm)),
        warm_us: warm,
        sync_step2_bytes: last.len(),
        client_apply_us,
        verified,
        errors,
    };
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "cold-load {:?}: connect → SyncStep2 ({} bytes) p50 {:.2} ms, max {:.2} ms over {} run(s){}; \
         text {}",
        result.room,
        result.sync_step2_bytes,
        ms(result.cold_p50_us),
        ms(result.cold_max_us),
        result.runs,
        result
            .warm_p50_us
            .map(|w| format!("; in memory p50 {:.2} ms", ms(w)))
            .unwrap_or_default(),
        match result.verified {
            Some(true) => "equals endContent",
            Some(false) => "DIFFERS from endContent",
            None => "not checked",
        }
    );
    crate::stats::print_json(&result);
    if result.verified == Some(false) {
        return Err(result.errors.join("; ").into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_sequential_and_concurrent() {
        let seq: TraceFile = serde_json::from_str(
            r#"{"startContent":"ab","endContent":"xaZ","txns":[
                {"patches":[[0,0,"x"]]},{"patches":[[2,1,""]]},{"patches":[[2,0,"Z"]]}]}"#,
        )
        .expect("json");
        let r = replay(&seq, TEXT_NAME, FIRST_CLIENT).expect("replay");
        assert_eq!(r.updates.len(), 4);
        // The delete-only update adds no clock.
        assert_eq!(r.acks[2], r.acks[1]);
        let conc: TraceFile = serde_json::from_str(
            r#"{"startContent":"","endContent":"ab12","txns":[
                {"agent":0,"parents":[],"patches":[[0,0,"ab"]]},
                {"agent":1,"parents":[0],"patches":[[2,0,"1"]]},
                {"agent":0,"parents":[0],"patches":[[1,0,"Q"]]},
                {"agent":1,"parents":[1],"patches":[[3,0,"2"]]},
                {"agent":0,"parents":[2,3],"patches":[[1,1,""]]}]}"#,
        )
        .expect("json");
        let r = replay(&conc, TEXT_NAME, FIRST_CLIENT).expect("replay concurrent");
        assert_eq!(r.updates.len(), 5);
        assert_eq!(r.end_content, "ab12");
        // Two passes: disjoint client ids, two texts, both ending at endContent.
        let roots = vec![pass_root("t", 0), pass_root("t", 1)];
        assert_eq!(roots, ["t", "t-2"]);
        let both = replay_passes(&conc, &roots, None).expect("two passes");
        assert_eq!(both.updates.len(), 10);
        assert_eq!(both.acks[5].0, FIRST_CLIENT + 2);
        let doc = Doc::new();
        let mut txn = doc.transact_mut();
        for u in &both.updates {
            txn.apply_update(Update::decode_v1(u).expect("decode"))
                .expect("apply");
        }
        let full = txn.encode_state_as_update_v1(&yrs::StateVector::default());
        drop(txn);
        assert_eq!(texts_of(&full, &roots).expect("texts"), ["ab12", "ab12"]);
        assert!(!is_empty_doc(&full).expect("decode"));
        assert_eq!(
            conc.update_counts(),
            [(2, 0), (1, 0), (1, 0), (1, 0), (0, 1)]
        );
        // The cache format round-trips; a truncated file is not accepted.
        let bytes = encode_replay(&both);
        let back = decode_replay(&bytes, "ab12").expect("decodes");
        assert_eq!(back.updates, both.updates);
        assert_eq!(back.acks, both.acks);
        assert_eq!(back.state_vector, both.state_vector);
        assert!(decode_replay(&bytes[..bytes.len() - 1], "ab12").is_none());
    }
}
