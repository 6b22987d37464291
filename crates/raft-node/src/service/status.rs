//! The one place where errors become gRPC statuses.
//!
//! Codes are chosen for what a client should do next: `INVALID_ARGUMENT`,
//! `NOT_FOUND`, `ALREADY_EXISTS` and `FAILED_PRECONDITION` mean "change the
//! request"; `RESOURCE_EXHAUSTED` "slow down or make room"; `UNAVAILABLE` and
//! `DEADLINE_EXCEEDED` "retry" — with the leader's id and address in the
//! metadata when known.

use raftq_proto::{LEADER_ADDR_HEADER, LEADER_ID_HEADER};
use raftq_storage::Refusal;
use tonic::{Code, Status};

use crate::error::Error;

/// The status code of a refusal.
pub fn refusal_code(refusal: &Refusal) -> Code {
    match refusal {
        Refusal::InvalidArgument(_) => Code::InvalidArgument,
        Refusal::QueueNotFound(_) => Code::NotFound,
        Refusal::QueueExists(_) => Code::AlreadyExists,
        Refusal::QueueFull { .. } => Code::ResourceExhausted,
        Refusal::ReceiptStale(_)
        | Refusal::ReceiptUnknown(_)
        | Refusal::DeadLetterQueueInUse { .. } => Code::FailedPrecondition,
    }
}

/// Turns a node error into a status a client can act on.
pub fn to_status(err: Error) -> Status {
    let code = match &err {
        Error::Refused(refusal) => refusal_code(refusal),
        Error::InvalidArgument(_) | Error::Config(_) => Code::InvalidArgument,
        Error::NotLeader { .. } | Error::Unavailable(_) => Code::Unavailable,
        Error::TooLarge(_) | Error::DiskAlarm(_) | Error::MemoryAlarm(_) => Code::ResourceExhausted,
        Error::Timeout(_) => Code::DeadlineExceeded,
        Error::NotMember(_) => Code::NotFound,
        Error::PermissionDenied(_) => Code::PermissionDenied,
        Error::Storage(_) | Error::Io(_) | Error::Internal(_) => Code::Internal,
    };
    let mut status = Status::new(code, err.to_string());
    if let Error::NotLeader {
        leader_id,
        leader_addr,
    } = &err
    {
        add_leader(status.metadata_mut(), *leader_id, leader_addr.as_deref());
    }
    status
}

/// Puts the leader hint into response or status metadata.
pub fn add_leader(
    metadata: &mut tonic::metadata::MetadataMap,
    id: Option<u64>,
    addr: Option<&str>,
) {
    if let Some(id) = id {
        if let Ok(value) = id.to_string().parse() {
            metadata.insert(LEADER_ID_HEADER, value);
        }
    }
    if let Some(addr) = addr {
        if let Ok(value) = addr.parse() {
            metadata.insert(LEADER_ADDR_HEADER, value);
        }
    }
}
