//! `history`: times the admin history API (timeline pages, state at a point, diffs, document
//! listing) over one keep-alive HTTP/1.1 connection, at random points, and checks every answer
//! against a local replay of the trace the documents were built from (`trace-load`).
//!
//! The documents: `--timeline-doc`, built by `trace-load --passes P` (P × the trace's updates in
//! its log, pass k into text `NAME-k`), for timeline pages; `--state-doc`, built by one pass of
//! the same trace, for state reads and diffs. Seq `s` of a document built by `trace-load` is the
//! trace replay's update `s` (one log row per update, in sending order), which is what makes the
//! answers checkable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::Value;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, Transact, Update};

use crate::conn::Target;
use crate::editor::TEXT_NAME;
use crate::http::{Client, Response, encode_component};
use crate::procstat;
use crate::stats::Rng;
use crate::trace::{self, pass_root};
use crate::{Common, Error};

/// Options of `history`.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// The server's admin token (`tandem --admin-token`).
    #[arg(long, env = "TANDEM_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
    /// Document for timeline pages: one with a long log (`trace-load --passes P`).
    #[arg(long)]
    pub timeline_doc: Option<String>,
    /// How many passes of `--trace` built `--timeline-doc` (to check seqs and summaries).
    #[arg(long, default_value_t = 1)]
    pub timeline_passes: usize,
    /// Document for state reads and diffs: one pass of `--trace` (`trace-load`).
    #[arg(long)]
    pub state_doc: Option<String>,
    /// Trace both documents were built from: every answer is checked against its replay
    /// (without it only statuses and seqs are checked).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Replay cache shared with `trace-load --cache-dir` (replaying a long trace costs minutes).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Shared text the trace was typed into (`trace-load --text-name`).
    #[arg(long, default_value = TEXT_NAME)]
    pub text_name: String,
    /// Timed requests per kind, each at a fresh random point (one more untimed warm-up each).
    #[arg(long, default_value_t = 50)]
    pub samples: usize,
    /// Timeline page size.
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
    /// Changes between the two points of a diff.
    #[arg(long, default_value_t = 1000)]
    pub diff_span: u64,
    /// Which requests to time (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "documents,timeline,long-state,state,diff"
    )]
    pub kinds: Vec<KindGroup>,
    /// Also count the CPU time of the processes whose command line contains this (e.g. the
    /// Postgres database name: its backends show it in their process title) per request.
    #[arg(long)]
    pub db_process_match: Option<String>,
    /// Seed of the random points (the same seed gives the same points).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Give up on one request after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// Target for a timeline page, ms (the report says met or missed).
    #[arg(long, default_value_t = 50.0)]
    pub timeline_target_ms: f64,
    /// Target for a state read, ms.
    #[arg(long, default_value_t = 200.0)]
    pub state_target_ms: f64,
}

/// Groups of requests (`--kinds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindGroup {
    /// The documents list.
    Documents,
    /// Timeline pages of the timeline document: asc, desc, newest, group=session.
    Timeline,
    /// State reads (JSON) at random points of the timeline document.
    LongState,
    /// State reads (JSON and binary) of the state document.
    State,
    /// Diffs of the state document.
    Diff,
}

/// CPU time the server (per thread group) and the database processes spend, read from
/// `/proc/*/schedstat` (nanoseconds on the CPU).
struct CpuProbe {
    server_pid: Option<u32>,
    db_match: Option<String>,
}

/// CPU ns per thread (tid → (group, ns)) and of the matching database processes.
#[derive(Default)]
struct CpuSnap {
    threads: HashMap<u32, (&'static str, u64)>,
    db_ns: u64,
    /// Machine-wide CPU counters and this process's CPU, for the load of everything else.
    machine: Option<procstat::Machine>,
    bench: Option<procstat::Sample>,
}

/// Thread group of a server thread, by name: sqlx runs each SQLite connection on its own
/// thread, so SQLite work shows as `db-thread`; `runtime` is tokio's workers and blocking
/// pool (reconstruction, summaries, JSON).
fn thread_group(comm: &str) -> &'static str {
    if comm.starts_with("sqlx-sqlite") {
        "db-thread"
    } else if comm.starts_with("tokio") {
        "runtime"
    } else {
        "other"
    }
}

