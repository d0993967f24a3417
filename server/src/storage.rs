//! The server's view of storage: the durable store plus its group-commit writer, or nothing
//! (`--database-url memory`, for benchmarks and tests that measure the server alone).

use std::time::Duration;

use crdt_store::{Backlog, Store, StoreError, StoreOptions, Writer, WriterOptions};
use tracing::info;

use crate::config::Config;

/// Where documents live.
#[derive(Debug, Clone)]
pub enum Storage {
    /// Nothing is persisted; every document starts empty.
    Memory,
    /// Postgres or SQLite through `crdt-store`.
    Durable {
        /// Reads (loads, history) and snapshot writes.
        store: Store,
        /// Group commit of the update log.
        writer: Writer,
    },
}

impl Storage {
    /// Opens (and migrates) the database named by the configuration.
    pub async fn open(config: &Config) -> Result<Storage, StoreError> {
        let url = config.effective_database_url();
        if url == "memory" {
            info!("storage: memory (nothing is persisted)");
            return Ok(Storage::Memory);
        }
        let store = open_store(&url, config).await?;
        store.migrate().await?;
        store.warm_up().await?;
        // Clustered: several nodes append to one document, so the database numbers the rows.
        let writer = Writer::spawn(
            store.clone(),
            WriterOptions {
                assign_seqs: config.redis_url.is_some(),
                ..WriterOptions::default()
            },
        );
        info!(backend = %store.backend(), "storage ready");
        Ok(Storage::Durable { store, writer })
    }

    /// The durable store, if any.
    pub fn store(&self) -> Option<&Store> {
        match self {
            Storage::Memory => None,
            Storage::Durable { store, .. } => Some(store),
        }
    }

    /// What is accepted but not durable yet (empty for memory storage).
    pub fn backlog(&self) -> Backlog {
        match self {
            Storage::Memory => Backlog::default(),
            Storage::Durable { writer, .. } => writer.backlog(),
        }
    }

    /// Name of the backend for logs and health output.
    pub fn backend(&self) -> String {
        match self {
            Storage::Memory => "memory".into(),
            Storage::Durable { store, .. } => store.backend().to_string(),
        }
    }

    /// Makes everything queued durable and stops the writer, within `timeout`.
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), StoreError> {
        match self {
            Storage::Memory => Ok(()),
            Storage::Durable { writer, .. } => writer.shutdown(timeout).await,
        }
    }
}

/// Opens the store without migrating (also used by `tandem migrate`).
pub async fn open_store(url: &str, config: &Config) -> Result<Store, StoreError> {
    let opts = StoreOptions {
        max_connections: config.db_max_connections,
        ..StoreOptions::default()
    };
    Store::open(url, &opts).await
}
