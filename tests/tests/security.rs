//! Security: TLS, mutual TLS between nodes, tokens and per-queue
//! permissions, on a real 3-node cluster with certificates made for the
//! test (`raftq_raft_node::pki`) and real TLS on loopback.
//!
//! Users ([`SECURE_USERS`]): `admin` (everything), `orders` (send and
//! receive on `orders.*`), `reader` (receive on every queue).

use std::time::Duration;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{SnapshotMeta, Vote};
use raftq_client::{Client, ClientConfig, ClientTls, Code, Message, ReceiveOptions, RetryPolicy};
use raftq_proto::internal::raft_service_client::RaftServiceClient;
use raftq_proto::internal::RaftMessage;
use raftq_raft_node::auth::Permission;
use raftq_storage::{codec, TypeConfig};
use raftq_tests::cluster::{Settings, TestCluster, SECURE_USERS};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

async fn secured() -> TestCluster {
    TestCluster::start_with(
        3,
        Settings {
            secure: true,
            ..Settings::default()
        },
    )
    .await
}

fn token_of(name: &str) -> &'static str {
    SECURE_USERS
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|(_, token, ..)| *token)
        .expect("a test user")
}

/// A client of every node with `config`, retrying only briefly.
fn client_with(cluster: &TestCluster, config: ClientConfig) -> Client {
    let seeds: Vec<String> = cluster.ids().iter().map(|id| cluster.addr(*id)).collect();
    Client::with_config(
        seeds,
        ClientConfig {
            retry: RetryPolicy {
                max_elapsed: Duration::from_secs(2),
                ..RetryPolicy::default()
            },
            ..config
        },
    )
    .expect("valid seeds")
}

fn as_user(cluster: &TestCluster, name: &str) -> Client {
    client_with(cluster, cluster.client_config(Some(token_of(name))))
}

/// A secured cluster, its admin client, and `queue` created holding one
/// message with `body`.
async fn secured_with(queue: &str, body: &str) -> (TestCluster, Client) {
    let cluster = secured().await;
    let admin = cluster.client();
    admin
        .create_queue(queue, Default::default())
        .await
        .expect("create");
    admin
        .enqueue_one(queue, Message::new(body.to_string()))
        .await
        .expect("enqueue");
    (cluster, admin)
}

/// A receive of one message from `queue` that waits up to `wait`.
async fn wait_on(
    client: Client,
    queue: &'static str,
    wait: Duration,
) -> raftq_client::Result<Vec<raftq_client::proto::Delivery>> {
    client
        .receive(
            queue,
            ReceiveOptions {
                max: 1,
                wait,
                ..ReceiveOptions::default()
            },
        )
        .await
}

/// A secured cluster and its admin client, with the empty queues `queues`.
async fn secured_with_queues(queues: &[&str]) -> (TestCluster, Client) {
    let cluster = secured().await;
    let admin = cluster.client();
    for queue in queues {
        admin
            .create_queue(queue, Default::default())
            .await
            .expect("create");
    }
    (cluster, admin)
}