fn schedstat_ns(path: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl CpuProbe {
    fn snap(&self) -> CpuSnap {
        let mut snap = CpuSnap {
            machine: procstat::machine(),
            bench: procstat::sample(std::process::id()).ok(),
            ..CpuSnap::default()
        };
        if let Some(pid) = self.server_pid
            && let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task"))
        {
            for t in tasks.flatten() {
                let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                if let Some(ns) = schedstat_ns(&t.path().join("schedstat")) {
                    snap.threads.insert(tid, (thread_group(comm.trim()), ns));
                }
            }
        }
        if let Some(needle) = &self.db_match
            && let Ok(procs) = std::fs::read_dir("/proc")
        {
            for p in procs.flatten() {
                if !p
                    .file_name()
                    .to_str()
                    .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()))
                {
                    continue;
                }
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(needle.as_str()) {
                    // Postgres backends are single-threaded: the process is its main thread.
                    snap.db_ns += schedstat_ns(&p.path().join("schedstat")).unwrap_or(0);
                }
            }
        }
        snap
    }

    /// µs of CPU per group between two snapshots, divided by `requests`. Threads that started
    /// in between count whole; ones that ended in between are lost (tokio's blocking threads
    /// live 10 s idle, so not while requests keep coming). Processes are matched anew each
    /// time, so a database backend that started in between would count whole: the per-request
    /// figure is only meaningful on a keep-alive connection.
    fn per_request(&self, a: &CpuSnap, b: &CpuSnap, requests: usize) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        if self.server_pid.is_none() || requests == 0 {
            return out;
        }
        for (tid, (group, ns)) in &b.threads {
            let before = a.threads.get(tid).map_or(0, |(_, ns)| *ns);
            *out.entry((*group).to_owned()).or_default() += ns.saturating_sub(before);
        }
        if self.db_match.is_some() {
            out.insert("db-processes".into(), b.db_ns.saturating_sub(a.db_ns));
        }
        for v in out.values_mut() {
            *v = *v / 1000 / requests as u64;
        }
        out
    }

    /// CPU used by everything but the server, the database processes and this process, % of
    /// one core, between two snapshots (builds or tests competing with the measurement).
    fn other_load(a: &CpuSnap, b: &CpuSnap) -> Option<f64> {
        let server_ns: u64 = b
            .threads
            .iter()
            .map(|(tid, (_, ns))| ns.saturating_sub(a.threads.get(tid).map_or(0, |t| t.1)))
            .sum();
        let bench_s = procstat::cpu_seconds(a.bench.as_ref()?, b.bench.as_ref()?);
        let used = (server_ns + b.db_ns.saturating_sub(a.db_ns)) as f64 / 1e9 + bench_s;
        Some(procstat::other_load_percent(
            a.machine.as_ref()?,
            b.machine.as_ref()?,
            used,
        ))
    }
}

/// Timings and checks of one kind of request.
#[derive(Debug, Default, Serialize)]
struct KindResult {
    kind: String,
    document: String,
    /// Example request (the first timed one).
    example: String,
    count: usize,
    p50_us: u64,
    p95_us: u64,
    max_us: u64,
    min_us: u64,
    mean_us: u64,
    /// The untimed warm-up request (first of its kind on this connection).
    warmup_us: u64,
    /// CPU µs per timed request: the server's threads by group (`runtime`: tokio workers and
    /// blocking pool; `db-thread`: sqlx's SQLite connection threads) and, with
    /// `--db-process-match`, the database processes (Postgres backends).
    cpu_us_per_request: BTreeMap<String, u64>,
    /// CPU used meanwhile by other processes of the machine, % of one core.
    other_cpu_pct: Option<f64>,
    /// Response body bytes, median.
    body_bytes_p50: u64,
    /// Answers that failed a check (wrong status, seq, content or summary).
    failed: usize,
    /// Answers whose content was checked against the trace replay and matched.
    verified: usize,
    errors: Vec<String>,
    #[serde(skip)]
    samples_us: Vec<u64>,
    #[serde(skip)]
    bodies: Vec<u64>,
}

impl KindResult {
    fn new(kind: &str, document: &str) -> Self {
        KindResult {
            kind: kind.into(),
            document: document.into(),
            ..KindResult::default()
        }
    }

    fn fail(&mut self, e: String) {
        self.failed += 1;
        if self.errors.len() < 5 {
            self.errors.push(e);
        }
    }

    fn finish(&mut self) {
        let mut s = self.samples_us.clone();
        s.sort_unstable();
        let q = |p: f64| -> u64 {
            if s.is_empty() {
                return 0;
            }
            let rank = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len());
            s[rank - 1]
        };
        self.count = s.len();
        self.p50_us = q(0.50);
        self.p95_us = q(0.95);
        self.max_us = s.last().copied().unwrap_or(0);
        self.min_us = s.first().copied().unwrap_or(0);
        self.mean_us = if s.is_empty() {
            0
        } else {
            s.iter().sum::<u64>() / s.len() as u64
        };
        let mut b = self.bodies.clone();
        b.sort_unstable();
        self.body_bytes_p50 = b.get(b.len().saturating_sub(1) / 2).copied().unwrap_or(0);
    }
}

