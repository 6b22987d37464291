//! Only messages handed to a consumer count as deliveries: a consume stream
//! leases no further ahead than it can send, and what it leased but never
//! sent is released when it ends; a client dropped with unread messages
//! releases them too. A consumer that never got a message does not push it
//! toward the dead-letter queue.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use raftq_client::proto as pb;
use raftq_client::{Consumer, ConsumerConfig, Message, ReceiveOptions};
use raftq_proto::v1::queue_service_client::QueueServiceClient;
use raftq_tests::cluster::TestCluster;

async fn stats(client: &raftq_client::Client, queue: &str) -> pb::QueueInfo {
    client.get_queue(queue).await.expect("stats")
}

/// Opens a raw consume stream on `queue` at `addr` with `credit`; the
/// sender keeps the request side open (dropping it ends the stream).
async fn open_consume(
    addr: &str,
    queue: &str,
    credit: u32,
) -> (
    tonic::Streaming<pb::ConsumeResponse>,
    tokio::sync::mpsc::Sender<pb::ConsumeRequest>,
) {
    let mut raw = QueueServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .max_decoding_message_size(64 << 20);
    let (credit_tx, credit_rx) = tokio::sync::mpsc::channel::<pb::ConsumeRequest>(1);
    credit_tx
        .send(pb::ConsumeRequest {
            request: Some(pb::consume_request::Request::Start(pb::ConsumeStart {
                queue: queue.into(),
                credit,
                ..Default::default()
            })),
        })
        .await
        .expect("start");
    let stream = raw
        .consume(tokio_stream::wrappers::ReceiverStream::new(credit_rx))
        .await
        .expect("consume")
        .into_inner();
    (stream, credit_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consume_stream_that_reads_nothing_leases_little_and_releases_it_when_it_ends() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client();
    client
        .create_queue("dlq", Default::default())
        .await
        .expect("dlq");
    client
        .create_queue(
            "jobs",
            pb::QueueConfig {
                max_deliveries: Some(1),
                dead_letter_queue: Some("dlq".into()),
                visibility_timeout_ms: Some(1_000),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    let messages: Vec<Message> = (0..50u8)
        .map(|i| Message::new(Bytes::from(vec![i; 500_000])))
        .collect();
    client.enqueue("jobs", messages).await.expect("enqueue");

    println!("phase: a consumer opens a stream with credit 50 and reads nothing");
    let (stream, credit_tx) = open_consume(&cluster.addr(leader), "jobs", 50).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leased = stats(&client, "jobs").await.in_flight;
    // What the client's HTTP/2 receive window holds (hyper's 2 MiB: four of
    // these messages), one being written, and the server's 1 MiB lease-ahead.
    assert!(
        (1..=10).contains(&leased),
        "the stream leases what it can send soon, not its whole credit: {leased} leased"
    );

    println!("phase: it disconnects; the unsent leases are released uncounted");
    drop(stream);
    drop(credit_tx);
    let mut released = 0;
    for _ in 0..200 {
        released = stats(&client, "jobs")
            .await
            .counters
            .expect("counters")
            .released;
        if released > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(released > 0, "unsent leases were released");
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    println!("phase: after the visibility timeout, a healthy consumer gets the messages");
    let mut delivered = 0;
    loop {
        let got = client
            .receive(
                "jobs",
                ReceiveOptions {
                    max: 20,
                    ..Default::default()
                },
            )
            .await
            .expect("receive");
        if got.is_empty() {
            break;
        }
        assert!(got.iter().all(|d| d.delivery_count == 1), "{got:?}");
        let receipts = got.iter().map(|d| d.receipt.clone()).collect();
        client.ack("jobs", receipts).await.expect("ack");
        delivered += got.len() as u64;
    }
    let counters = stats(&client, "jobs").await.counters.expect("counters");
    println!(
        "leased {leased} at first, released {}, delivered {delivered}, dead-lettered {}",
        counters.released, counters.dead_lettered
    );
    assert_eq!(delivered + counters.dead_lettered, 50, "nothing is lost");
    assert!(
        counters.dead_lettered <= 10,
        "only messages handed to the transport may count as delivered, not the whole \
         credit: {counters:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_dropped_with_unread_messages_releases_them() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client();
    client
        .create_queue(
            "jobs",
            pb::QueueConfig {
                max_deliveries: Some(1),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    let messages: Vec<Message> = (0..20).map(|i| Message::new(format!("m{i}"))).collect();
    client.enqueue("jobs", messages).await.expect("enqueue");
    let mut consumer = Consumer::new(
        client.clone(),
        "jobs",
        ConsumerConfig {
            prefetch: 10,
            ..Default::default()
        },
    );
    let first = consumer.next().await.expect("a message").expect("no error");
    first.ack().await.expect("ack");
    // Let the prefetch buffer fill, then drop the consumer unread.
    for _ in 0..200 {
        if stats(&client, "jobs").await.in_flight >= 9 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(consumer);
    let mut info = stats(&client, "jobs").await;
    for _ in 0..200 {
        if info.in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        info = stats(&client, "jobs").await;
    }
    assert_eq!(
        info.in_flight, 0,
        "the unread messages were released: {info:?}"
    );
    assert_eq!(info.ready, 19);
    let counters = info.counters.expect("counters");
    assert!(counters.released >= 9, "{counters:?}");
    let again = client
        .receive(
            "jobs",
            ReceiveOptions {
                max: 100,
                ..Default::default()
            },
        )
        .await
        .expect("receive");
    assert_eq!(again.len(), 19);
    assert!(
        again.iter().all(|d| d.delivery_count == 1),
        "released leases did not count, so max_deliveries 1 still delivers them"
    );
    cluster.shutdown().await;
}

/// Found in the field: with 100 consumers long-polling one queue, each new
/// message cost ~100 receive entries, all but one empty. One ready message
/// must wake one receive proposal (plus the odd one that races it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_ready_message_makes_one_receive_entry_however_many_consumers_wait() {
    const WAITERS: usize = 50;
    const MESSAGES: usize = 5;
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client();
    client
        .create_queue("jobs", Default::default())
        .await
        .expect("create");
    let counted = |result: &str| {
        cluster
            .node(leader)
            .node
            .metrics
            .receives_proposed
            .with_label_values(&[result])
            .get()
    };

    let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for _ in 0..WAITERS {
        let (client, got_tx) = (client.clone(), got_tx.clone());
        waiters.push(tokio::spawn(async move {
            let got = client
                .receive(
                    "jobs",
                    ReceiveOptions {
                        max: 1,
                        wait: Duration::from_secs(20),
                        ..Default::default()
                    },
                )
                .await
                .expect("receive");
            let _ = got_tx.send(got.len());
        }));
    }
    // Let every receive reach the leader and park (nothing is ready).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        counted("empty") + counted("leased"),
        0,
        "no receive proposed while nothing is ready"
    );

    for i in 0..MESSAGES {
        client
            .enqueue_one("jobs", Message::new(format!("m{i}")))
            .await
            .expect("enqueue");
        // One message at a time: each must reach exactly one waiter.
        let got = tokio::time::timeout(Duration::from_secs(10), got_rx.recv())
            .await
            .expect("a waiter receives the message")
            .expect("waiters alive");
        assert_eq!(got, 1);
    }
    let (leased, empty) = (counted("leased"), counted("empty"));
    println!(
        "{MESSAGES} messages, {WAITERS} waiters: {leased} receive entries leased, {empty} empty"
    );
    assert_eq!(leased, MESSAGES as u64);
    assert!(
        empty <= MESSAGES as u64,
        "{empty} empty receive entries for {MESSAGES} messages and {WAITERS} waiters"
    );
    for waiter in waiters {
        waiter.abort();
    }
    cluster.shutdown().await;
}

/// Found by review: dropping a consumer aborted the acks it was sending,
/// so an ack issued just before the drop failed and its caller could not
/// tell whether it was applied. Acks issued before the drop complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acks_issued_before_a_consumer_is_dropped_complete() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client();
    client
        .create_queue("jobs", Default::default())
        .await
        .expect("create");
    let messages: Vec<Message> = (0..5).map(|i| Message::new(format!("m{i}"))).collect();
    client.enqueue("jobs", messages).await.expect("enqueue");
    let mut consumer = Consumer::new(
        client.clone(),
        "jobs",
        ConsumerConfig {
            prefetch: 5,
            ..Default::default()
        },
    );
    let mut acks = Vec::new();
    for _ in 0..5 {
        let received = consumer.next().await.expect("a message").expect("no error");
        let mut ack = Box::pin(received.ack());
        // Poll once: the ack is handed to the consumer's ack sender.
        assert!(futures::poll!(ack.as_mut()).is_pending());
        acks.push(ack);
    }
    drop(consumer);
    for ack in acks {
        ack.await.expect("an ack issued before the drop completes");
    }
    let info = stats(&client, "jobs").await;
    assert_eq!((info.ready, info.in_flight), (0, 0), "{info:?}");
    assert_eq!(info.counters.expect("counters").acked, 5);
    cluster.shutdown().await;
}

/// A consume stream waiting on a drained queue, on a node told to stop,
/// ends at once with UNAVAILABLE saying so (the client's consumer
/// reconnects to another node) instead of asking for messages again and
/// again until its connection is closed; the messages it handed over before
/// the status keep their leases (none is also made visible again), and
/// nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consume_stream_on_a_stopping_node_ends_with_unavailable() {
    use std::collections::BTreeSet;
    const COUNT: u64 = 600;

    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client();
    client
        .create_queue(
            "jobs",
            pb::QueueConfig {
                visibility_timeout_ms: Some(120_000),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    let messages: Vec<Message> = (0..COUNT)
        .map(|i| Message::new(Bytes::from(format!("{i:04}").repeat(1_000))))
        .collect();
    client.enqueue("jobs", messages).await.expect("enqueue");

    println!("phase: a stream leases everything and the client reads nothing yet");
    let (mut stream, credit_tx) = open_consume(&cluster.addr(leader), "jobs", 1_000).await;
    for _ in 0..600 {
        if stats(&client, "jobs").await.in_flight == COUNT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats(&client, "jobs").await.in_flight, COUNT, "all leased");

    println!("phase: the node stops; the stream hands over what it holds, then says why it ends");
    let stopping = tokio::spawn(async move {
        cluster.stop(leader).await;
        cluster
    });
    let mut handed = BTreeSet::new();
    let status = loop {
        let next = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("the stream ends in time")
            .expect("the stream says why it ends");
        match next {
            Ok(response) => {
                handed.insert(response.message.expect("a delivery").id);
            }
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("stopping"), "{status:?}");
    let cluster = stopping.await.expect("stopped");

    println!("phase: what was released is received again; nothing handed over is");
    let mut again = BTreeSet::new();
    loop {
        let got = client
            .receive(
                "jobs",
                ReceiveOptions {
                    max: 100,
                    ..Default::default()
                },
            )
            .await
            .expect("receive from the new leader");
        if got.is_empty() {
            break;
        }
        again.extend(got.into_iter().map(|d| d.id));
    }
    let both: Vec<_> = handed.intersection(&again).collect();
    assert!(
        both.is_empty(),
        "{} messages handed over by the stream were also released: {both:?}",
        both.len()
    );
    let after = stats(&client, "jobs").await;
    assert_eq!(
        after.ready + after.in_flight,
        COUNT,
        "nothing lost: {after:?}"
    );
    println!(
        "handed over {}, released and received again {}",
        handed.len(),
        again.len()
    );
    cluster.shutdown().await;
    drop(credit_tx);
}
