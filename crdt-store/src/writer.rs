//! Group commit: every room hands its accepted updates to one [`Writer`]; a
//! single task commits whatever has queued up in one transaction, so the cost
//! of a commit is shared by all rows that arrived while the previous one ran.
//! There is no timer or debounce: an idle writer commits a lone row at once,
//! a busy one naturally builds bigger batches.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::{DocRef, NewUpdate, Store, StoreError};

/// Tuning of the group-commit writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterOptions {
    /// Most rows committed in one transaction. Bounds a transaction's duration
    /// (≈2 ms for 1,000 rows on Postgres) so the next batch is never far behind.
    pub max_batch_rows: usize,
    /// Most update bytes in one transaction (a single larger row still goes
    /// alone). Keeps bind messages and SQLite transactions moderate.
    pub max_batch_bytes: usize,
    /// First pause after a failed commit; doubles per consecutive failure.
    pub backoff_min: Duration,
    /// Longest pause between retries while the database is down.
    pub backoff_max: Duration,
    /// A commit attempt taking longer than this is abandoned and retried (the
    /// append is idempotent, so an attempt that did commit is harmless). Covers
    /// a network path that silently drops packets, where the driver would
    /// otherwise wait for TCP to give up (many minutes).
    pub commit_timeout: Duration,
    /// Let the database number the rows ([`Store::append_assigning`]) instead of taking
    /// `row.seq`: for a cluster, where several servers append to one document. `row.seq`
    /// is then the room's own ticket: the watermark is raised in tickets, and the numbers
    /// given are reported through each row's [`AssignedSeqs`].
    pub assign_seqs: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            max_batch_rows: 1000,
            max_batch_bytes: 4 * 1024 * 1024,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            commit_timeout: Duration::from_secs(10),
            assign_seqs: false,
        }
    }
}

/// Where the writer reports the sequence numbers the database gave a room's rows (with
/// [`WriterOptions::assign_seqs`]): `(ticket, seq)` pairs in commit order, pushed before the
/// room's watermark is raised past the ticket, so a room woken by its watermark finds them.
pub type AssignedSeqs = Arc<Mutex<Vec<(i64, i64)>>>;

/// What has been queued but is not yet durable, for metrics, health checks
/// and back-pressure decisions (e.g. refuse new edits when the backlog grows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Rows queued or in the transaction being committed.
    pub rows: u64,
    /// Update bytes in those rows.
    pub bytes: u64,
    /// Time since the oldest of those rows was queued; `None` when empty.
    pub oldest_age: Option<Duration>,
    /// True while the database is failing: the last commit attempt failed.
    pub degraded: bool,
    /// Error of the last failed attempt while degraded; `None` once a commit
    /// succeeds again.
    pub last_error: Option<String>,
}

/// Batches appends from all rooms into few transactions; retries forever with
/// backoff while the database is down; never drops an accepted row (unless
/// [`Writer::shutdown`] runs out of time). Cheap to clone; when the last clone
/// is dropped the task commits what is queued and ends.
#[derive(Clone)]
pub struct Writer {
    handle: Arc<Handle>,
}

/// Owned by all `Writer` clones; dropping the last one lets the task finish.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().accepting = false;
        self.shared.wake.notify_one();
    }
}

/// State shared by the handles and the task.
struct Shared {
    state: Mutex<State>,
    /// Wakes the task: rows queued, or no more rows will come.
    wake: Notify,
    /// Wakes the task out of a retry pause when shutdown gives up.
    abandon: Notify,
    /// Number of rows committed since spawn. Rows commit in queue order, so
    /// "committed >= n" means the first n rows queued are all durable.
    committed: watch::Sender<u64>,
    rows: AtomicU64,
    bytes: AtomicU64,
    degraded: AtomicBool,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct State {
    queue: VecDeque<Pending>,
    /// Rows ever queued (the flush target).
    queued_total: u64,
    /// False after shutdown started or every handle was dropped.
    accepting: bool,
    /// Shutdown timed out: end the task even though rows remain.
    abandoned: bool,
    /// Queue time of the oldest row in the transaction being committed.
    inflight_oldest: Option<Instant>,
    last_error: Option<String>,
}

struct Pending {
    row: NewUpdate,
    /// Set when the row's document had no id when it was queued: the writer finds or
    /// creates the document's row before committing this one.
    doc: Option<DocRef>,
    durable: Arc<watch::Sender<i64>>,
    assigned: Option<AssignedSeqs>,
    queued_at: Instant,
}

/// Rows taken off the queue for one transaction.
struct Batch {
    rows: Vec<NewUpdate>,
    /// For `rows[i]` whose document had no id yet: `(i, its document)`.
    unresolved: Vec<(usize, DocRef)>,
    watermarks: Vec<(Arc<watch::Sender<i64>>, i64)>,
    /// For each row: where to report the number the database gave it.
    assigned: Vec<Option<AssignedSeqs>>,
    /// The numbers given (with [`WriterOptions::assign_seqs`]), in row order.
    given: Vec<i64>,
    bytes: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave State inconsistent in a
        // way that matters more than losing the writer, so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("backlog", &self.backlog())
            .finish()
    }
}