/// What `GET /documents/{name}` said, as reported.
#[derive(Debug, Serialize)]
struct DocStats {
    name: String,
    last_seq: u64,
    log_rows: u64,
    log_bytes: u64,
    snapshots: u64,
    snapshot_bytes: u64,
    stored_bytes: u64,
    latest_snapshot_seq: Option<u64>,
}

#[derive(Debug, Serialize)]
struct HistoryResult {
    scenario: &'static str,
    seed: u64,
    samples: usize,
    limit: u64,
    documents: Vec<DocStats>,
    kinds: Vec<KindResult>,
    /// Largest p95 / max of the timeline kinds, µs.
    timeline_p95_us: u64,
    timeline_max_us: u64,
    /// Largest p95 / max of the state kinds on the state document, µs.
    state_p95_us: u64,
    state_max_us: u64,
    timeline_target_met: Option<bool>,
    state_target_met: Option<bool>,
    /// State at the newest seq of the state document equals the trace's endContent.
    end_content_verified: Option<bool>,
    /// HTTP connections opened (1: keep-alive held for every request).
    connections: u64,
    errors: Vec<String>,
}

/// The expected content of the documents, from a local replay of the trace.
struct Expected {
    /// Updates of one pass.
    per_pass: u64,
    end_content: String,
    /// Characters inserted / deleted by each update of a pass.
    counts: Vec<(u64, u64)>,
    /// Text after `n` updates of a pass, for the `n` asked for.
    texts: HashMap<u64, String>,
}

impl Expected {
    /// Text of pass-local position `n` (`n` updates applied).
    fn text(&self, n: u64) -> Option<&str> {
        if n == self.per_pass {
            return Some(&self.end_content);
        }
        self.texts.get(&n).map(String::as_str)
    }

    /// (pass, updates of that pass applied) at seq `s` of a multi-pass document (s ≥ 1).
    fn locate(&self, s: u64) -> (usize, u64) {
        let k = (s - 1) / self.per_pass;
        (k as usize, s - k * self.per_pass)
    }
}

/// Applies the updates in order and keeps the text after `n` of them for every `n` in `at`.
fn texts_at(
    updates: &[Vec<u8>],
    root: &str,
    at: &BTreeSet<u64>,
) -> Result<HashMap<u64, String>, Error> {
    let doc = Doc::new();
    let text = doc.get_or_insert_text(root);
    let mut out = HashMap::new();
    let mut applied = 0u64;
    for &n in at {
        if n > updates.len() as u64 {
            break;
        }
        let mut txn = doc.transact_mut();
        while applied < n {
            let u = &updates[applied as usize];
            txn.apply_update(Update::decode_v1(u).map_err(|e| format!("decode: {e}"))?)
                .map_err(|e| format!("apply: {e}"))?;
            applied += 1;
        }
        out.insert(n, text.get_string(&txn));
    }
    Ok(out)
}

fn get_u64(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Parses a JSON answer, or says why not.
fn json_of(r: &Response) -> Result<Value, String> {
    serde_json::from_slice(&r.body).map_err(|e| format!("answer is not JSON: {e}"))
}

/// The `value` of text root `root` in a state answer's `content` ("" when absent).
fn content_text<'a>(content: &'a Value, root: &str) -> Result<&'a str, String> {
    match content.get(root) {
        None | Some(Value::Null) => Ok(""),
        Some(r) => {
            if r.get("kind").and_then(Value::as_str) != Some("text") {
                return Err(format!("root {root:?} is not reported as text: {r}"));
            }
            r.get("value")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("root {root:?} has no string value"))
        }
    }
}

/// Context of the checks.
struct Checker<'a> {
    text_name: &'a str,
    expected: Option<&'a Expected>,
}

