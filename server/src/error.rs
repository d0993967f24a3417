//! Errors of the server layer.

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding or serving the listener failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The database could not be opened or migrated.
    #[error("storage: {0}")]
    Storage(#[from] crdt_store::StoreError),
}
