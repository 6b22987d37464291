//! Hostile bytes on every port: decoding arbitrary bytes as any public
//! request, as the Raft envelope, or as the Raft payloads a peer sends
//! (vote, append entries, snapshot chunk) never panics, and a length field
//! that claims more than the bytes at hand is refused before anything is
//! sized from it. Then the same bytes over the wire: a running node answers
//! each hostile Raft message with an error status and goes on serving.
//! (The storage decoders' own property tests are in
//! `crates/storage/tests/hostile_input.rs`.)

use std::time::Duration;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use proptest::prelude::*;
use prost::Message as _;
use raftq_client::Message;
use raftq_proto::internal::raft_service_client::RaftServiceClient;
use raftq_proto::internal::RaftMessage;
use raftq_proto::v1 as pb;
use raftq_storage::{codec, TypeConfig};
use raftq_tests::cluster::{Settings, TestCluster};

fn what() -> String {
    "hostile peer".into()
}

/// Decodes `bytes` as every request the public services take.
fn decode_every_request(bytes: &[u8]) {
    let _ = pb::CreateQueueRequest::decode(bytes);
    let _ = pb::UpdateQueueRequest::decode(bytes);
    let _ = pb::DeleteQueueRequest::decode(bytes);
    let _ = pb::ListQueuesRequest::decode(bytes);
    let _ = pb::GetQueueRequest::decode(bytes);
    let _ = pb::EnqueueRequest::decode(bytes);
    let _ = pb::ReceiveRequest::decode(bytes);
    let _ = pb::ConsumeRequest::decode(bytes);
    let _ = pb::AckRequest::decode(bytes);
    let _ = pb::NackRequest::decode(bytes);
    let _ = pb::ExtendRequest::decode(bytes);
    let _ = pb::ReleaseRequest::decode(bytes);
    let _ = pb::PurgeRequest::decode(bytes);
    let _ = pb::RedriveRequest::decode(bytes);
    let _ = pb::StatusRequest::decode(bytes);
    let _ = pb::AddNodeRequest::decode(bytes);
    let _ = pb::RemoveNodeRequest::decode(bytes);
    let _ = RaftMessage::decode(bytes);
}

/// Decodes `bytes` as each Raft payload a peer sends.
fn decode_every_raft_payload(bytes: &[u8]) {
    let _ = codec::decode::<VoteRequest<u64>>(&what, bytes);
    let _ = codec::decode::<AppendEntriesRequest<TypeConfig>>(&what, bytes);
    let _ = codec::decode::<InstallSnapshotRequest<TypeConfig>>(&what, bytes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_as_any_request_or_raft_payload_are_refused_not_panicked(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096)
    ) {
        decode_every_request(&bytes);
        decode_every_raft_payload(&bytes);
    }

    /// Valid requests with their bytes flipped and cut reach deeper into
    /// the decoders than random bytes do.
    #[test]
    fn damaged_valid_requests_are_refused_not_panicked(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let request = pb::EnqueueRequest {
            queue: "jobs".into(),
            messages: vec![pb::NewMessage { body: body.clone().into(), ..Default::default() }; 3],
        };
        let mut bytes = request.encode_to_vec();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= value;
        }
        let end = cut.index(bytes.len() + 1);
        decode_every_request(&bytes[..end]);
        let vote = codec::encode(&VoteRequest::<u64>::new(openraft::Vote::new(3, 1), None))
            .expect("encode");
        let mut damaged = vote.clone();
        if !damaged.is_empty() {
            let i = cut.index(damaged.len());
            damaged[i] ^= 0xA5;
        }
        decode_every_raft_payload(&damaged);
        decode_every_raft_payload(&vote[..cut.index(vote.len() + 1)]);
    }
}

#[test]
fn a_length_that_claims_more_than_the_bytes_at_hand_is_refused_before_sizing() {
    // Field 1 (queue name), length-delimited, claiming 2^31 bytes with 3 at
    // hand; and a postcard sequence claiming 2^62 entries.
    let mut huge_field = vec![0x0a];
    let mut len: u64 = 1 << 31;
    while len >= 0x80 {
        huge_field.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    huge_field.push(len as u8);
    huge_field.extend_from_slice(b"abc");
    assert!(pb::EnqueueRequest::decode(huge_field.as_slice()).is_err());
    assert!(RaftMessage::decode(huge_field.as_slice()).is_err());
    let mut huge_seq =
        codec::encode(&VoteRequest::<u64>::new(openraft::Vote::new(3, 1), None)).expect("encode");
    huge_seq.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f]);
    assert!(codec::decode::<AppendEntriesRequest<TypeConfig>>(&what, &huge_seq).is_err());
}

