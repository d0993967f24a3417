//! Whole-store backup and restore: `tandem export --all DIR` and `tandem import DIR`.
//!
//! The format is plain files, readable with `jq` and independent of the backend, so a SQLite
//! store can move to Postgres and back:
//!
//! ```text
//! DIR/manifest.json                 what this is; written last (no manifest: incomplete)
//! DIR/revocations.jsonl             {"kind":"token"|"user","value":..,"revoked_at_us":..}
//! DIR/documents.jsonl               {"dir":"docs/000001","name":..,"created_at_us":..,
//!                                    "deleted_at_us":null|..,"last_seq":..,"last_change_at_us":..}
//! DIR/docs/000001/log.jsonl         {"seq":..,"created_at_us":..,"author":null|..,"data":"<base64>"}
//! DIR/docs/000001/snapshots.jsonl   {"seq":..,"created_at_us":..,"state":"<base64>","state_vector":"<base64>"}
//! DIR/docs/000001/labels.jsonl      {"name":..,"seq":..,"created_at_us":..}
//! ```
//!
//! Times are microseconds since the Unix epoch (Postgres keeps microseconds, SQLite
//! milliseconds). A deleted document (tombstone) has a `documents.jsonl` line and no folder.
//! Binary columns are standard base64 with padding.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use crdt_store::{Label, NewUpdate, RevocationKind, Snapshot, Store, StoreError};
use serde::{Deserialize, Serialize};

/// The `format` field of a manifest.
pub const FORMAT: &str = "tandem-export";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;

const MANIFEST: &str = "manifest.json";
const DOCUMENTS: &str = "documents.jsonl";
const REVOCATIONS: &str = "revocations.jsonl";
const LOG: &str = "log.jsonl";
const SNAPSHOTS: &str = "snapshots.jsonl";
const LABELS: &str = "labels.jsonl";
/// Log rows read from the store, and appended to it, at a time.
const PAGE: u32 = 1000;

/// Why an export or import stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// A line of an export file is not what this format says.
    #[error("{path}:{line}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line number (0: the whole file).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The export directory exists and is not empty.
    #[error("{0}: exists and is not empty; export into a new directory")]
    DirNotEmpty(PathBuf),
    /// The target store holds data and `--force` was not given.
    #[error(
        "the target database is not empty (it holds documents or revocations); import into a \
         fresh database, or pass --force to add to it"
    )]
    StoreNotEmpty,
}

/// What an export or import moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Live documents.
    pub documents: u64,
    /// Tombstones of deleted documents.
    pub deleted_documents: u64,
    /// Log rows (updates), all documents.
    pub log_rows: u64,
    /// Snapshots, all documents.
    pub snapshots: u64,
    /// Labels, all documents.
    pub labels: u64,
    /// Revoked tokens and users.
    pub revocations: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    /// The `tandem --version` that wrote it.
    written_by: String,
    source_backend: String,
    exported_at_us: i64,
    #[serde(flatten)]
    summary: Summary,
}

#[derive(Debug, Serialize, Deserialize)]
struct DocumentLine {
    /// Folder of the document's files, relative to the export directory; absent for a
    /// tombstone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dir: Option<String>,
    name: String,
    created_at_us: i64,
    deleted_at_us: Option<i64>,
    last_seq: i64,
    last_change_at_us: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LogLine {
    seq: i64,
    created_at_us: i64,
    author: Option<String>,
    data: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotLine {
    seq: i64,
    created_at_us: i64,
    state: String,
    state_vector: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct LabelLine {
    name: String,
    seq: i64,
    created_at_us: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct RevocationLine {
    kind: String,
    value: String,
    revoked_at_us: i64,
}

fn micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |us| -us),
    }
}

fn from_micros(us: i64) -> SystemTime {
    let d = Duration::from_micros(us.unsigned_abs());
    let t = if us >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    };
    t.unwrap_or(UNIX_EPOCH)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A JSON-lines file being written.
struct Lines {
    path: PathBuf,
    out: BufWriter<File>,
}

impl Lines {
    fn create(path: PathBuf) -> Result<Lines, BackupError> {
        let file = File::create(&path).map_err(io(&path))?;
        Ok(Lines {
            out: BufWriter::new(file),
            path,
        })
    }

    fn put(&mut self, value: &impl Serialize) -> Result<(), BackupError> {
        serde_json::to_writer(&mut self.out, value)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(io(&self.path))
    }