impl Checker<'_> {
    /// A timeline page of `changes`, expected to hold exactly `seqs` (in that order).
    /// Returns whether summaries were checked against the trace.
    fn changes(&self, v: &Value, seqs: &[u64]) -> Result<bool, String> {
        let changes = v
            .get("changes")
            .and_then(Value::as_array)
            .ok_or("no changes array")?;
        let got: Vec<u64> = changes.iter().filter_map(|c| get_u64(c, "seq")).collect();
        if got != seqs {
            return Err(format!(
                "seqs {:?}..{:?} ({}), expected {:?}..{:?} ({})",
                got.first(),
                got.last(),
                got.len(),
                seqs.first(),
                seqs.last(),
                seqs.len()
            ));
        }
        let Some(exp) = self.expected else {
            return Ok(false);
        };
        for c in changes {
            let s = get_u64(c, "seq").unwrap_or(0);
            let (pass, n) = exp.locate(s);
            let root = pass_root(self.text_name, pass);
            let (ins, del) = exp.counts[(n - 1) as usize];
            let summary = c
                .get("summary")
                .and_then(Value::as_object)
                .ok_or_else(|| format!("seq {s}: no summary"))?;
            let mut got = (0, 0);
            for (name, r) in summary {
                if *name != root {
                    return Err(format!(
                        "seq {s}: summary names {name:?}, expected {root:?}"
                    ));
                }
                got = (
                    get_u64(r, "inserted").unwrap_or(0),
                    get_u64(r, "deleted").unwrap_or(0),
                );
            }
            if got != (ins, del) {
                return Err(format!(
                    "seq {s}: summary inserted/deleted {got:?}, the trace says {:?}",
                    (ins, del)
                ));
            }
        }
        Ok(true)
    }

    /// A grouped page starting after `after`, `n` changes in all.
    fn sessions(&self, v: &Value, after: u64, n: u64) -> Result<(), String> {
        let sessions = v
            .get("sessions")
            .and_then(Value::as_array)
            .ok_or("no sessions array")?;
        let first = sessions.first().and_then(|s| get_u64(s, "from_seq"));
        if first != Some(after + 1) {
            return Err(format!(
                "first session from_seq {first:?}, expected {}",
                after + 1
            ));
        }
        let total: u64 = sessions.iter().filter_map(|s| get_u64(s, "changes")).sum();
        if total != n {
            return Err(format!("sessions hold {total} changes, expected {n}"));
        }
        Ok(())
    }

    /// A JSON state answer at `seq`; returns whether its content was checked.
    fn state_json(&self, v: &Value, seq: u64, passes: usize) -> Result<bool, String> {
        if get_u64(v, "seq") != Some(seq) {
            return Err(format!("answer seq {:?}, asked {seq}", v.get("seq")));
        }
        let content = v.get("content").ok_or("no content")?;
        let Some(exp) = self.expected else {
            return Ok(false);
        };
        let (pass, n) = if seq == 0 { (0, 0) } else { exp.locate(seq) };
        for k in 0..passes {
            let root = pass_root(self.text_name, k);
            let want = match k.cmp(&pass) {
                std::cmp::Ordering::Less => exp.end_content.as_str(),
                std::cmp::Ordering::Equal => exp.text(n).ok_or("expected text not computed")?,
                std::cmp::Ordering::Greater => "",
            };
            let got = content_text(content, &root)?;
            if got != want {
                return Err(format!(
                    "text {root:?} at seq {seq}: {} bytes, expected {} bytes{}",
                    got.len(),
                    want.len(),
                    first_difference(got, want)
                ));
            }
        }
        Ok(true)
    }

    /// A binary state answer (a Yjs update) at `seq` of a one-pass document.
    fn state_binary(&self, r: &Response, seq: u64) -> Result<bool, String> {
        let header = r.header("x-tandem-seq").and_then(|h| h.parse::<u64>().ok());
        if header != Some(seq) {
            return Err(format!("X-Tandem-Seq {header:?}, asked {seq}"));
        }
        let Some(exp) = self.expected else {
            return Ok(false);
        };
        let want = exp.text(seq).ok_or("expected text not computed")?;
        let got = trace::texts_of(&r.body, &[self.text_name.to_owned()])
            .map_err(|e| format!("binary state: {e}"))?;
        let got = got.first().map(String::as_str).unwrap_or_default();
        if got != want {
            return Err(format!(
                "binary state at seq {seq}: {} bytes of text, expected {}{}",
                got.len(),
                want.len(),
                first_difference(got, want)
            ));
        }
        Ok(true)
    }

    /// A diff answer between `from` and `to` of a one-pass document: keep + insert spans must
    /// spell the text at `to`, keep + delete spans the text at `from`.
    fn diff(&self, v: &Value, from: u64, to: u64) -> Result<bool, String> {
        if get_u64(v, "from") != Some(from) || get_u64(v, "to") != Some(to) {
            return Err(format!(
                "answer from/to {:?}/{:?}, asked {from}/{to}",
                v.get("from"),
                v.get("to")
            ));
        }
        let Some(exp) = self.expected else {
            return Ok(false);
        };
        let (Some(old), Some(new)) = (exp.text(from), exp.text(to)) else {
            return Err("expected text not computed".into());
        };
        let spans = v
            .get("content")
            .and_then(|c| c.get(self.text_name))
            .and_then(|t| t.get("spans"))
            .and_then(Value::as_array);
        let Some(spans) = spans else {
            return if old == new {
                Ok(true)
            } else {
                Err(format!("no spans for text {:?}", self.text_name))
            };
        };
        let (mut before, mut after) = (String::new(), String::new());
        for s in spans {
            let text = s.get("text").and_then(Value::as_str).unwrap_or_default();
            match s.get("op").and_then(Value::as_str) {
                Some("keep") => {
                    before.push_str(text);
                    after.push_str(text);
                }
                Some("insert") => after.push_str(text),
                Some("delete") => before.push_str(text),
                op => return Err(format!("span op {op:?}")),
            }
        }
        if before != old || after != new {
            return Err(format!(
                "spans spell {} / {} bytes before / after, expected {} / {}",
                before.len(),
                after.len(),
                old.len(),
                new.len()
            ));
        }
        Ok(true)
    }
}