/// A tiny deterministic generator (xorshift), so a failure replays.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answers_hostile_raft_messages_with_errors_and_goes_on_serving() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let target = cluster.follower_of(leader);
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.addr(target)))
            .expect("address")
            .connect()
            .await
            .expect("connect");
    let mut raft = RaftServiceClient::new(channel);
    let before = cluster
        .node(target)
        .node
        .raft
        .metrics()
        .borrow()
        .current_term;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..300u64 {
        let len = (next(&mut seed) % 2048) as usize;
        let payload: Vec<u8> = (0..len).map(|_| next(&mut seed) as u8).collect();
        // Half the messages carry the real source's identity, so they pass
        // the identity check and reach the payload decoder.
        let (cluster_id, source_incarnation, target_incarnation, record_index) = if round % 2 == 0 {
            cluster.node(leader).node.identity.outgoing(target)
        } else {
            (
                next(&mut seed),
                next(&mut seed),
                next(&mut seed),
                next(&mut seed),
            )
        };
        let message = RaftMessage {
            target,
            source: leader,
            payload: payload.into(),
            cluster_id,
            source_incarnation,
            target_incarnation,
            sent_at_ms: 0,
            disk_alarm: false,
            record_index,
        };
        let answer = match round % 3 {
            0 => raft.vote(message).await,
            1 => raft.append_entries(message).await,
            _ => raft.install_snapshot(message).await,
        };
        let status = answer.expect_err("hostile bytes are refused");
        assert!(
            matches!(
                status.code(),
                tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
            ),
            "round {round}: {status:?}"
        );
    }
    assert_eq!(
        cluster
            .node(target)
            .node
            .raft
            .metrics()
            .borrow()
            .current_term,
        before,
        "no hostile message moved the term"
    );
    let client = cluster.client();
    client
        .create_queue("after", Default::default())
        .await
        .expect("the cluster still serves");
    tokio::time::timeout(
        Duration::from_secs(30),
        client.enqueue_one("after", Message::new("ok")),
    )
    .await
    .expect("in time")
    .expect("enqueue");
    cluster.shutdown().await;
}

/// Reads from `stream` until the server closes it (end of file or a reset),
/// for at most `within`; the server's own first bytes (its HTTP/2 settings)
/// are read and dropped on the way.
async fn closed_by_server(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A client that opens a TCP connection and never speaks (no TLS hello, no
/// HTTP/2 preface) is cut off after the first-byte timeout; and connections
/// that stall halfway (part of the HTTP/2 preface, half an HTTP request
/// head) hold up neither a node's stop nor its next start on the same data
/// dir. (Before, the stop waited on such connections forever, the node's
/// log database stayed open and locked, and the restart failed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_connects_and_never_speaks_holds_up_neither_a_stop_nor_the_next_start() {
    use raftq_raft_node::incoming::{CLOSE_GRACE, FIRST_BYTE_TIMEOUT};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    let mut cluster = TestCluster::start_with(
        3,
        Settings {
            http: true,
            ..Default::default()
        },
    )
    .await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client();
    client
        .create_queue("kept", Default::default())
        .await
        .expect("create");
    client
        .enqueue_one("kept", Message::new("before"))
        .await
        .expect("enqueue");

    println!("phase: stalled connections to a follower's ports across its stop and restart");
    let target = cluster.follower_of(leader);
    let grpc = cluster.addr(target);
    let http = cluster.node(target).http_addr.expect("an HTTP port");
    let mut silent = TcpStream::connect(&grpc).await.expect("connect");
    let mut half_preface = TcpStream::connect(&grpc).await.expect("connect");
    half_preface
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("write");
    let mut silent_http = TcpStream::connect(http).await.expect("connect");
    let mut half_head = TcpStream::connect(http).await.expect("connect");
    half_head
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: raftq\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    cluster.stop(target).await;
    println!("the stop took {:?}", started.elapsed());
    for (what, stream) in [
        ("silent gRPC", &mut silent),
        ("half an HTTP/2 preface", &mut half_preface),
        ("silent HTTP", &mut silent_http),
        ("half an HTTP request head", &mut half_head),
    ] {
        assert!(
            closed_by_server(stream, CLOSE_GRACE + Duration::from_secs(10)).await,
            "the stopped node closed the {what} connection"
        );
    }
    cluster.restart(target).await;
    cluster
        .wait_until("the restarted follower catches up", |c| {
            let leader_applied = c.node(leader).node.raft.metrics().borrow().last_applied;
            c.node(target).node.raft.metrics().borrow().last_applied == leader_applied
        })
        .await;

    println!("phase: a silent connection to a running node is cut off");
    let mut silent = tokio::net::TcpStream::connect(cluster.addr(leader))
        .await
        .expect("connect");
    assert!(
        closed_by_server(&mut silent, FIRST_BYTE_TIMEOUT + Duration::from_secs(20)).await,
        "a connection silent for {FIRST_BYTE_TIMEOUT:?} is closed"
    );
    let stats = client.get_queue("kept").await.expect("the cluster serves");
    assert_eq!(stats.ready, 1, "{stats:?}");
    cluster.shutdown().await;
}