    /// Flushes and fsyncs: a backup that is reported written must be on disk.
    fn finish(self) -> Result<(), BackupError> {
        let path = self.path;
        let file = self
            .out
            .into_inner()
            .map_err(|e| io(&path)(e.into_error()))?;
        file.sync_all().map_err(io(&path))
    }
}

/// Writes the whole store to `dir` (created; it must not exist or be empty).
pub async fn export_all(store: &Store, dir: &Path) -> Result<Summary, BackupError> {
    if dir.exists() {
        let mut entries = fs::read_dir(dir).map_err(io(dir))?;
        if entries.next().is_some() {
            return Err(BackupError::DirNotEmpty(dir.to_path_buf()));
        }
    }
    fs::create_dir_all(dir.join("docs")).map_err(io(dir))?;
    let mut summary = Summary::default();

    let mut revocations = Lines::create(dir.join(REVOCATIONS))?;
    for r in store.revocations().await? {
        revocations.put(&RevocationLine {
            kind: r.kind.as_str().to_string(),
            value: r.value,
            revoked_at_us: micros(r.revoked_at),
        })?;
        summary.revocations += 1;
    }
    revocations.finish()?;

    let mut documents = Lines::create(dir.join(DOCUMENTS))?;
    let mut after: Option<String> = None;
    let mut n = 0u64;
    loop {
        let page = store.list_documents(None, after.as_deref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.name.clone());
        for doc in page {
            n += 1;
            let rel = format!("docs/{n:06}");
            export_document(store, doc.doc_id, &dir.join(&rel), &mut summary).await?;
            documents.put(&DocumentLine {
                dir: Some(rel),
                name: doc.name,
                created_at_us: micros(doc.created_at),
                deleted_at_us: None,
                last_seq: doc.last_seq,
                last_change_at_us: doc.last_change_at.map(micros),
            })?;
            summary.documents += 1;
        }
    }
    for name in store.deleted_documents().await? {
        let Some(doc) = store.document(&name).await? else {
            continue;
        };
        documents.put(&DocumentLine {
            dir: None,
            name: doc.name,
            created_at_us: micros(doc.created_at),
            deleted_at_us: Some(micros(doc.deleted_at.unwrap_or_else(SystemTime::now))),
            last_seq: doc.last_seq,
            last_change_at_us: doc.last_change_at.map(micros),
        })?;
        summary.deleted_documents += 1;
    }
    documents.finish()?;

    let manifest = Manifest {
        format: FORMAT.to_string(),
        version: VERSION,
        written_by: crate::config::VERSION.to_string(),
        source_backend: store.backend().to_string(),
        exported_at_us: micros(SystemTime::now()),
        summary: summary.clone(),
    };
    let path = dir.join(MANIFEST);
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| io(&path)(e.into()))?;
    fs::write(&path, text).map_err(io(&path))?;
    Ok(summary)
}

async fn export_document(
    store: &Store,
    doc_id: i64,
    dir: &Path,
    summary: &mut Summary,
) -> Result<(), BackupError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let mut log = Lines::create(dir.join(LOG))?;
    let mut after = 0;
    loop {
        let rows = store.log_page(doc_id, after, PAGE, true).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for row in rows {
            log.put(&LogLine {
                seq: row.seq,
                created_at_us: micros(row.created_at),
                author: row.author,
                data: B64.encode(&row.data),
            })?;
            summary.log_rows += 1;
        }
    }
    log.finish()?;
    let mut snapshots = Lines::create(dir.join(SNAPSHOTS))?;
    for s in store.snapshots(doc_id).await? {
        snapshots.put(&SnapshotLine {
            seq: s.seq,
            created_at_us: micros(s.created_at),
            state: B64.encode(&s.state),
            state_vector: B64.encode(&s.state_vector),
        })?;
        summary.snapshots += 1;
    }
    snapshots.finish()?;
    let mut labels = Lines::create(dir.join(LABELS))?;
    for l in store.labels(doc_id).await? {
        labels.put(&LabelLine {
            name: l.name,
            seq: l.seq,
            created_at_us: micros(l.created_at),
        })?;
        summary.labels += 1;
    }
    labels.finish()
}