impl Writer {
    /// Spawns the commit task on the current tokio runtime (panics outside one,
    /// like `tokio::spawn`).
    pub fn spawn(store: Store, opts: WriterOptions) -> Writer {
        let (committed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued_total: 0,
                accepting: true,
                abandoned: false,
                inflight_oldest: None,
                last_error: None,
            }),
            wake: Notify::new(),
            abandon: Notify::new(),
            committed,
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
            task: Mutex::new(None),
        });
        let span = tracing::info_span!("store_writer", backend = %store.backend());
        let task = tokio::spawn(run(store, opts, Arc::clone(&shared)).instrument(span));
        *shared.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Writer {
            handle: Arc::new(Handle { shared }),
        }
    }

    /// Queues a row; never blocks. `durable` is the room's watermark: once the
    /// row's transaction commits, the writer raises it to `row.seq` (it never
    /// lowers it), so the room knows which updates it may acknowledge. Rows of
    /// one document commit in the order queued.
    ///
    /// After [`Writer::shutdown`] the row is refused (logged, watermark untouched).
    pub fn append(&self, row: NewUpdate, durable: Arc<watch::Sender<i64>>) {
        self.queue(row, None, durable, None);
    }

    /// Like [`Writer::append`], for a row of document `doc`, which may have no row in the
    /// database yet (`row.doc_id` is ignored). Such a document gets its row right before its
    /// first row commits (one extra statement, once per document): a document is created by
    /// its first logged change, never by loading it. Rows of a deleted document are dropped
    /// like any late write.
    pub fn append_to(&self, doc: &DocRef, row: NewUpdate, durable: Arc<watch::Sender<i64>>) {
        self.append_numbered(doc, row, durable, None);
    }

    /// Like [`Writer::append_to`], and reports the sequence number the database gives the row
    /// into `assigned` (with [`WriterOptions::assign_seqs`]; `row.seq` is then a ticket).
    pub fn append_numbered(
        &self,
        doc: &DocRef,
        mut row: NewUpdate,
        durable: Arc<watch::Sender<i64>>,
        assigned: Option<AssignedSeqs>,
    ) {
        match doc.id() {
            Some(id) => {
                row.doc_id = id;
                self.queue(row, None, durable, assigned);
            }
            None => self.queue(row, Some(doc.clone()), durable, assigned),
        }
    }

    fn queue(
        &self,
        row: NewUpdate,
        doc: Option<DocRef>,
        durable: Arc<watch::Sender<i64>>,
        assigned: Option<AssignedSeqs>,
    ) {
        let shared = &self.handle.shared;
        let len = row.data.len() as u64;
        {
            let mut st = shared.lock();
            if !st.accepting {
                drop(st);
                tracing::error!(
                    doc_id = row.doc_id,
                    seq = row.seq,
                    "store writer is shut down; update not persisted"
                );
                return;
            }
            st.queue.push_back(Pending {
                row,
                doc,
                durable,
                assigned,
                queued_at: Instant::now(),
            });
            st.queued_total += 1;
            shared.rows.fetch_add(1, Ordering::Relaxed);
            shared.bytes.fetch_add(len, Ordering::Relaxed);
        }
        shared.wake.notify_one();
    }

    /// Rows not yet durable and whether the database is currently failing.
    pub fn backlog(&self) -> Backlog {
        let shared = &self.handle.shared;
        let st = shared.lock();
        let oldest = st
            .inflight_oldest
            .or_else(|| st.queue.front().map(|p| p.queued_at));
        Backlog {
            rows: shared.rows.load(Ordering::Relaxed),
            bytes: shared.bytes.load(Ordering::Relaxed),
            oldest_age: oldest.map(|t| t.elapsed()),
            degraded: shared.degraded.load(Ordering::Relaxed),
            last_error: st.last_error.clone(),
        }
    }

    /// Resolves when every row queued before the call is durable. Fails with
    /// [`StoreError::Unavailable`] if that takes longer than `timeout` (the rows
    /// stay queued and keep being retried).
    pub async fn flush(&self, timeout: Duration) -> Result<(), StoreError> {
        let shared = &self.handle.shared;
        let target = shared.lock().queued_total;
        let mut committed = shared.committed.subscribe();
        match tokio::time::timeout(timeout, committed.wait_for(|c| *c >= target)).await {
            Ok(Ok(_)) => Ok(()),
            // The sender lives in `shared`, which we hold: cannot be closed.
            Ok(Err(_)) => Err(StoreError::Unavailable("flush: writer task is gone".into())),
            Err(_) => {
                let backlog = self.backlog();
                Err(StoreError::Unavailable(format!(
                    "flush: {} rows still not durable after {timeout:?}{}",
                    backlog.rows,
                    backlog
                        .last_error
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                )))
            }
        }
    }

    /// Stops accepting rows, waits up to `timeout` for the queue to become
    /// durable, then ends the task. On timeout the remaining rows are given up
    /// (logged) and the error says how many.
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), StoreError> {
        let shared = &self.handle.shared;
        shared.lock().accepting = false;
        shared.wake.notify_one();
        let result = self.flush(timeout).await;
        if result.is_err() {
            shared.lock().abandoned = true;
            shared.abandon.notify_one();
            shared.wake.notify_one();
        }
        let task = shared.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            if result.is_err() {
                // It may be inside a commit attempt that waits on the network.
                task.abort();
            }
            // JoinError = aborted or panicked; either way the task is over.
            let _ = task.await;
        }
        result
    }
}

