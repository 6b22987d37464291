//! Snapshot files: the whole queue state as a stream of records.
//!
//! A snapshot is written record by record through a buffered writer and read
//! back the same way, so neither side holds the state in one buffer; openraft
//! sends the file to followers in chunks of its `snapshot_max_chunk_size`.
//!
//! Format: a sequence of frames `[len: u32 LE][checked record]` (see
//! [`crate::codec`]): one [`SnapshotRecord::Header`], then each queue followed
//! by its messages and dedup entries, then [`SnapshotRecord::End`] with the
//! number of records before it. A file without its end frame is incomplete
//! and refused.
//!
//! Consistency: the state lives in memory, and `get_snapshot_builder`
//! (which openraft calls between applies, with the state machine to itself)
//! clones it there: that clone is the point-in-time view, written while
//! applies go on. Message bodies are reference-counted `Bytes`, so the clone
//! copies metadata, not payloads.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::queue::{DedupEntry, Globals, Message, QueueMeta, QueueName, Queues, StateView};
use crate::types::{LogId, SnapshotMeta, StoredMembership};

/// Largest frame a snapshot reader accepts: a message of the largest allowed
/// size plus its metadata. A longer length prefix means a corrupt file.
pub const MAX_FRAME_BYTES: u32 = 8 * 1024 * 1024;

/// One record of a snapshot file (owned form, for reading).
#[derive(Debug, Deserialize)]
pub enum SnapshotRecord {
    /// First record: what the snapshot covers.
    Header {
        /// openraft's snapshot metadata.
        meta: SnapshotMeta,
        /// The clock, id counter and cluster record.
        globals: Globals,
    },
    /// A queue; its messages and dedup entries follow.
    Queue(QueueMeta),
    /// A message of the last queue.
    Message(Message),
    /// A dedup entry of the last queue.
    Dedup {
        /// The dedup id.
        dedup_id: String,
        /// What it maps to.
        entry: DedupEntry,
    },
    /// Last record.
    End {
        /// Records before this one, header included.
        records: u64,
    },
}

/// The borrowed twin of [`SnapshotRecord`] for writing; same variants in the
/// same order, so the encodings agree.
#[derive(Serialize)]
enum SnapshotRecordRef<'a> {
    Header {
        meta: &'a SnapshotMeta,
        globals: &'a Globals,
    },
    Queue(&'a QueueMeta),
    Message(&'a Message),
    Dedup {
        dedup_id: &'a str,
        entry: &'a DedupEntry,
    },
    End {
        records: u64,
    },
}

/// A state loaded from a snapshot or the state machine's tree.
#[derive(Debug, Default)]
pub struct LoadedState {
    /// The queues.
    pub queues: Queues,
    /// The last log id applied to it.
    pub last_applied: Option<LogId>,
    /// The membership it holds.
    pub membership: StoredMembership,
}

/// Writes `view` as a snapshot file at `path` and fsyncs it. Returns the
/// number of records written.
pub fn write(path: &Path, meta: &SnapshotMeta, view: &StateView) -> Result<u64> {
    let file = File::create(path)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut records = 0u64;
    let mut frame = |out: &mut BufWriter<File>, record: &SnapshotRecordRef<'_>| -> Result<()> {
        let bytes = codec::encode_checked(record)?;
        out.write_all(&(bytes.len() as u32).to_le_bytes())?;
        out.write_all(&bytes)?;
        records += 1;
        Ok(())
    };
    frame(
        &mut out,
        &SnapshotRecordRef::Header {
            meta,
            globals: &view.globals,
        },
    )?;
    for queue in &view.queues {
        frame(&mut out, &SnapshotRecordRef::Queue(&queue.meta))?;
        for message in queue.messages.values() {
            frame(&mut out, &SnapshotRecordRef::Message(message))?;
        }
        let mut dedup: Vec<_> = queue.dedup.iter().collect();
        dedup.sort_by(|a, b| a.0.cmp(b.0));
        for (dedup_id, entry) in dedup {
            frame(&mut out, &SnapshotRecordRef::Dedup { dedup_id, entry })?;
        }
    }
    let bytes = codec::encode_checked(&SnapshotRecordRef::End { records })?;
    out.write_all(&(bytes.len() as u32).to_le_bytes())?;
    out.write_all(&bytes)?;
    let file = out
        .into_inner()
        .map_err(|err| Error::Io(err.into_error()))?;
    file.sync_all()?;
    Ok(records + 1)
}

