//! Durable storage for Tandem documents (update log + snapshots). Filled in by the storage work.