/// What a queue holds, from the admin's view.
async fn holds(admin: &Client, queue: &str) -> (u64, u64, u64) {
    let info = admin.get_queue(queue).await.expect("get the queue");
    (info.ready, info.in_flight, info.bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tls_clients_that_trust_the_cluster_ca_get_in() {
    let cluster = secured().await;
    let admin = cluster.client();
    admin
        .create_queue("jobs", Default::default())
        .await
        .expect("the admin over TLS");

    // Plaintext to a TLS port: refused, nothing served.
    let plaintext = client_with(
        &cluster,
        ClientConfig {
            token: Some(token_of("admin").into()),
            ..ClientConfig::default()
        },
    );
    let err = plaintext
        .enqueue_one("jobs", Message::new("plain"))
        .await
        .expect_err("plaintext is refused");
    assert_ne!(err.code, Code::Ok, "{err}");

    // A client that trusts another CA does not accept the nodes'
    // certificates.
    let other = raftq_raft_node::pki::make_cluster(
        &cluster.root().join("other-ca"),
        &[(1, vec!["127.0.0.1".to_string()])].into(),
    )
    .expect("another CA");
    let wrong_ca = client_with(
        &cluster,
        ClientConfig {
            tls: Some(ClientTls {
                ca_pem: std::fs::read(&other.ca).expect("read"),
                ..ClientTls::default()
            }),
            token: Some(token_of("admin").into()),
            ..ClientConfig::default()
        },
    );
    let err = wrong_ca
        .enqueue_one("jobs", Message::new("wrong ca"))
        .await
        .expect_err("a client trusting another CA is refused");
    assert_eq!(err.code, Code::FailedPrecondition, "not retried: {err}");
    assert!(err.message.starts_with("TLS failed"), "{err}");

    // A client that trusts the cluster but presents a certificate from
    // another CA: the node refuses the certificate, and the client says so
    // instead of retrying a refusal. Under TLS 1.3 the refusal comes after
    // the client's side of the handshake, and a call may see only the cut
    // connection (retried) before one sees the alert: the default budget.
    let foreign_cert = Client::with_config(
        cluster
            .ids()
            .iter()
            .map(|id| cluster.addr(*id))
            .collect::<Vec<_>>(),
        ClientConfig {
            tls: Some(ClientTls {
                ca_pem: std::fs::read(&cluster.certs().ca).expect("read"),
                identity: Some((
                    std::fs::read(&other.client.0).expect("read"),
                    std::fs::read(&other.client.1).expect("read"),
                )),
                ..ClientTls::default()
            }),
            token: Some(token_of("admin").into()),
            ..ClientConfig::default()
        },
    )
    .expect("valid seeds");
    let err = foreign_cert
        .enqueue_one("jobs", Message::new("foreign certificate"))
        .await
        .expect_err("a client certificate from another CA is refused");
    assert_eq!(err.code, Code::FailedPrecondition, "not retried: {err}");
    assert!(err.message.starts_with("TLS failed"), "{err}");

    assert_eq!(holds(&admin, "jobs").await, (0, 0, 0), "nothing got in");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_token_is_unauthenticated_and_changes_nothing() {
    let (cluster, admin) = secured_with("orders.eu", "kept").await;
    let before = holds(&admin, "orders.eu").await;

    for token in [None, Some("not-a-token"), Some("")] {
        let client = client_with(&cluster, cluster.client_config(token));
        let err = client
            .enqueue_one("orders.eu", Message::new("x"))
            .await
            .expect_err("no valid token");
        assert_eq!(err.code, Code::Unauthenticated, "{token:?}: {err}");
        let err = client.purge("orders.eu").await.expect_err("no purge");
        assert_eq!(err.code, Code::Unauthenticated, "{err}");
        let err = client
            .remove_node(2)
            .await
            .expect_err("no membership change");
        assert_eq!(err.code, Code::Unauthenticated, "{err}");
        let err = client.cluster_status().await.expect_err("no status");
        assert_eq!(err.code, Code::Unauthenticated, "{err}");
    }
    assert_eq!(holds(&admin, "orders.eu").await, before);
    assert_eq!(
        admin.cluster_status().await.expect("status").members.len(),
        3,
        "the membership is unchanged"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_a_permission_is_denied_by_name_and_the_queue_is_unchanged() {
    let (cluster, admin) = secured_with("orders.eu", "one").await;
    let before = holds(&admin, "orders.eu").await;

    // `reader` may receive everywhere but not send, manage or administer.
    let reader = as_user(&cluster, "reader");
    let err = reader
        .enqueue_one("orders.eu", Message::new("x"))
        .await
        .expect_err("reader cannot send");
    assert_eq!(err.code, Code::PermissionDenied, "{err}");
    assert!(
        err.message.contains("send") && err.message.contains("orders.eu"),
        "names the permission and the queue: {err}"
    );
    for (what, result) in [
        ("purge", reader.purge("orders.eu").await.map(|_| ())),
        ("delete", reader.delete_queue("orders.eu").await.map(|_| ())),
        (
            "create",
            reader
                .create_queue("orders.new", Default::default())
                .await
                .map(|_| ()),
        ),
        ("remove-node", reader.remove_node(3).await.map(|_| ())),
    ] {
        let err = result.expect_err(what);
        assert_eq!(err.code, Code::PermissionDenied, "{what}: {err}");
    }
    assert_eq!(
        holds(&admin, "orders.eu").await,
        before,
        "the queue is unchanged"
    );
    assert!(admin.list_queues().await.expect("list").len() == 1);

    // What it may do, it does; a status shows it the leader, not the members.
    let got = reader
        .receive(
            "orders.eu",
            ReceiveOptions {
                max: 1,
                ..ReceiveOptions::default()
            },
        )
        .await
        .expect("reader receives");
    assert_eq!(got.len(), 1);
    let status = reader
        .cluster_status()
        .await
        .expect("any user finds the leader");
    assert!(
        status.leader_addr.is_some() && status.members.is_empty(),
        "{status:?}"
    );
    assert_eq!(
        admin.cluster_status().await.expect("status").members.len(),
        3
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_scoped_to_orders_cannot_see_or_touch_billing() {
    let cluster = secured().await;
    let admin = cluster.client();
    for queue in ["orders.eu", "billing"] {
        admin
            .create_queue(queue, Default::default())
            .await
            .expect("create");
        admin
            .enqueue_one(queue, Message::new("m"))
            .await
            .expect("enqueue");
    }
    let billing_before = holds(&admin, "billing").await;
    let orders = as_user(&cluster, "orders");

    let listed: Vec<String> = orders
        .list_queues()
        .await
        .expect("list")
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(listed, ["orders.eu"], "only what it may see");
    let err = orders.get_queue("billing").await.expect_err("no stats");
    assert_eq!(err.code, Code::PermissionDenied, "{err}");
    let err = orders
        .enqueue_one("billing", Message::new("x"))
        .await
        .expect_err("no send");
    assert_eq!(err.code, Code::PermissionDenied, "{err}");
    let options = ReceiveOptions {
        max: 10,
        ..ReceiveOptions::default()
    };
    let err = orders
        .receive("billing", options.clone())
        .await
        .expect_err("no receive");
    assert_eq!(err.code, Code::PermissionDenied, "{err}");
    let err = orders
        .ack("billing", vec!["1-1".into()])
        .await
        .expect_err("no ack");
    assert_eq!(err.code, Code::PermissionDenied, "{err}");
    // A consume stream is refused when it names the queue.
    let mut consumer = raftq_client::Consumer::new(orders.clone(), "billing", Default::default());
    let first = tokio::time::timeout(
        Duration::from_secs(20),
        futures::StreamExt::next(&mut consumer),
    )
    .await
    .expect("the consumer answers");
    let Some(Err(err)) = first else {
        panic!("the consume stream must end with an error");
    };
    assert_eq!(err.code, Code::PermissionDenied, "{err}");
    drop(consumer);
    assert_eq!(holds(&admin, "billing").await, billing_before);

    // Its own queues work.
    orders
        .enqueue_one("orders.eu", Message::new("mine"))
        .await
        .expect("send to orders.*");
    let got = orders.receive("orders.eu", options).await.expect("receive");
    assert_eq!(got.len(), 2);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_call_is_authorized_as_its_caller_by_the_leader() {
    let (cluster, admin) = secured_with_queues(&["billing"]).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.follower_of(leader);
    // The follower's users file lets `orders` send to billing; the leader's
    // does not. A call through the follower passes the follower's check and
    // is forwarded with the caller's token: the leader decides, as for its
    // own callers, and the follower's certificate adds nothing.
    std::fs::write(
        cluster.users_file(follower),
        raftq_tests::cluster::users_file(&[("billing", &[Permission::Send])]),
    )
    .expect("write");
    let auth = cluster
        .node(follower)
        .node
        .auth
        .clone()
        .expect("auth is on");
    auth.reload().expect("the follower takes its new file");

    let through_follower = cluster.client_of_as(follower, Some(token_of("orders")));
    let err = through_follower
        .enqueue_one("billing", Message::new("x"))
        .await
        .expect_err("the leader refuses it");
    assert_eq!(err.code, Code::PermissionDenied, "{err}");
    assert!(err.message.contains("\"orders\""), "as the caller: {err}");
    assert_eq!(holds(&admin, "billing").await, (0, 0, 0));

    // A call the leader allows goes through the follower as well.
    admin
        .create_queue("orders.eu", Default::default())
        .await
        .expect("create");
    through_follower
        .enqueue_one("orders.eu", Message::new("ok"))
        .await
        .expect("forwarded and allowed");
    assert_eq!(holds(&admin, "orders.eu").await.0, 1);
    cluster.shutdown().await;
}

/// A raw Raft-service client of node `target`, presenting `identity`
/// (certificate and key PEM) if any, trusting `ca`.
async fn raft_client(
    cluster: &TestCluster,
    target: u64,
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<RaftServiceClient<tonic::transport::Channel>, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).expect("read")))
        .domain_name(raftq_raft_node::tls::peer_name(target));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).expect("read"),
            std::fs::read(key).expect("read"),
        ));
    }
    let channel = Endpoint::from_shared(format!("https://{}", cluster.addr(target)))
        .expect("address")
        .tls_config(tls)
        .expect("tls config")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|err| format!("{err:?}"))?;
    Ok(RaftServiceClient::new(channel))
}