/// The commit loop: wait for rows, commit everything queued (bounded), repeat.
async fn run(store: Store, opts: WriterOptions, shared: Arc<Shared>) {
    loop {
        let batch = {
            let mut st = shared.lock();
            if st.abandoned {
                break;
            }
            if st.queue.is_empty() {
                if !st.accepting {
                    break;
                }
                None
            } else {
                Some(take_batch(&mut st, &opts))
            }
        };
        match batch {
            Some(batch) => {
                if !commit(&store, &opts, &shared, batch).await {
                    break;
                }
            }
            // A notify_one that raced ahead of this await left a permit: no lost wake-up.
            None => shared.wake.notified().await,
        }
    }
    let left = shared.rows.load(Ordering::Relaxed);
    if left > 0 {
        tracing::error!(rows = left, "store writer stopped with rows not persisted");
    } else {
        tracing::debug!("store writer stopped");
    }
}

/// Moves the oldest queued rows into a batch, within the size limits (always
/// at least one row, however large).
fn take_batch(st: &mut State, opts: &WriterOptions) -> Batch {
    let mut batch = Batch {
        rows: Vec::new(),
        unresolved: Vec::new(),
        watermarks: Vec::new(),
        assigned: Vec::new(),
        given: Vec::new(),
        bytes: 0,
    };
    st.inflight_oldest = st.queue.front().map(|p| p.queued_at);
    while let Some(next) = st.queue.front() {
        let len = next.row.data.len() as u64;
        let full = batch.rows.len() >= opts.max_batch_rows.max(1)
            || (!batch.rows.is_empty() && batch.bytes + len > opts.max_batch_bytes as u64);
        if full {
            break;
        }
        let Some(p) = st.queue.pop_front() else { break };
        batch.bytes += len;
        batch.watermarks.push((p.durable, p.row.seq));
        batch.assigned.push(p.assigned);
        if let Some(doc) = p.doc {
            batch.unresolved.push((batch.rows.len(), doc));
        }
        batch.rows.push(p.row);
    }
    batch
}

