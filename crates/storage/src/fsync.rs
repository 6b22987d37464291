//! Making sled's writes durable.
//!
//! sled 0.34's `flush` writes its buffers with `sync_file_range` on Linux,
//! which neither writes file metadata (the file's new size) nor flushes the
//! disk's volatile write cache, and it never syncs the separate files it
//! keeps large values in (`blobs/`). A flushed write therefore survives a
//! process crash but not a power loss or a kernel crash. raftq promises more:
//! an entry reported durable is on disk.
//!
//! [`DiskSync::flush`] therefore runs sled's flush and then `fdatasync`s the
//! database file itself, every blob file written since the last call, and
//! the blob directory when it gained entries. fsync works per file, not per
//! descriptor, so syncing our own descriptor of sled's file covers what
//! sled's descriptor wrote.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::Result;

/// sled's data file and blob directory under one database directory.
#[derive(Debug)]
pub struct DiskSync {
    db: sled::Db,
    data_file: File,
    blobs_dir: PathBuf,
    synced_blobs: Mutex<BTreeSet<OsString>>,
}

impl DiskSync {
    /// Opens the files of the sled database `db` stored at `dir`.
    pub fn new(db: sled::Db, dir: &Path) -> Result<Self> {
        let data_file = File::open(dir.join("db"))?;
        let sync = DiskSync {
            db,
            data_file,
            blobs_dir: dir.join("blobs"),
            synced_blobs: Mutex::default(),
        };
        // Whatever an earlier run left unsynced is synced now.
        sync.sync_files()?;
        Ok(sync)
    }

    /// Flushes sled and makes what it wrote durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        self.sync_files()
    }

    fn sync_files(&self) -> Result<()> {
        let mut synced = self
            .synced_blobs
            .lock()
            .expect("blob set lock is never poisoned");
        let mut present = BTreeSet::new();
        let mut new_entries = false;
        if let Ok(entries) = std::fs::read_dir(&self.blobs_dir) {
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name();
                if !synced.contains(&name) {
                    // A blob sled removed meanwhile needs no sync.
                    if let Ok(file) = File::open(entry.path()) {
                        file.sync_data()?;
                    }
                    new_entries = true;
                }
                present.insert(name);
            }
            if new_entries {
                File::open(&self.blobs_dir)?.sync_all()?;
            }
        }
        *synced = present;
        self.data_file.sync_data()?;
        Ok(())
    }
}
