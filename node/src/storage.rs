//! Opens the configured store (`[storage]`) under the data directory.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use starling_core::{
    storage::{FsyncPolicy, RedbStore, SledStore, StorageWriterConfig, Store},
    StorageConfig,
};

use crate::config::{StorageEngine, StorageSettings};

/// File name of the redb store inside the data directory.
pub const REDB_FILE: &str = "starling.redb";
/// Directory name of the sled store inside the data directory.
pub const SLED_DIR: &str = "sled";

/// Opens the store the settings ask for; `None` for the memory engine.
///
/// # Errors
/// Returns an error naming the file when the data directory cannot be created or the store
/// cannot be opened (it is never wiped or repaired: the message says what to do).
pub fn open_store(
    settings: &StorageSettings,
    data_dir: &Path,
) -> anyhow::Result<Option<StorageConfig>> {
    let store: Arc<dyn Store> = match settings.engine {
        StorageEngine::Memory => return Ok(None),
        StorageEngine::Redb => {
            create_data_dir(data_dir)?;
            Arc::new(RedbStore::open(&data_dir.join(REDB_FILE))?)
        }
        StorageEngine::Sled => {
            create_data_dir(data_dir)?;
            Arc::new(SledStore::open(&data_dir.join(SLED_DIR))?)
        }
    };
    let fsync = if settings.fsync_always {
        FsyncPolicy::Always
    } else {
        FsyncPolicy::Never
    };
    Ok(Some(StorageConfig {
        store,
        writer: StorageWriterConfig {
            max_batch_delay: settings.max_commit_delay,
            max_group_batches: 16_384,
            fsync,
            background_flush_interval: std::time::Duration::from_millis(500),
        },
    }))
}

fn create_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir).with_context(|| {
        format!(
            "cannot create the data directory {} (data_dir / STARLING_DATA_DIR)",
            data_dir.display()
        )
    })
}