/// Where two strings first differ, for error messages.
fn first_difference(a: &str, b: &str) -> String {
    let i = a
        .bytes()
        .zip(b.bytes())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    format!(" (first difference at byte {i})")
}

/// One timed GET; the duration covers writing the request and reading the whole body.
async fn timed(client: &mut Client, path: &str) -> Result<(u64, Response), Error> {
    let t = Instant::now();
    let r = client.get(path).await?;
    Ok((t.elapsed().as_micros() as u64, r))
}

/// Runs `samples` + 1 (warm-up) requests of one kind; `check` validates each answer.
async fn run_kind<F>(
    client: &mut Client,
    probe: &CpuProbe,
    kind: &mut KindResult,
    paths: &[String],
    mut check: F,
) -> Result<(), Error>
where
    F: FnMut(usize, &Response) -> Result<bool, String>,
{
    let mut cpu_from = None;
    for (i, path) in paths.iter().enumerate() {
        if i == 1 {
            cpu_from = Some(probe.snap());
        }
        let (us, r) = timed(client, path).await?;
        let outcome = if r.status == 200 {
            check(i, &r)
        } else {
            Err(format!("status {} for {path}: {}", r.status, r.snippet()))
        };
        match outcome {
            Ok(true) => kind.verified += 1,
            Ok(false) => {}
            Err(e) => kind.fail(format!("{path}: {e}")),
        }
        if i == 0 {
            kind.warmup_us = us;
        } else {
            if kind.example.is_empty() {
                kind.example = path.clone();
            }
            kind.samples_us.push(us);
            kind.bodies.push(r.body.len() as u64);
        }
    }
    if let Some(from) = cpu_from {
        let to = probe.snap();
        kind.cpu_us_per_request = probe.per_request(&from, &to, paths.len() - 1);
        kind.other_cpu_pct = CpuProbe::other_load(&from, &to);
    }
    kind.finish();
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "{:<22} {:<28} p50 {:>8.2} ms  p95 {:>8.2} ms  max {:>8.2} ms  (warm-up {:.2} ms; {} B p50; {} checked, {} failed)",
        kind.kind,
        kind.document,
        ms(kind.p50_us),
        ms(kind.p95_us),
        ms(kind.max_us),
        ms(kind.warmup_us),
        kind.body_bytes_p50,
        kind.verified,
        kind.failed
    );
    if !kind.cpu_us_per_request.is_empty() {
        let split: Vec<String> = kind
            .cpu_us_per_request
            .iter()
            .map(|(g, us)| format!("{g} {:.2} ms", ms(*us)))
            .collect();
        println!(
            "    CPU per request: {}; other load {}%",
            split.join(", "),
            kind.other_cpu_pct.map_or("?".into(), |p| p.to_string())
        );
    }
    for e in &kind.errors {
        println!("    {e}");
    }
    Ok(())
}

/// `GET /documents/{name}`.
async fn doc_stats(client: &mut Client, name: &str) -> Result<DocStats, Error> {
    let path = format!("/api/v1/admin/documents/{}", encode_component(name));
    let r = client.get(&path).await?;
    if r.status != 200 {
        return Err(format!("GET {path}: status {}: {}", r.status, r.snippet()).into());
    }
    let v = json_of(&r)?;
    let n = |k: &str| get_u64(&v, k).unwrap_or(0);
    Ok(DocStats {
        name: name.to_owned(),
        last_seq: n("last_seq"),
        log_rows: n("log_rows"),
        log_bytes: n("log_bytes"),
        snapshots: n("snapshots"),
        snapshot_bytes: n("snapshot_bytes"),
        stored_bytes: n("stored_bytes"),
        latest_snapshot_seq: v.get("latest_snapshot").and_then(|s| get_u64(s, "seq")),
    })
}