/// Node `claimed`'s envelope to `target` around `payload`: what that node
/// itself would send (its cluster id and incarnations).
fn envelope(cluster: &TestCluster, claimed: u64, target: u64, payload: Vec<u8>) -> RaftMessage {
    let (cluster_id, source_incarnation, target_incarnation, record_index) =
        cluster.node(claimed).node.identity.outgoing(target);
    RaftMessage {
        target,
        source: claimed,
        payload: payload.into(),
        cluster_id,
        source_incarnation,
        target_incarnation,
        sent_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        disk_alarm: false,
        record_index,
    }
}

/// Sends a vote, an append and a snapshot chunk at term 1000, claiming to
/// be node `claimed`; returns the status codes (or the transport error).
async fn attack(
    cluster: &TestCluster,
    client: &mut RaftServiceClient<tonic::transport::Channel>,
    claimed: u64,
    target: u64,
) -> Vec<Code> {
    let vote = Vote::new_committed(1_000, claimed);
    let vote_rpc = VoteRequest::<u64>::new(Vote::new(1_000, claimed), None);
    let append: AppendEntriesRequest<TypeConfig> = AppendEntriesRequest {
        vote,
        prev_log_id: None,
        leader_commit: None,
        entries: Vec::new(),
    };
    let snapshot: InstallSnapshotRequest<TypeConfig> = InstallSnapshotRequest {
        vote,
        meta: SnapshotMeta::default(),
        offset: 0,
        data: Vec::new(),
        done: true,
    };
    let wrap = |payload: Vec<u8>| envelope(cluster, claimed, target, payload);
    let code = |answer: Result<tonic::Response<RaftMessage>, tonic::Status>| {
        answer.map_or_else(|status| status.code(), |_| Code::Ok)
    };
    vec![
        code(
            client
                .vote(wrap(codec::encode(&vote_rpc).expect("encode")))
                .await,
        ),
        code(
            client
                .append_entries(wrap(codec::encode(&append).expect("encode")))
                .await,
        ),
        code(
            client
                .install_snapshot(wrap(codec::encode(&snapshot).expect("encode")))
                .await,
        ),
    ]
}