/// Commits one batch, retrying with exponential backoff until it succeeds.
/// Returns false if shutdown abandoned it.
async fn commit(store: &Store, opts: &WriterOptions, shared: &Shared, mut batch: Batch) -> bool {
    let mut backoff = opts.backoff_min;
    let mut failures: u32 = 0;
    let first_failure = Instant::now();
    loop {
        let started = Instant::now();
        let attempt = async {
            resolve(store, &mut batch).await?;
            if opts.assign_seqs {
                batch.given = store.append_assigning(&batch.rows).await?;
                Ok(())
            } else {
                store.append(&batch.rows).await
            }
        };
        let outcome = match tokio::time::timeout(opts.commit_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!(
                "append: no answer within {:?}",
                opts.commit_timeout
            ))),
        };
        match outcome {
            Ok(()) => {
                tracing::trace!(
                    rows = batch.rows.len(),
                    bytes = batch.bytes,
                    micros = started.elapsed().as_micros() as u64,
                    "batch committed"
                );
                if failures > 0 {
                    tracing::info!(
                        failed_attempts = failures,
                        outage_ms = first_failure.elapsed().as_millis() as u64,
                        "store writer recovered"
                    );
                }
                publish(shared, &batch);
                return true;
            }
            Err(e) => {
                failures += 1;
                shared.degraded.store(true, Ordering::Relaxed);
                let msg = e.to_string();
                if e.is_retryable() {
                    tracing::warn!(error = %msg, attempt = failures, retry_in_ms = backoff.as_millis() as u64,
                        rows = batch.rows.len(), "store commit failed; will retry");
                } else {
                    // Not expected to heal by itself, but dropping rows is worse:
                    // keep retrying so an operator can fix the cause.
                    tracing::error!(error = %msg, attempt = failures, retry_in_ms = backoff.as_millis() as u64,
                        rows = batch.rows.len(), "store commit failed with a non-transient error; will retry");
                }
                shared.lock().last_error = Some(msg);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shared.abandon.notified() => {}
                }
                if shared.lock().abandoned {
                    return false;
                }
                backoff = (backoff * 2).min(opts.backoff_max.max(opts.backoff_min));
            }
        }
    }
}

/// Gives every row of `batch` whose document had no id when it was queued the id of that
/// document's row, creating the row if needed (once per document: later rows find the id
/// in their [`DocRef`]). Idempotent, so a failed attempt is simply repeated.
async fn resolve(store: &Store, batch: &mut Batch) -> Result<(), StoreError> {
    for (i, doc) in &batch.unresolved {
        let id = match doc.id() {
            Some(id) => id,
            None => {
                let id = store.row_for_log(doc.name()).await?;
                doc.set_id(id);
                id
            }
        };
        if let Some(row) = batch.rows.get_mut(*i) {
            row.doc_id = id;
        }
    }
    Ok(())
}

/// After a successful commit: raise watermarks, shrink the backlog, clear the
/// degraded flag, wake flushers.
fn publish(shared: &Shared, batch: &Batch) {
    // Numbers first: a room woken by its watermark reads them.
    for ((sink, row), seq) in batch.assigned.iter().zip(&batch.rows).zip(&batch.given) {
        if let Some(sink) = sink {
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((row.seq, *seq));
        }
    }
    // The batch committed atomically: raise each room's watermark once, to the
    // highest seq it had in the batch (one wake-up per room, not per row).
    let mut highest: HashMap<*const watch::Sender<i64>, (&watch::Sender<i64>, i64)> =
        HashMap::new();
    for (sender, seq) in &batch.watermarks {
        let entry = highest
            .entry(Arc::as_ptr(sender))
            .or_insert((sender.as_ref(), *seq));
        entry.1 = entry.1.max(*seq);
    }
    for (sender, seq) in highest.into_values() {
        raise(sender, seq);
    }

    let n = batch.rows.len() as u64;
    {
        let mut st = shared.lock();
        st.inflight_oldest = None;
        st.last_error = None;
        shared.rows.fetch_sub(n, Ordering::Relaxed);
        shared.bytes.fetch_sub(batch.bytes, Ordering::Relaxed);
        shared.degraded.store(false, Ordering::Relaxed);
    }
    shared.committed.send_modify(|c| *c += n);
}

fn raise(durable: &watch::Sender<i64>, seq: i64) {
    durable.send_if_modified(|v| {
        if seq > *v {
            *v = seq;
            true
        } else {
            false
        }
    });
}
