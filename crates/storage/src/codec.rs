//! The on-disk record format: one version byte, then postcard.
//!
//! Every stored record starts with [`FORMAT_VERSION`], so a later release can
//! tell what an older one wrote and decode it, and an older release refuses a
//! newer record with a clear error instead of misreading it. Raft log entries
//! additionally carry a CRC-32 of their payload ([`encode_checked`]), so a torn
//! or corrupted entry is detected when read and is never applied.
//!
//! postcard is compact (varints, no field names), maintained, and has a stable
//! wire format since 1.0. It is not self-describing: adding a field to a
//! stored type means a new format version and a decode path for the old one.
//!
//! Layouts:
//! - plain record: `[version: u8][postcard bytes]`
//! - checked record: `[version: u8][crc32 of postcard bytes: u32 LE][postcard bytes]`

use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};

/// The record format this release writes, and the newest it reads.
///
/// History: 1, the first cut; 2, cluster-wide message ids, the cluster
/// identity record, released leases, partial queue updates and byte-bounded
/// receives (pre-release: format 1 is refused, not converted).
pub const FORMAT_VERSION: u8 = 2;
/// The oldest record format this release reads.
pub const OLDEST_READABLE_VERSION: u8 = 2;

/// Length of the header of a checked record: version byte and CRC-32.
const CHECKED_HEADER: usize = 5;

/// Encodes `value` as a plain record.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    out.push(FORMAT_VERSION);
    Ok(postcard::to_extend(value, out)?)
}

/// Decodes a plain record. `what` names the record in errors.
pub fn decode<T: DeserializeOwned>(what: &dyn Fn() -> String, bytes: &[u8]) -> Result<T> {
    let (&version, payload) = bytes.split_first().ok_or_else(|| Error::Corrupt {
        what: what(),
        why: "empty record".into(),
    })?;
    check_version(what, version)?;
    postcard::from_bytes(payload).map_err(|err| Error::Corrupt {
        what: what(),
        why: err.to_string(),
    })
}

/// Encodes `value` as a checked record (with a CRC-32 of the payload).
pub fn encode_checked<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&[FORMAT_VERSION, 0, 0, 0, 0]);
    let mut out = postcard::to_extend(value, out)?;
    let crc = crc32fast::hash(&out[CHECKED_HEADER..]);
    out[1..CHECKED_HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decodes a checked record, verifying its checksum first.
pub fn decode_checked<T: DeserializeOwned>(what: &dyn Fn() -> String, bytes: &[u8]) -> Result<T> {
    if bytes.len() < CHECKED_HEADER {
        return Err(Error::Corrupt {
            what: what(),
            why: format!("record of {} bytes is shorter than its header", bytes.len()),
        });
    }
    check_version(what, bytes[0])?;
    let stored = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let payload = &bytes[CHECKED_HEADER..];
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(Error::Corrupt {
            what: what(),
            why: format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"),
        });
    }
    postcard::from_bytes(payload).map_err(|err| Error::Corrupt {
        what: what(),
        why: err.to_string(),
    })
}

fn check_version(what: &dyn Fn() -> String, version: u8) -> Result<()> {
    if (1..OLDEST_READABLE_VERSION).contains(&version) {
        return Err(Error::OldVersion {
            what: what(),
            version,
            oldest: OLDEST_READABLE_VERSION,
        });
    }
    if version == 0 || version > FORMAT_VERSION {
        return Err(Error::UnknownVersion {
            what: what(),
            version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> String {
        "test".into()
    }

    #[test]
    fn checked_round_trip() {
        let bytes = encode_checked(&(7u64, "hello".to_string())).expect("encode");
        let back: (u64, String) = decode_checked(&name, &bytes).expect("decode");
        assert_eq!(back, (7, "hello".to_string()));
    }

    #[test]
    fn a_flipped_bit_is_reported_as_corrupt() {
        let mut bytes = encode_checked(&(7u64, "hello".to_string())).expect("encode");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        let err = decode_checked::<(u64, String)>(&name, &bytes).expect_err("must fail");
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }

    #[test]
    fn a_torn_record_is_reported_as_corrupt() {
        let bytes = encode_checked(&(7u64, "hello".to_string())).expect("encode");
        for len in 0..bytes.len() {
            let err = decode_checked::<(u64, String)>(&name, &bytes[..len]).expect_err("must fail");
            assert!(matches!(err, Error::Corrupt { .. }), "len {len}: {err}");
        }
    }

    #[test]
    fn an_older_unreadable_version_is_refused_with_what_to_do() {
        let mut bytes = encode(&1u32).expect("encode");
        bytes[0] = 1;
        let err = decode::<u32>(&name, &bytes).expect_err("must fail");
        assert!(matches!(err, Error::OldVersion { version: 1, .. }), "{err}");
        assert!(err.to_string().contains("empty data dir"), "{err}");
    }

    #[test]
    fn a_newer_version_is_refused_by_name() {
        let mut bytes = encode(&1u32).expect("encode");
        bytes[0] = FORMAT_VERSION + 1;
        let err = decode::<u32>(&name, &bytes).expect_err("must fail");
        assert!(
            matches!(err, Error::UnknownVersion { version, .. } if version == FORMAT_VERSION + 1)
        );
    }
}
