//! Every public RPC against an in-process 3-node cluster over real gRPC, both
//! through the leader and through a follower, and every kind of bad input
//! with the status code a client acts on.

use std::time::Duration;

use futures::StreamExt;
use raftq_client::proto as pb;
use raftq_client::{Consumer, ConsumerConfig, Message, Producer, ProducerConfig};
use raftq_proto::v1::cluster_service_client::ClusterServiceClient;
use raftq_proto::v1::queue_service_client::QueueServiceClient;
use raftq_tests::cluster::TestCluster;
use tonic::transport::Channel;
use tonic::Code;

async fn queue_client(addr: &str) -> QueueServiceClient<Channel> {
    QueueServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

fn message(body: &str) -> pb::NewMessage {
    pb::NewMessage {
        body: body.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

/// Runs every RPC against node `via` and checks the answers.
async fn exercise_every_rpc(cluster: &TestCluster, via: u64, expect_leader_header: bool) {
    let mut q = queue_client(&cluster.addr(via)).await;
    let name = format!("jobs-{via}");
    let dlq = format!("dead-{via}");
    println!("phase: create via node {via}");
    let created = q
        .create_queue(pb::CreateQueueRequest {
            name: dlq.clone(),
            config: None,
        })
        .await
        .expect("create dlq");
    assert_eq!(
        created
            .metadata()
            .contains_key(raftq_proto::LEADER_ID_HEADER),
        expect_leader_header,
        "a follower names the leader in the metadata"
    );
    let config = pb::QueueConfig {
        max_deliveries: Some(2),
        dead_letter_queue: Some(dlq.clone()),
        visibility_timeout_ms: Some(1_000),
        retry_backoff_min_ms: Some(0),
        ..Default::default()
    };
    assert!(
        q.create_queue(pb::CreateQueueRequest {
            name: name.clone(),
            config: Some(config.clone())
        })
        .await
        .expect("create")
        .into_inner()
        .created
    );
    assert!(
        !q.create_queue(pb::CreateQueueRequest {
            name: name.clone(),
            config: Some(config.clone())
        })
        .await
        .expect("again")
        .into_inner()
        .created
    );

    println!("phase: enqueue with a duplicate dedup id");
    let mut first = message("a");
    first.dedup_id = Some("d-1".into());
    let results = q
        .enqueue(pb::EnqueueRequest {
            queue: name.clone(),
            messages: vec![first.clone(), message("b"), first, message("c")],
        })
        .await
        .expect("enqueue")
        .into_inner()
        .results;
    let ids: Vec<_> = results
        .iter()
        .map(|r| (r.result.clone(), r.duplicate))
        .collect();
    // Ids are cluster-wide: this queue's first message takes the next one.
    let Some(pb::enqueue_result::Result::Id(a)) = ids[0].0 else {
        panic!("the first message was stored: {ids:?}")
    };
    let (b, c) = (a + 1, a + 2);
    assert_eq!(
        ids,
        vec![
            (Some(pb::enqueue_result::Result::Id(a)), false),
            (Some(pb::enqueue_result::Result::Id(b)), false),
            (Some(pb::enqueue_result::Result::Id(a)), true),
            (Some(pb::enqueue_result::Result::Id(c)), false),
        ]
    );

    println!("phase: list and get are linearizable");
    let info = q
        .get_queue(pb::GetQueueRequest { name: name.clone() })
        .await
        .expect("get")
        .into_inner()
        .queue
        .expect("info");
    assert_eq!(info.ready, 3);
    assert_eq!(info.config.expect("config").max_deliveries, Some(2));
    let names: Vec<String> = q
        .list_queues(pb::ListQueuesRequest {})
        .await
        .expect("list")
        .into_inner()
        .queues
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert!(names.contains(&name) && names.contains(&dlq));

    println!("phase: receive, ack, nack, extend");
    let got = q
        .receive(pb::ReceiveRequest {
            queue: name.clone(),
            max: 2,
            consumer: "t".into(),
            ..Default::default()
        })
        .await
        .expect("receive")
        .into_inner()
        .messages;
    assert_eq!(
        got.iter().map(|m| m.body.as_ref()).collect::<Vec<_>>(),
        [b"a".as_ref(), b"b".as_ref()]
    );
    let acked = q
        .ack(pb::AckRequest {
            queue: name.clone(),
            receipts: vec![got[0].receipt.clone()],
        })
        .await
        .expect("ack")
        .into_inner();
    assert_eq!(acked.results[0].error, None);
    let extended = q
        .extend(pb::ExtendRequest {
            queue: name.clone(),
            receipts: vec![got[1].receipt.clone()],
            visibility_ms: 60_000,
        })
        .await
        .expect("extend")
        .into_inner();
    assert_eq!(extended.results[0].error, None);
    assert!(extended.lease_deadline_ms[0] > got[1].lease_deadline_ms);
    let nacked = q
        .nack(pb::NackRequest {
            queue: name.clone(),
            receipts: vec![got[1].receipt.clone()],
            delay_ms: None,
            reason: Some("try later".into()),
        })
        .await
        .expect("nack")
        .into_inner();
    assert_eq!(nacked.results[0].error, None);
    let again = q
        .receive(pb::ReceiveRequest {
            queue: name.clone(),
            max: 10,
            ..Default::default()
        })
        .await
        .expect("receive again")
        .into_inner()
        .messages;
    assert_eq!(
        again
            .iter()
            .map(|m| (m.id, m.delivery_count))
            .collect::<Vec<_>>(),
        [(c, 1), (b, 2)],
        "the nacked message queues behind the one that was waiting"
    );

    println!("phase: dead-letter after max_deliveries, then redrive");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let third = q
        .receive(pb::ReceiveRequest {
            queue: name.clone(),
            max: 10,
            visibility_ms: Some(60_000),
            ..Default::default()
        })
        .await
        .expect("receive third")
        .into_inner()
        .messages;
    assert_eq!(
        third.iter().map(|m| m.id).collect::<Vec<_>>(),
        [c],
        "message b went to the dead-letter queue"
    );
    let dead = q
        .receive(pb::ReceiveRequest {
            queue: dlq.clone(),
            max: 10,
            ..Default::default()
        })
        .await
        .expect("receive dlq")
        .into_inner()
        .messages;
    assert_eq!(dead.len(), 1);
    let origin = dead[0].dead_letter.clone().expect("dead-letter info");
    assert_eq!(
        (
            origin.source_queue.as_str(),
            origin.source_id,
            origin.reason.as_deref()
        ),
        (name.as_str(), b, Some("try later"))
    );
    q.nack(pb::NackRequest {
        queue: dlq.clone(),
        receipts: vec![dead[0].receipt.clone()],
        delay_ms: Some(0),
        reason: None,
    })
    .await
    .expect("release dlq lease");
    let redriven = q
        .redrive(pb::RedriveRequest {
            dlq: dlq.clone(),
            max: 0,
        })
        .await
        .expect("redrive")
        .into_inner();
    assert_eq!((redriven.moved, redriven.skipped), (1, 0));

    println!("phase: update, purge, delete");
    let updated = q
        .update_queue(pb::UpdateQueueRequest {
            name: name.clone(),
            config: Some(pb::QueueConfig {
                visibility_timeout_ms: Some(2_000),
                ..Default::default()
            }),
            reset: vec!["max_deliveries".into()],
        })
        .await
        .expect("update")
        .into_inner()
        .config
        .expect("the config in force");
    assert_eq!(updated.visibility_timeout_ms, Some(2_000));
    assert_eq!(updated.max_deliveries, Some(20), "reset to its default");
    assert_eq!(updated.dead_letter_queue, Some(dlq.clone()), "kept");
    let purged = q
        .purge(pb::PurgeRequest { name: name.clone() })
        .await
        .expect("purge")
        .into_inner();
    assert_eq!(
        purged.messages, 1,
        "the redriven message; message c is leased and stays"
    );
    let acked = q
        .ack(pb::AckRequest {
            queue: name.clone(),
            receipts: vec![third[0].receipt.clone()],
        })
        .await
        .expect("ack after purge")
        .into_inner();
    assert_eq!(
        acked.results[0].error, None,
        "a purge keeps leased messages"
    );
    assert_eq!(
        q.delete_queue(pb::DeleteQueueRequest { name: name.clone() })
            .await
            .expect("delete")
            .into_inner()
            .messages,
        0
    );
    q.delete_queue(pb::DeleteQueueRequest { name: dlq.clone() })
        .await
        .expect("delete dlq");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_queue_rpc_works_through_the_leader_and_through_a_follower() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    exercise_every_rpc(&cluster, leader, false).await;
    exercise_every_rpc(&cluster, cluster.follower_of(leader), true).await;
    let digests = cluster.wait_converged().await;
    println!("replicas converged: {digests:?}");
    cluster.shutdown().await;
}

fn code_of<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    result.expect_err("must be refused").code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_bad_input_gets_the_status_code_a_client_acts_on_and_changes_nothing() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    for via in [leader, cluster.follower_of(leader)] {
        println!("phase: bad input via node {via}");
        let mut q = queue_client(&cluster.addr(via)).await;
        let name = format!("strict-{via}");
        let config = pb::QueueConfig {
            max_length: Some(1),
            max_message_bytes: Some(16),
            ..Default::default()
        };
        q.create_queue(pb::CreateQueueRequest {
            name: name.clone(),
            config: Some(config),
        })
        .await
        .expect("create");
        q.enqueue(pb::EnqueueRequest {
            queue: name.clone(),
            messages: vec![message("one")],
        })
        .await
        .expect("enqueue");
        let before = q
            .get_queue(pb::GetQueueRequest { name: name.clone() })
            .await
            .expect("get")
            .into_inner()
            .queue;

        let code = |r| code_of::<pb::CreateQueueResponse>(r);
        assert_eq!(
            code(
                q.create_queue(pb::CreateQueueRequest {
                    name: "bad name!".into(),
                    config: None
                })
                .await
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            code(
                q.create_queue(pb::CreateQueueRequest {
                    name: name.clone(),
                    config: None
                })
                .await
            ),
            Code::AlreadyExists
        );
        let out_of_range = pb::QueueConfig {
            visibility_timeout_ms: Some(5),
            ..Default::default()
        };
        let status = q
            .create_queue(pb::CreateQueueRequest {
                name: "other".into(),
                config: Some(out_of_range),
            })
            .await
            .expect_err("range");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("visibility_timeout_ms"),
            "{}",
            status.message()
        );
        let missing_dlq = pb::QueueConfig {
            dead_letter_queue: Some("nowhere".into()),
            ..Default::default()
        };
        assert_eq!(
            code(
                q.create_queue(pb::CreateQueueRequest {
                    name: "other".into(),
                    config: Some(missing_dlq)
                })
                .await
            ),
            Code::InvalidArgument
        );

        assert_eq!(
            code_of(
                q.enqueue(pb::EnqueueRequest {
                    queue: "nope".into(),
                    messages: vec![message("x")]
                })
                .await
            ),
            Code::NotFound
        );
        assert_eq!(
            code_of(
                q.enqueue(pb::EnqueueRequest {
                    queue: name.clone(),
                    messages: vec![]
                })
                .await
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            code_of(
                q.enqueue(pb::EnqueueRequest {
                    queue: name.clone(),
                    messages: vec![message("x"); 101]
                })
                .await
            ),
            Code::InvalidArgument
        );
        let huge = pb::NewMessage {
            body: vec![0u8; 5 << 20].into(),
            ..Default::default()
        };
        let status = q
            .enqueue(pb::EnqueueRequest {
                queue: name.clone(),
                messages: vec![huge],
            })
            .await
            .expect_err("too big for the wire");
        assert!(
            status.code() == Code::ResourceExhausted && status.message().contains("4194304"),
            "{status:?}"
        );
        let results = q
            .enqueue(pb::EnqueueRequest {
                queue: name.clone(),
                messages: vec![message("far too long for this queue"), message("two")],
            })
            .await
            .expect("per-message results")
            .into_inner()
            .results;
        let codes: Vec<i32> = results
            .iter()
            .map(|r| match &r.result {
                Some(pb::enqueue_result::Result::Error(e)) => e.code,
                other => panic!("expected refusals, got {other:?}"),
            })
            .collect();
        assert_eq!(
            codes,
            [Code::InvalidArgument as i32, Code::ResourceExhausted as i32],
            "oversize, then queue full"
        );

        assert_eq!(
            code_of(
                q.receive(pb::ReceiveRequest {
                    queue: name.clone(),
                    max: 101,
                    ..Default::default()
                })
                .await
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            code_of(
                q.receive(pb::ReceiveRequest {
                    queue: name.clone(),
                    wait_ms: 30_000,
                    ..Default::default()
                })
                .await
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            code_of(
                q.receive(pb::ReceiveRequest {
                    queue: "nope".into(),
                    wait_ms: 100,
                    ..Default::default()
                })
                .await
            ),
            Code::NotFound
        );
        assert_eq!(
            code_of(
                q.ack(pb::AckRequest {
                    queue: name.clone(),
                    receipts: vec!["not-a-receipt".into()]
                })
                .await
            ),
            Code::InvalidArgument
        );
        let stale = q
            .ack(pb::AckRequest {
                queue: name.clone(),
                receipts: vec!["1-7".into(), "99-1".into()],
            })
            .await
            .expect("per-receipt results")
            .into_inner();
        assert!(stale.results.iter().all(|r| r
            .error
            .as_ref()
            .is_some_and(|e| e.code == Code::FailedPrecondition as i32)));
        assert_eq!(
            code_of(
                q.extend(pb::ExtendRequest {
                    queue: name.clone(),
                    receipts: vec!["1-1".into()],
                    visibility_ms: 0
                })
                .await
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            code_of(
                q.redrive(pb::RedriveRequest {
                    dlq: "nope".into(),
                    max: 1
                })
                .await
            ),
            Code::NotFound
        );

        let after = q
            .get_queue(pb::GetQueueRequest { name: name.clone() })
            .await
            .expect("get")
            .into_inner()
            .queue;
        let timeless = |info: Option<pb::QueueInfo>| pb::QueueInfo {
            oldest_ready_age_ms: 0,
            ..info.expect("info")
        };
        assert_eq!(
            timeless(before),
            timeless(after),
            "refusals changed nothing"
        );
    }

    println!("phase: a dead-letter queue in use cannot be deleted");
    let mut q = queue_client(&cluster.addr(leader)).await;
    q.create_queue(pb::CreateQueueRequest {
        name: "dlq".into(),
        config: None,
    })
    .await
    .expect("dlq");
    q.create_queue(pb::CreateQueueRequest {
        name: "src".into(),
        config: Some(pb::QueueConfig {
            dead_letter_queue: Some("dlq".into()),
            ..Default::default()
        }),
    })
    .await
    .expect("src");
    assert_eq!(
        code_of(
            q.delete_queue(pb::DeleteQueueRequest { name: "dlq".into() })
                .await
        ),
        Code::FailedPrecondition
    );

    println!("phase: membership requests naming non-members or bad addresses");
    let mut c = ClusterServiceClient::connect(format!(
        "http://{}",
        cluster.addr(cluster.follower_of(leader))
    ))
    .await
    .expect("connect");
    assert_eq!(
        code_of(c.remove_node(pb::RemoveNodeRequest { id: 42 }).await),
        Code::NotFound
    );
    assert_eq!(
        code_of(
            c.add_node(pb::AddNodeRequest {
                id: 9,
                addr: "no-port".into()
            })
            .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code_of(
            c.add_node(pb::AddNodeRequest {
                id: 0,
                addr: "127.0.0.1:1".into()
            })
            .await
        ),
        Code::InvalidArgument
    );
    let status = c
        .status(pb::StatusRequest::default())
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.members.len(), 3, "membership unchanged");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_receive_writes_nothing_to_the_log_and_wakes_when_a_message_arrives() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.follower_of(leader);
    let client = cluster.client();
    client
        .create_queue("waiting", Default::default())
        .await
        .expect("create");
    let log_index = || {
        cluster
            .node(leader)
            .node
            .raft
            .metrics()
            .borrow()
            .last_log_index
            .unwrap_or(0)
    };
    let before = log_index();
    let mut q = queue_client(&cluster.addr(follower)).await;
    let waiter = tokio::spawn(async move {
        q.receive(pb::ReceiveRequest {
            queue: "waiting".into(),
            max: 1,
            wait_ms: 10_000,
            ..Default::default()
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(log_index(), before, "waiting wrote nothing to the log");
    assert!(!waiter.is_finished(), "still waiting");
    client
        .enqueue_one("waiting", Message::new("wake up"))
        .await
        .expect("enqueue");
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken well before its deadline")
        .expect("task")
        .expect("receive")
        .into_inner()
        .messages;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body.as_ref(), b"wake up");
    let empty = client
        .receive(
            "waiting",
            raftq_client::ReceiveOptions {
                max: 1,
                wait: Duration::from_millis(300),
                ..Default::default()
            },
        )
        .await
        .expect("empty receive after its wait");
    assert!(empty.is_empty());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consume_sends_no_more_than_the_credit_granted() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let client = cluster.client();
    client
        .create_queue("stream", Default::default())
        .await
        .expect("create");
    for i in 0..5 {
        client
            .enqueue_one("stream", Message::new(format!("m{i}")))
            .await
            .expect("enqueue");
    }
    let mut q = queue_client(&cluster.addr(cluster.follower_of(leader))).await;
    let (credit_tx, credit_rx) = tokio::sync::mpsc::channel(8);
    let start = pb::ConsumeRequest {
        request: Some(pb::consume_request::Request::Start(pb::ConsumeStart {
            queue: "stream".into(),
            credit: 2,
            ..Default::default()
        })),
    };
    let outbound = futures::stream::once(async { start }).chain(tokio_stream_from(credit_rx));
    let mut inbound = q.consume(outbound).await.expect("consume").into_inner();
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .expect("in time")
            .expect("ok")
            .expect("message");
        got.push(m.message.expect("delivery").id);
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(800), inbound.message())
            .await
            .is_err(),
        "nothing beyond the credit"
    );
    credit_tx
        .send(pb::ConsumeRequest {
            request: Some(pb::consume_request::Request::Credit(3)),
        })
        .await
        .expect("grant");
    for _ in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .expect("in time")
            .expect("ok")
            .expect("message");
        got.push(m.message.expect("delivery").id);
    }
    assert_eq!(got, [1, 2, 3, 4, 5]);

    let bad_start = pb::ConsumeRequest {
        request: Some(pb::consume_request::Request::Credit(1)),
    };
    let status = q
        .consume(futures::stream::once(async { bad_start }))
        .await
        .expect_err("must start with start");
    assert_eq!(status.code(), Code::InvalidArgument);
    cluster.shutdown().await;
}

fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<pb::ConsumeRequest>,
) -> impl futures::Stream<Item = pb::ConsumeRequest> {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_client_producer_and_consumer_move_every_message_once() {
    let cluster = TestCluster::start(3).await;
    let client = cluster.client();
    client
        .create_queue("work", Default::default())
        .await
        .expect("create");
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let sends = (0..300).map(|i| {
        let producer = producer.clone();
        async move {
            producer
                .send("work", Message::new(format!("job-{i}")))
                .await
        }
    });
    let results = futures::future::join_all(sends).await;
    let ids: std::collections::BTreeSet<u64> =
        results.into_iter().map(|r| r.expect("sent").id).collect();
    assert_eq!(ids.len(), 300, "300 distinct messages");

    let mut consumer = Consumer::new(
        client.clone(),
        "work",
        ConsumerConfig {
            prefetch: 50,
            ..Default::default()
        },
    );
    let mut bodies = std::collections::BTreeSet::new();
    while bodies.len() < 300 {
        let received = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a message in time")
            .expect("stream open")
            .expect("no error");
        assert_eq!(received.delivery_count(), 1);
        assert!(
            bodies.insert(String::from_utf8_lossy(received.body()).into_owned()),
            "delivered once"
        );
        received.ack().await.expect("ack");
    }
    let info = client.get_queue("work").await.expect("stats");
    assert_eq!(
        (
            info.ready,
            info.in_flight,
            info.counters.expect("counters").acked
        ),
        (0, 0, 300)
    );
    drop(consumer);
    cluster.shutdown().await;
}