/// Times the admin history API.
///
/// Why one function: a benchmark driver run once per invocation: set up, measure, report, in the
/// order of the report it prints, over locals every phase shares; split, the phases would pass
/// those around for nothing.
pub async fn run(common: &Common, args: &HistoryArgs) -> Result<(), Error> {
    if !(1..=100_000).contains(&args.samples) {
        return Err("--samples must be in 1..=100000".into());
    }
    if !(1..=1000).contains(&args.limit) {
        return Err("--limit must be in 1..=1000".into());
    }
    if !(1..=64).contains(&args.timeline_passes) {
        return Err("--timeline-passes must be in 1..=64".into());
    }
    if args.diff_span == 0 {
        return Err("--diff-span must be at least 1".into());
    }
    if !(args.timeout > 0.0 && args.timeout <= 3600.0) {
        return Err("--timeout must be in (0, 3600]".into());
    }
    if args.timeline_doc.is_none() && args.state_doc.is_none() {
        return Err("give --timeline-doc and/or --state-doc".into());
    }
    let wants = |g: KindGroup| args.kinds.contains(&g);
    let probe = CpuProbe {
        server_pid: common.server_pid,
        db_match: args.db_process_match.clone(),
    };
    let target = Target::parse(&common.url)?;
    let mut client = Client::new(
        target.addr,
        Some(args.admin_token.clone()),
        Duration::from_secs_f64(args.timeout),
    );
    client.connect().await?;
    let mut rng = Rng(args.seed);
    let mut errors = Vec::new();

    // The documents, as the API describes them (also the DB volume they take).
    let mut documents = Vec::new();
    for name in [&args.timeline_doc, &args.state_doc].into_iter().flatten() {
        let s = doc_stats(&mut client, name).await?;
        println!(
            "document {:?}: last_seq {}, {} log rows ({} B), {} snapshots ({} B), {} B stored",
            s.name,
            s.last_seq,
            s.log_rows,
            s.log_bytes,
            s.snapshots,
            s.snapshot_bytes,
            s.stored_bytes
        );
        documents.push(s);
    }
    let timeline = args
        .timeline_doc
        .as_ref()
        .and_then(|n| documents.iter().find(|d| d.name == *n))
        .map(|d| (d.name.clone(), d.last_seq));
    let state = args
        .state_doc
        .as_ref()
        .and_then(|n| documents.iter().find(|d| d.name == *n))
        .map(|d| (d.name.clone(), d.last_seq));

    // Random points, chosen before any request so the expected texts can be computed first.
    let n = args.samples + 1;
    let limit = args.limit;
    let mut tl_after = Vec::new();
    let mut tl_before = Vec::new();
    let mut tl_session = Vec::new();
    let mut tl_state = Vec::new();
    if let Some((_, last)) = &timeline {
        let last = *last;
        if last < limit {
            return Err(format!("the timeline document has only {last} changes").into());
        }
        tl_after = (0..n).map(|_| rng.range(0, last - limit)).collect();
        tl_before = (0..n).map(|_| rng.range(limit + 1, last + 1)).collect();
        tl_session = (0..n).map(|_| rng.range(0, last - limit)).collect();
        if wants(KindGroup::LongState) {
            tl_state = (0..n).map(|_| rng.range(1, last)).collect();
        }
    }
    let mut st_json = Vec::new();
    let mut st_bin = Vec::new();
    let mut diff_from = Vec::new();
    if let Some((_, last)) = &state {
        let last = *last;
        if last == 0 {
            return Err("the state document is empty".into());
        }
        st_json = (0..n).map(|_| rng.range(1, last)).collect();
        st_bin = (0..n).map(|_| rng.range(1, last)).collect();
        diff_from = (0..n)
            .map(|_| rng.range(0, last.saturating_sub(args.diff_span)))
            .collect();
    }

    // Expected content from the trace.
    let expected = match &args.trace {
        None => None,
        Some(path) => {
            let t0 = Instant::now();
            let tr = trace::read_trace(path)?;
            let cache = args.cache_dir.as_deref().map(|dir| trace::ReplayCache {
                dir,
                trace_path: path,
            });
            let replayed = trace::replay_cached(&tr, &args.text_name, 1, cache)?;
            let per_pass = replayed.updates.len() as u64;
            let mut want = BTreeSet::new();
            if let Some((name, last)) = &state {
                if *last == per_pass {
                    want.extend(st_json.iter().chain(&st_bin).copied());
                    for &f in &diff_from {
                        want.insert(f);
                        want.insert((f + args.diff_span).min(*last));
                    }
                } else {
                    errors.push(format!(
                        "{name:?} has {last} changes but one pass of the trace is {per_pass}: \
                         contents not checked"
                    ));
                }
            }
            if let Some((name, last)) = &timeline {
                if *last != per_pass * args.timeline_passes as u64 {
                    errors.push(format!(
                        "{name:?} has {last} changes, {} passes of the trace are {}: \
                         contents not checked",
                        args.timeline_passes,
                        per_pass * args.timeline_passes as u64
                    ));
                } else {
                    for &s in &tl_state {
                        want.insert(s - (s - 1) / per_pass * per_pass);
                    }
                }
            }
            want.insert(0);
            let texts = texts_at(&replayed.updates, &args.text_name, &want)?;
            println!(
                "trace replayed ({per_pass} updates per pass), {} expected texts in {:.2} s",
                texts.len(),
                t0.elapsed().as_secs_f64()
            );
            Some(Expected {
                per_pass,
                end_content: tr.end_content.clone(),
                counts: tr.update_counts(),
                texts,
            })
        }
    };
    let checkable = |name: &str, passes: u64| {
        expected.as_ref().filter(|e| {
            documents
                .iter()
                .any(|d| d.name == name && d.last_seq == e.per_pass * passes)
        })
    };

    let mut kinds = Vec::new();
    let admin = "/api/v1/admin/documents";
    let mut end_content_verified = None;

    // Documents list.
    if wants(KindGroup::Documents) {
        let mut k = KindResult::new("documents", "(list, limit=50)");
        let paths: Vec<String> = (0..n).map(|_| format!("{admin}?limit=50")).collect();
        let names: Vec<String> = documents.iter().map(|d| d.name.clone()).collect();
        run_kind(&mut client, &probe, &mut k, &paths, |_, r| {
            let v = json_of(r)?;
            let listed: Vec<&str> = v
                .get("documents")
                .and_then(Value::as_array)
                .ok_or("no documents array")?
                .iter()
                .filter_map(|d| d.get("name").and_then(Value::as_str))
                .collect();
            match names.iter().find(|n| !listed.contains(&n.as_str())) {
                Some(missing) => Err(format!("{missing:?} not listed")),
                None => Ok(false),
            }
        })
        .await?;
        kinds.push(k);
    }

    if let Some((name, last)) = timeline.as_ref().filter(|_| wants(KindGroup::Timeline)) {
        let doc = format!("{admin}/{}/timeline", encode_component(name));
        let passes = args.timeline_passes;
        let checker = Checker {
            text_name: &args.text_name,
            expected: checkable(name, passes as u64),
        };
        let mut k = KindResult::new("timeline asc", name);
        let paths: Vec<String> = tl_after
            .iter()
            .map(|a| format!("{doc}?after={a}&limit={limit}"))
            .collect();
        run_kind(&mut client, &probe, &mut k, &paths, |i, r| {
            let a = tl_after[i];
            let seqs: Vec<u64> = (a + 1..=a + limit).collect();
            checker.changes(&json_of(r)?, &seqs)
        })
        .await?;
        kinds.push(k);

        let mut k = KindResult::new("timeline desc", name);
        let paths: Vec<String> = tl_before
            .iter()
            .map(|b| format!("{doc}?order=desc&before={b}&limit={limit}"))
            .collect();
        run_kind(&mut client, &probe, &mut k, &paths, |i, r| {
            let b = tl_before[i];
            let seqs: Vec<u64> = (b - limit..b).rev().collect();
            checker.changes(&json_of(r)?, &seqs)
        })
        .await?;
        kinds.push(k);

        let mut k = KindResult::new("timeline newest", name);
        let paths: Vec<String> = (0..n)
            .map(|_| format!("{doc}?order=desc&limit={limit}"))
            .collect();
        let last = *last;
        run_kind(&mut client, &probe, &mut k, &paths, |_, r| {
            let seqs: Vec<u64> = (last + 1 - limit..=last).rev().collect();
            checker.changes(&json_of(r)?, &seqs)
        })
        .await?;
        kinds.push(k);

        let mut k = KindResult::new("timeline session", name);
        let paths: Vec<String> = tl_session
            .iter()
            .map(|a| format!("{doc}?after={a}&limit={limit}&group=session"))
            .collect();
        run_kind(&mut client, &probe, &mut k, &paths, |i, r| {
            checker.sessions(&json_of(r)?, tl_session[i], limit)?;
            Ok(false)
        })
        .await?;
        kinds.push(k);
    }
    if let Some((name, _)) = timeline.as_ref().filter(|_| !tl_state.is_empty()) {
        let passes = args.timeline_passes;
        let checker = Checker {
            text_name: &args.text_name,
            expected: checkable(name, passes as u64),
        };
        {
            let state_path = format!("{admin}/{}/state", encode_component(name));
            let mut k = KindResult::new("state json (long log)", name);
            let paths: Vec<String> = tl_state
                .iter()
                .map(|s| format!("{state_path}?seq={s}&format=json"))
                .collect();
            run_kind(&mut client, &probe, &mut k, &paths, |i, r| {
                checker.state_json(&json_of(r)?, tl_state[i], passes)
            })
            .await?;
            kinds.push(k);
        }
    }

    if let Some((name, last)) = &state {
        let last = *last;
        let base = format!("{admin}/{}", encode_component(name));
        let checker = Checker {
            text_name: &args.text_name,
            expected: checkable(name, 1),
        };
        if wants(KindGroup::State) {
            let mut k = KindResult::new("state json", name);
            let paths: Vec<String> = st_json
                .iter()
                .map(|s| format!("{base}/state?seq={s}&format=json"))
                .collect();
            run_kind(&mut client, &probe, &mut k, &paths, |i, r| {
                checker.state_json(&json_of(r)?, st_json[i], 1)
            })
            .await?;
            kinds.push(k);

            let mut k = KindResult::new("state binary", name);
            let paths: Vec<String> = st_bin
                .iter()
                .map(|s| format!("{base}/state?seq={s}&format=binary"))
                .collect();
            run_kind(&mut client, &probe, &mut k, &paths, |i, r| {
                checker.state_binary(r, st_bin[i])
            })
            .await?;
            kinds.push(k);
        }

        if wants(KindGroup::Diff) {
            let mut k = KindResult::new("diff", name);
            let span = args.diff_span;
            let paths: Vec<String> = diff_from
                .iter()
                .map(|f| format!("{base}/diff?from={f}&to={}", (f + span).min(last)))
                .collect();
            run_kind(&mut client, &probe, &mut k, &paths, |i, r| {
                let f = diff_from[i];
                checker.diff(&json_of(r)?, f, (f + span).min(last))
            })
            .await?;
            kinds.push(k);
        }

        // The newest state equals the trace's endContent (one untimed request).
        if let Some(exp) = checker.expected.filter(|_| wants(KindGroup::State)) {
            let path = format!("{base}/state?seq={last}&format=json");
            let (us, r) = timed(&mut client, &path).await?;
            let ok = r.status == 200
                && json_of(&r)
                    .ok()
                    .and_then(|v| {
                        v.get("content")
                            .and_then(|c| content_text(c, &args.text_name).ok().map(str::to_owned))
                    })
                    .is_some_and(|t| t == exp.end_content);
            println!(
                "state at the newest seq ({last}) {} the trace's endContent ({:.2} ms)",
                if ok { "equals" } else { "DIFFERS FROM" },
                us as f64 / 1000.0
            );
            if !ok {
                errors.push(format!("state at seq {last} differs from endContent"));
            }
            end_content_verified = Some(ok);
        }
    }

    let worst = |pred: &dyn Fn(&KindResult) -> bool| {
        let ks = kinds.iter().filter(|k| pred(k));
        ks.fold((0u64, 0u64, false), |(p, m, _), k| {
            (p.max(k.p95_us), m.max(k.max_us), true)
        })
    };
    let (tl_p95, tl_max, has_tl) = worst(&|k| k.kind.starts_with("timeline"));
    let (st_p95, st_max, has_st) = worst(&|k| k.kind == "state json" || k.kind == "state binary");
    let met = |max: u64, target_ms: f64| max as f64 <= target_ms * 1000.0;
    let result = HistoryResult {
        scenario: "history",
        seed: args.seed,
        samples: args.samples,
        limit,
        documents,
        timeline_p95_us: tl_p95,
        timeline_max_us: tl_max,
        state_p95_us: st_p95,
        state_max_us: st_max,
        timeline_target_met: has_tl.then(|| met(tl_max, args.timeline_target_ms)),
        state_target_met: has_st.then(|| met(st_max, args.state_target_ms)),
        end_content_verified,
        connections: client.connects,
        errors: {
            for k in &kinds {
                if k.failed > 0 {
                    errors.push(format!(
                        "{} ({}): {} answers failed checks",
                        k.kind, k.document, k.failed
                    ));
                }
            }
            errors
        },
        kinds,
    };
    let ms = |us: u64| us as f64 / 1000.0;
    if has_tl {
        println!(
            "timeline pages: worst p95 {:.2} ms, worst max {:.2} ms — target ≤ {} ms {}",
            ms(tl_p95),
            ms(tl_max),
            args.timeline_target_ms,
            if result.timeline_target_met == Some(true) {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    if has_st {
        println!(
            "state reads: worst p95 {:.2} ms, worst max {:.2} ms — target ≤ {} ms {}",
            ms(st_p95),
            ms(st_max),
            args.state_target_ms,
            if result.state_target_met == Some(true) {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    for e in &result.errors {
        println!("problem: {e}");
    }
    crate::stats::print_json(&result);
    if result.errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{} problem(s); see above", result.errors.len()).into())
    }
}