fn terms_and_logs(cluster: &TestCluster) -> Vec<(u64, Option<u64>, Option<u64>)> {
    cluster
        .ids()
        .iter()
        .map(|id| {
            let m = cluster.node(*id).node.raft.metrics().borrow().clone();
            (m.current_term, m.last_log_index, m.current_leader)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_member_with_its_own_node_certificate_can_append_vote_or_install_a_snapshot() {
    let cluster = secured().await;
    let leader = cluster.wait_for_leader().await;
    let target = cluster.follower_of(leader);
    let claimed = cluster
        .ids()
        .into_iter()
        .find(|id| *id != target)
        .expect("another member");
    let before = terms_and_logs(&cluster);
    let certs = cluster.certs().clone();

    // No client certificate, and a client certificate of the same CA that
    // names no node: refused before the payload is read.
    for identity in [
        None,
        Some((certs.client.0.as_path(), certs.client.1.as_path())),
    ] {
        let mut client = raft_client(&cluster, target, &certs.ca, identity)
            .await
            .expect("TLS to the node");
        let codes = attack(&cluster, &mut client, claimed, target).await;
        assert_eq!(codes, [Code::Unauthenticated; 3], "identity {identity:?}");
    }
    // A member's real certificate, claiming to be another member.
    let impostor = cluster
        .ids()
        .into_iter()
        .find(|id| *id != target && *id != claimed)
        .expect("a third member");
    let paths = &certs.nodes[&impostor];
    let mut client = raft_client(&cluster, target, &certs.ca, Some((&paths.cert, &paths.key)))
        .await
        .expect("TLS to the node");
    let codes = attack(&cluster, &mut client, claimed, target).await;
    assert_eq!(
        codes,
        [Code::Unauthenticated; 3],
        "node {impostor} posing as {claimed}"
    );

    // A node certificate with the right name from another CA: the TLS
    // handshake itself fails.
    let other = raftq_raft_node::pki::make_cluster(
        &cluster.root().join("other-ca"),
        &[(claimed, vec!["127.0.0.1".to_string()])].into(),
    )
    .expect("another CA");
    let foreign = &other.nodes[&claimed];
    match raft_client(
        &cluster,
        target,
        &certs.ca,
        Some((&foreign.cert, &foreign.key)),
    )
    .await
    {
        Err(_) => {}
        Ok(mut client) => {
            let codes = attack(&cluster, &mut client, claimed, target).await;
            assert!(
                codes
                    .iter()
                    .all(|c| *c != Code::Ok && *c != Code::FailedPrecondition),
                "a certificate from another CA is refused at the handshake: {codes:?}"
            );
        }
    }

    // Term, log and leader are as they were on every node, and the cluster
    // still works.
    assert_eq!(terms_and_logs(&cluster), before);
    let admin = cluster.client();
    admin
        .create_queue("after", Default::default())
        .await
        .expect("the cluster still serves");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_may_hold_only_so_many_waiting_receives() {
    let cluster = TestCluster::start_with(
        3,
        Settings {
            secure: true,
            max_waits_per_connection: 2,
            ..Settings::default()
        },
    )
    .await;
    let admin = cluster.client();
    admin
        .create_queue("idle", Default::default())
        .await
        .expect("create");
    let leader = cluster.wait_for_leader().await;
    let one = cluster.client_of(leader);
    let waiting = |client: Client| wait_on(client, "idle", Duration::from_secs(3));
    let first = tokio::spawn(waiting(one.clone()));
    let second = tokio::spawn(waiting(one.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let err = waiting(one.clone())
        .await
        .expect_err("a third wait is refused");
    assert_eq!(err.code, Code::ResourceExhausted, "{err}");
    assert!(err.message.contains("max_waits_per_connection"), "{err}");
    // Another connection is not held back, and the two waits end normally.
    let other = waiting(cluster.client_of(leader)).await;
    assert!(other.expect("another connection may wait").is_empty());
    for wait in [first, second] {
        assert!(wait.await.expect("join").expect("ends empty").is_empty());
    }
    // Freed: the same connection may wait again.
    assert!(waiting(one).await.expect("waits again").is_empty());
    cluster.shutdown().await;
}

/// `GET /health` over TLS to `addr`, trusting `ca`; the whole response.
async fn https_health(addr: std::net::SocketAddr, ca: &std::path::Path) -> std::io::Result<String> {
    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).expect("read the CA") {
        roots.add(cert.expect("a certificate")).expect("a CA");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: raftq\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    tls.read_to_string(&mut response).await?;
    Ok(response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_port_serves_tls_with_the_node_certificate_when_asked() {
    let cluster = TestCluster::start_with(
        3,
        Settings {
            secure: true,
            http: true,
            http_tls: true,
            ..Settings::default()
        },
    )
    .await;
    let addr = cluster.node(1).http_addr.expect("an HTTP port");
    // A client that starts a TLS handshake and stalls holds up no other:
    // the answer below comes while this one's handshake still waits (it
    // would be dropped after 5 s).
    let mut stalled = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut stalled, &[0x16, 0x03, 0x01])
        .await
        .expect("half a client hello");
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        https_health(addr, &cluster.certs().ca),
    )
    .await
    .expect("answers in time")
    .expect("a TLS answer");
    assert!(
        response.starts_with("HTTP/1.1 200") && response.contains("ok"),
        "{response}"
    );
    let mut probe = [0u8; 1];
    assert!(
        matches!(stalled.try_read(&mut probe), Err(err) if err.kind() == std::io::ErrorKind::WouldBlock),
        "the stalled handshake was still waiting when the other client was answered"
    );

    // Plaintext HTTP gets no HTTP answer from a TLS port.
    let plain = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: raftq\r\nConnection: close\r\n\r\n")
            .await?;
        let mut bytes = Vec::new();
        let _ = tcp.read_to_end(&mut bytes).await;
        std::io::Result::Ok(bytes)
    })
    .await
    .expect("the port closes or answers in time")
    .unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&plain).contains("200 OK"),
        "plaintext was served"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_users_file_is_taken_without_a_signal_and_a_broken_one_is_not() {
    let (cluster, _admin) = secured_with_queues(&["orders.eu"]).await;
    let leader = cluster.wait_for_leader().await;
    let fresh = raftq_raft_node::auth::user_entry(
        "fresh",
        "fresh-token",
        false,
        &[("orders.*".to_string(), vec![Permission::Send])],
    )
    .expect("entry");
    let as_fresh = cluster.client_of_as(leader, Some("fresh-token"));
    let err = as_fresh
        .enqueue_one("orders.eu", Message::new("x"))
        .await
        .expect_err("not a user yet");
    assert_eq!(err.code, Code::Unauthenticated, "{err}");
    // A broken file is refused and the old users stay.
    std::fs::write(cluster.users_file(leader), "[[user]]\nname = 1\n").expect("write");
    tokio::time::sleep(raftq_raft_node::node::USERS_FILE_CHECK * 2).await;
    cluster
        .client_of(leader)
        .enqueue_one("orders.eu", Message::new("admin still works"))
        .await
        .expect("the old users stay");
    // A good file is taken within a few checks, without a signal.
    let users = format!("{}\n{fresh}", raftq_tests::cluster::users_file(&[]));
    std::fs::write(cluster.users_file(leader), users).expect("write");
    let mut taken = false;
    for _ in 0..40 {
        if as_fresh
            .enqueue_one("orders.eu", Message::new("fresh"))
            .await
            .is_ok()
        {
            taken = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(taken, "the new user was not taken within 20 s");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_only_so_many_waits_and_other_calls_through_it_go_on() {
    // 8 streams per connection: a follower forwards at most 4 waits.
    let cluster = TestCluster::start_with(
        3,
        Settings {
            max_streams_per_connection: 8,
            ..Settings::default()
        },
    )
    .await;
    let admin = cluster.client();
    admin
        .create_queue("idle", Default::default())
        .await
        .expect("create");
    let follower = cluster.follower_of(cluster.wait_for_leader().await);
    let waiting = |client: Client| wait_on(client, "idle", Duration::from_secs(4));
    // Four clients, each its own connection to the follower.
    let held: Vec<_> = (0..4)
        .map(|_| tokio::spawn(waiting(cluster.client_of(follower))))
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let err = waiting(cluster.client_of(follower))
        .await
        .expect_err("a fifth forwarded wait is refused");
    assert_eq!(err.code, Code::ResourceExhausted, "{err}");
    assert!(err.message.contains("forwards"), "{err}");
    // Other calls through the follower go on.
    cluster
        .client_of(follower)
        .enqueue_one("idle", Message::new("through the follower"))
        .await
        .expect("an enqueue through the follower");
    for wait in held {
        wait.await
            .expect("join")
            .expect("a held wait ends normally");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naming_a_dead_letter_queue_needs_send_on_it() {
    let (cluster, admin) = secured_with("billing", "kept").await;
    // `orders` may also manage orders.*: it creates queues there, but may
    // only dead-letter into queues it may send to.
    for id in cluster.ids() {
        std::fs::write(
            cluster.users_file(id),
            raftq_tests::cluster::users_file(&[("orders*", &[Permission::Manage])]),
        )
        .expect("write");
        let auth = cluster.node(id).node.auth.clone().expect("auth is on");
        auth.reload().expect("reload");
    }
    let orders = as_user(&cluster, "orders");
    let with_dlq = |dlq: &str| raftq_client::proto::QueueConfig {
        dead_letter_queue: Some(dlq.to_string()),
        max_deliveries: Some(1),
        ..Default::default()
    };
    for dlq in ["billing", "no-such-queue"] {
        let err = orders
            .create_queue("orders.x", with_dlq(dlq))
            .await
            .expect_err("no send on the DLQ");
        assert_eq!(err.code, Code::PermissionDenied, "{dlq}: {err}");
        assert!(
            err.message.contains("send") && err.message.contains(dlq),
            "{err}"
        );
    }
    orders
        .create_queue("orders.y", Default::default())
        .await
        .expect("create without a DLQ");
    let err = orders
        .update_queue("orders.y", with_dlq("billing"), &[])
        .await
        .expect_err("no send on the DLQ");
    assert_eq!(err.code, Code::PermissionDenied, "{err}");
    orders
        .create_queue("orders.dlq", Default::default())
        .await
        .expect("create the DLQ");
    orders
        .create_queue("orders.x", with_dlq("orders.dlq"))
        .await
        .expect("a DLQ it may send to");
    assert_eq!(holds(&admin, "billing").await.0, 1, "billing is untouched");
    cluster.shutdown().await;
}