/// Reads a snapshot file record by record, handing each to `visit`, and checks
/// it is complete. Returns the header's metadata.
pub fn read(
    path: &Path,
    mut visit: impl FnMut(SnapshotRecord) -> Result<()>,
) -> Result<SnapshotMeta> {
    let mut input = BufReader::with_capacity(1 << 20, File::open(path)?);
    let what = |n: u64| move || format!("snapshot {} record {n}", path.display());
    let mut records = 0u64;
    let mut meta = None;
    let mut buffer = Vec::new();
    loop {
        let mut len = [0u8; 4];
        input
            .read_exact(&mut len)
            .map_err(|err| truncated(path, records, err))?;
        let len = u32::from_le_bytes(len);
        if len > MAX_FRAME_BYTES {
            return Err(Error::Corrupt {
                what: what(records)(),
                why: format!("frame of {len} bytes"),
            });
        }
        buffer.resize(len as usize, 0);
        input
            .read_exact(&mut buffer)
            .map_err(|err| truncated(path, records, err))?;
        let record: SnapshotRecord = codec::decode_checked(&what(records), &buffer)?;
        match record {
            SnapshotRecord::End { records: expected } => {
                if expected != records {
                    return Err(Error::Corrupt {
                        what: what(records)(),
                        why: format!("end says {expected} records, read {records}"),
                    });
                }
                return meta.ok_or_else(|| Error::Corrupt {
                    what: path.display().to_string(),
                    why: "no header".into(),
                });
            }
            SnapshotRecord::Header {
                meta: header,
                globals,
            } if records == 0 => {
                meta = Some(header.clone());
                visit(SnapshotRecord::Header {
                    meta: header,
                    globals,
                })?;
            }
            SnapshotRecord::Header { .. } => {
                return Err(Error::Corrupt {
                    what: what(records)(),
                    why: "a second header".into(),
                })
            }
            _ if records == 0 => {
                return Err(Error::Corrupt {
                    what: what(records)(),
                    why: "does not start with a header".into(),
                })
            }
            other => visit(other)?,
        }
        records += 1;
    }
}

/// Reads a whole snapshot file into a state (at start, and to install one).
pub fn load(path: &Path) -> Result<LoadedState> {
    let mut loader = Loader::new();
    read(path, |record| loader.record(record))?;
    Ok(loader.finish())
}

/// Reads only the header of a snapshot file.
pub fn read_meta(path: &Path) -> Result<SnapshotMeta> {
    let mut input = BufReader::new(File::open(path)?);
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len).min(MAX_FRAME_BYTES);
    let mut buffer = vec![0; len as usize];
    input.read_exact(&mut buffer)?;
    let what = || format!("snapshot {} header", path.display());
    match codec::decode_checked(&what, &buffer)? {
        SnapshotRecord::Header { meta, .. } => Ok(meta),
        _ => Err(Error::Corrupt {
            what: what(),
            why: "first record is not a header".into(),
        }),
    }
}

fn truncated(path: &Path, records: u64, err: std::io::Error) -> Error {
    if err.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::Corrupt {
            what: format!("snapshot {}", path.display()),
            why: format!("ends after {records} records, without its end record"),
        }
    } else {
        Error::Io(err)
    }
}

/// Builds up a [`LoadedState`] from records, in file (or key) order.
#[derive(Debug, Default)]
pub struct Loader {
    state: LoadedState,
    current: Option<QueueName>,
}

impl Loader {
    /// Starts an empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets what the state covers; call before the queues.
    pub fn applied(
        &mut self,
        last_applied: Option<LogId>,
        membership: StoredMembership,
        globals: Globals,
    ) {
        self.state.last_applied = last_applied;
        self.state.membership = membership;
        self.state.queues.load_globals(globals);
    }

    /// Adds a queue; messages and dedup entries that follow belong to it.
    pub fn queue(&mut self, meta: QueueMeta) {
        self.current = Some(meta.name.clone());
        self.state.queues.load_queue(meta);
    }

    /// Adds a message to `queue`.
    pub fn message(&mut self, queue: &QueueName, message: Message) -> Result<()> {
        self.state
            .queues
            .load_message(queue, message)
            .map_err(|why| Error::Corrupt {
                what: format!("message of queue {queue}"),
                why,
            })
    }

    /// Adds a dedup entry to `queue`.
    pub fn dedup(&mut self, queue: &QueueName, dedup_id: String, entry: DedupEntry) -> Result<()> {
        self.state
            .queues
            .load_dedup(queue, dedup_id, entry)
            .map_err(|why| Error::Corrupt {
                what: format!("dedup entry of queue {queue}"),
                why,
            })
    }

    /// Adds a snapshot record.
    pub fn record(&mut self, record: SnapshotRecord) -> Result<()> {
        let no_queue = || Error::Corrupt {
            what: "snapshot".into(),
            why: "a message or dedup entry before any queue".into(),
        };
        match record {
            SnapshotRecord::Header { meta, globals } => {
                self.applied(meta.last_log_id, meta.last_membership, globals);
                Ok(())
            }
            SnapshotRecord::Queue(meta) => {
                self.queue(meta);
                Ok(())
            }
            SnapshotRecord::Message(message) => {
                let queue = self.current.clone().ok_or_else(no_queue)?;
                self.message(&queue, message)
            }
            SnapshotRecord::Dedup { dedup_id, entry } => {
                let queue = self.current.clone().ok_or_else(no_queue)?;
                self.dedup(&queue, dedup_id, entry)
            }
            SnapshotRecord::End { .. } => Ok(()),
        }
    }

    /// The state built.
    pub fn finish(self) -> LoadedState {
        self.state
    }
}