/// Reads a JSON-lines file line by line, decoding each into `T`.
fn read_lines<T: for<'de> Deserialize<'de>>(
    path: &Path,
) -> Result<impl Iterator<Item = Result<T, BackupError>>, BackupError> {
    let file = File::open(path).map_err(io(path))?;
    let path = path.to_path_buf();
    Ok(BufReader::new(file)
        .lines()
        .enumerate()
        .filter(|(_, line)| line.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(move |(i, line)| {
            let line = line.map_err(io(&path))?;
            serde_json::from_str(&line).map_err(|e| BackupError::Format {
                path: path.clone(),
                line: i + 1,
                message: e.to_string(),
            })
        }))
}

fn bad(path: &Path, line: usize, message: impl Into<String>) -> BackupError {
    BackupError::Format {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

fn unbase64(path: &Path, line: usize, field: &str, s: &str) -> Result<Vec<u8>, BackupError> {
    B64.decode(s)
        .map_err(|e| bad(path, line, format!("{field}: invalid base64: {e}")))
}

/// Loads the export in `dir` into `store` (already migrated). Refuses a store holding any
/// document or revocation unless `force`.
pub async fn import(store: &Store, dir: &Path, force: bool) -> Result<Summary, BackupError> {
    let path = dir.join(MANIFEST);
    let text = fs::read(&path).map_err(io(&path))?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
        bad(
            &path,
            0,
            format!("not a manifest written by tandem export: {e}"),
        )
    })?;
    if manifest.format != FORMAT || manifest.version != VERSION {
        return Err(bad(
            &path,
            0,
            format!(
                "format {:?} version {} is not {FORMAT:?} version {VERSION}",
                manifest.format, manifest.version
            ),
        ));
    }
    if !force && !store.is_empty().await? {
        return Err(BackupError::StoreNotEmpty);
    }
    let mut summary = Summary::default();

    let path = dir.join(REVOCATIONS);
    for (i, line) in read_lines::<RevocationLine>(&path)?.enumerate() {
        let r = line?;
        let kind = RevocationKind::parse(&r.kind)
            .ok_or_else(|| bad(&path, i + 1, format!("unknown kind {:?}", r.kind)))?;
        store
            .put_revocation(kind, &r.value, from_micros(r.revoked_at_us))
            .await?;
        summary.revocations += 1;
    }

    let path = dir.join(DOCUMENTS);
    for (i, line) in read_lines::<DocumentLine>(&path)?.enumerate() {
        let doc = line?;
        let deleted_at = doc.deleted_at_us.map(from_micros);
        let doc_id = store
            .import_document(&doc.name, from_micros(doc.created_at_us), deleted_at)
            .await?;
        match (&doc.dir, deleted_at) {
            (_, Some(_)) => summary.deleted_documents += 1,
            (Some(rel), None) => {
                if rel.split('/').any(|part| part == ".." || part.is_empty()) {
                    return Err(bad(&path, i + 1, format!("dir {rel:?} leaves the export")));
                }
                import_document(store, doc_id, &dir.join(rel), &mut summary).await?;
                summary.documents += 1;
            }
            (None, None) => {
                return Err(bad(&path, i + 1, "a live document needs a dir"));
            }
        }
        store
            .finish_import(doc_id, doc.last_seq, doc.last_change_at_us.map(from_micros))
            .await?;
    }
    if summary != manifest.summary {
        tracing::warn!(
            expected = ?manifest.summary,
            imported = ?summary,
            "the import does not match the counts in the manifest"
        );
    }
    Ok(summary)
}

async fn import_document(
    store: &Store,
    doc_id: i64,
    dir: &Path,
    summary: &mut Summary,
) -> Result<(), BackupError> {
    let path = dir.join(LOG);
    let mut batch = Vec::with_capacity(PAGE as usize);
    let mut last_seq = 0;
    for (i, line) in read_lines::<LogLine>(&path)?.enumerate() {
        let row = line?;
        if row.seq <= last_seq {
            return Err(bad(&path, i + 1, "seq must increase from line to line"));
        }
        last_seq = row.seq;
        batch.push(NewUpdate {
            doc_id,
            seq: row.seq,
            data: unbase64(&path, i + 1, "data", &row.data)?.into(),
            author: row.author,
            created_at: from_micros(row.created_at_us),
        });
        if batch.len() == PAGE as usize {
            store.append(&batch).await?;
            summary.log_rows += batch.len() as u64;
            batch.clear();
        }
    }
    store.append(&batch).await?;
    summary.log_rows += batch.len() as u64;

    let path = dir.join(SNAPSHOTS);
    for (i, line) in read_lines::<SnapshotLine>(&path)?.enumerate() {
        let s = line?;
        let snapshot = Snapshot {
            seq: s.seq,
            state: unbase64(&path, i + 1, "state", &s.state)?,
            state_vector: unbase64(&path, i + 1, "state_vector", &s.state_vector)?,
            created_at: from_micros(s.created_at_us),
        };
        store.import_snapshot(doc_id, &snapshot).await?;
        summary.snapshots += 1;
    }

    let path = dir.join(LABELS);
    for line in read_lines::<LabelLine>(&path)? {
        let l = line?;
        let label = Label {
            name: l.name,
            seq: l.seq,
            created_at: from_micros(l.created_at_us),
        };
        store.import_label(doc_id, &label).await?;
        summary.labels += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_round_trip() {
        for us in [0, 1, 1_700_000_000_123_456, -5] {
            assert_eq!(micros(from_micros(us)), us);
        }
    }
}
