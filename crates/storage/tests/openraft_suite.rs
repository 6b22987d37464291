//! openraft's own storage conformance suite, run against the sled log store
//! and the queue state machine on real temp directories.

use openraft::testing::{StoreBuilder, Suite};
use raftq_storage::types::StorageError;
use raftq_storage::{LogStore, StateMachine, TypeConfig};
use tempfile::TempDir;

struct SledStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for SledStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(&dir.path().join("log")).expect("open log store");
        let sm = StateMachine::open(&dir.path().join("sm")).expect("open state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_store_passes_the_openraft_storage_suite() {
    Suite::test_all(SledStoreBuilder).expect("every suite test passes");
}
