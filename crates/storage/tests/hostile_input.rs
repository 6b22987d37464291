//! Hostile bytes on the storage layer's decoding paths never panic: a Raft
//! entry or a snapshot record read from disk or off the network, and a
//! snapshot file, whatever they hold. Arbitrary bytes almost never pass the
//! CRC, so the records are also built with a valid version byte and CRC
//! around arbitrary payloads, which reach the decoder itself. Allocation
//! stays bounded: postcard sizes collections from the bytes it has, and a
//! snapshot frame longer than `MAX_FRAME_BYTES` is refused before its buffer
//! is sized.

use std::io::Write;

use proptest::prelude::*;
use raftq_storage::codec::{self, FORMAT_VERSION};
use raftq_storage::snapshot::{self, SnapshotRecord, MAX_FRAME_BYTES};
use raftq_storage::types::Entry;

/// `payload` as a checked record: version byte, CRC-32, payload.
fn checked(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn what() -> String {
    "hostile input".into()
}

/// A snapshot file of `frames`, each a checked record with its length.
fn snapshot_file(frames: &[Vec<u8>]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    for frame in frames {
        let record = checked(frame);
        file.write_all(&(record.len() as u32).to_le_bytes())
            .expect("write");
        file.write_all(&record).expect("write");
    }
    file.flush().expect("flush");
    file
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_as_a_log_entry_or_a_snapshot_record_are_refused_not_panicked(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048)
    ) {
        let _ = codec::decode_checked::<Entry>(&what, &bytes);
        let _ = codec::decode_checked::<SnapshotRecord>(&what, &bytes);
    }

    #[test]
    fn arbitrary_payloads_with_a_valid_checksum_are_refused_not_panicked(
        payload in proptest::collection::vec(any::<u8>(), 0..2048)
    ) {
        let _ = codec::decode_checked::<Entry>(&what, &checked(&payload));
        let _ = codec::decode_checked::<SnapshotRecord>(&what, &checked(&payload));
    }

    #[test]
    fn a_snapshot_file_of_arbitrary_checked_frames_is_refused_not_panicked(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..256), 0..8)
    ) {
        let file = snapshot_file(&frames);
        let _ = snapshot::read(file.path(), |_| Ok(()));
    }
}

#[test]
fn a_snapshot_frame_past_the_limit_is_refused_before_it_is_read() {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(&u32::MAX.to_le_bytes()).expect("write");
    file.flush().expect("flush");
    let err = snapshot::read(file.path(), |_| Ok(())).expect_err("refused");
    assert!(
        err.to_string()
            .contains(&format!("frame of {} bytes", u32::MAX)),
        "{err}"
    );
    const { assert!(u32::MAX > MAX_FRAME_BYTES) };
}

#[test]
fn postcard_lengths_larger_than_the_input_do_not_allocate_them() {
    // A varint length of 2^62 elements followed by nothing: decoding must
    // fail on the missing bytes, not reserve 2^62 entries first.
    let mut payload = vec![0u8; 8];
    payload.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f]);
    for prefix in 0..payload.len() {
        let _ = codec::decode_checked::<Entry>(&what, &checked(&payload[prefix..]));
        let _ = codec::decode_checked::<SnapshotRecord>(&what, &checked(&payload[prefix..]));
    }
}
