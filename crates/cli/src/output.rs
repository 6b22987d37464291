//! How client commands print: text for people, `--json` for scripts.

use raftq_client::proto as pb;
use serde_json::{json, Value};

/// Prints a JSON value on one line.
pub fn print_json(value: &Value) {
    println!("{value}");
}

/// A queue's config as JSON.
pub fn config_json(config: &pb::QueueConfig) -> Value {
    json!({
        "visibility_timeout_ms": config.visibility_timeout_ms,
        "max_deliveries": config.max_deliveries,
        "dead_letter_queue": config.dead_letter_queue,
        "retry_backoff_min_ms": config.retry_backoff_min_ms,
        "retry_backoff_max_ms": config.retry_backoff_max_ms,
        "message_ttl_ms": config.message_ttl_ms,
        "retention_ms": config.retention_ms,
        "max_length": config.max_length,
        "max_bytes": config.max_bytes,
        "overflow": match config.overflow { Some(1) => "drop_oldest", _ => "reject" },
        "max_message_bytes": config.max_message_bytes,
        "default_delay_ms": config.default_delay_ms,
        "max_delay_ms": config.max_delay_ms,
        "dedup_window_ms": config.dedup_window_ms,
    })
}

/// A queue's stats as JSON.
pub fn queue_json(q: &pb::QueueInfo) -> Value {
    let c = q.counters.unwrap_or_default();
    json!({
        "name": q.name,
        "ready": q.ready,
        "in_flight": q.in_flight,
        "delayed": q.delayed,
        "bytes": q.bytes,
        "oldest_ready_age_ms": q.oldest_ready_age_ms,
        "oldest_in_flight_age_ms": q.oldest_in_flight_age_ms,
        "oldest_in_flight_consumer": q.oldest_in_flight_consumer,
        "counters": {
            "enqueued": c.enqueued, "acked": c.acked, "dead_lettered": c.dead_lettered,
            "expired": c.expired, "dropped": c.dropped, "redriven": c.redriven,
            "released": c.released,
        },
        "dead_letter_source_of": q.dead_letter_source_of,
        "config": q.config.as_ref().map(config_json),
    })
}

/// One line per queue for `queue list`.
pub fn queue_line(q: &pb::QueueInfo) -> String {
    format!(
        "{:<24} ready {:>8}  in-flight {:>6}  delayed {:>6}  bytes {:>10}",
        q.name, q.ready, q.in_flight, q.delayed, q.bytes
    )
}

/// A multi-line description for `queue stats`.
pub fn queue_text(q: &pb::QueueInfo) -> String {
    let c = q.counters.unwrap_or_default();
    let mut out = format!(
        "queue {}\n  ready {}  in-flight {}  delayed {}  bytes {}\n  oldest ready {} ms, oldest lease held {} ms{}\n  enqueued {}  acked {}  dead-lettered {}  expired {}  dropped {}  redriven {}  released {}\n",
        q.name,
        q.ready,
        q.in_flight,
        q.delayed,
        q.bytes,
        q.oldest_ready_age_ms,
        q.oldest_in_flight_age_ms,
        q.oldest_in_flight_consumer.as_ref().map(|c| format!(" by {c:?}")).unwrap_or_default(),
        c.enqueued,
        c.acked,
        c.dead_lettered,
        c.expired,
        c.dropped,
        c.redriven,
        c.released,
    );
    if let Some(config) = &q.config {
        out.push_str(&format!("  config {}\n", config_json(config)));
    }
    if !q.dead_letter_source_of.is_empty() {
        out.push_str(&format!(
            "  dead-letter queue of {}\n",
            q.dead_letter_source_of.join(", ")
        ));
    }
    out
}

/// A delivery as JSON (body as UTF-8 text when it is, else base16).
pub fn delivery_json(d: &pb::Delivery) -> Value {
    let (body, encoding) = match std::str::from_utf8(&d.body) {
        Ok(text) => (text.to_string(), "utf8"),
        Err(_) => (d.body.iter().map(|b| format!("{b:02x}")).collect(), "hex"),
    };
    json!({
        "id": d.id,
        "receipt": d.receipt,
        "delivery_count": d.delivery_count,
        "body": body,
        "body_encoding": encoding,
        "attributes": d.attributes,
        "group": d.group,
        "enqueued_at_ms": d.enqueued_at_ms,
        "lease_deadline_ms": d.lease_deadline_ms,
        "dead_letter": d.dead_letter.as_ref().map(|dl| json!({
            "source_queue": dl.source_queue, "source_id": dl.source_id,
            "delivery_count": dl.delivery_count, "reason": dl.reason,
        })),
    })
}

/// A delivery as one text line: id, delivery count, receipt, body.
pub fn delivery_line(d: &pb::Delivery) -> String {
    format!(
        "{}\t{}\t{}\t{}",
        d.id,
        d.delivery_count,
        d.receipt,
        printable(&d.body)
    )
}

/// A body as one line of text: valid UTF-8 as it is, with control
/// characters (newlines, tabs, escape sequences) escaped; bytes that are not
/// UTF-8 as `\xNN`. `--json` gives the exact bytes (hex when binary).
pub fn printable(body: &[u8]) -> String {
    let mut out = String::with_capacity(body.len());
    for chunk in body.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

/// Cluster status as JSON; the leader's id is `leader`.
pub fn status_json(s: &pb::StatusResponse) -> Value {
    json!({
        "node_id": s.node_id,
        "leader": s.leader_id,
        "leader_addr": s.leader_addr,
        "state": s.state,
        "term": s.term,
        "last_log_index": s.last_log_index,
        "commit_index": s.commit_index,
        "applied_index": s.applied_index,
        "state_digest": format!("{:016x}", s.state_digest),
        "note": s.note,
        "cluster_id": s.cluster_id,
        "incarnation": s.incarnation,
        "disk": {
            "free_bytes": s.disk_free_bytes,
            "min_free_bytes": s.disk_min_free_bytes,
            "alarm": s.disk_alarm,
        },
        "members": s.members.iter().map(|m| json!({
            "id": m.id, "addr": m.addr, "role": m.role, "matched_index": m.matched_index, "lag": m.lag,
            "disk_alarm": m.disk_alarm, "clock_offset_ms": m.clock_offset_ms,
        })).collect::<Vec<_>>(),
    })
}

/// Cluster status as text.
pub fn status_text(s: &pb::StatusResponse) -> String {
    let leader = match (s.leader_id, &s.leader_addr) {
        (Some(id), Some(addr)) => format!("{id} at {addr}"),
        (Some(id), None) => id.to_string(),
        _ => "unknown".into(),
    };
    if s.members.is_empty()
        && s.note
            .as_deref()
            .is_some_and(|n| n.contains("admin tokens only"))
    {
        // A token that is not an admin's sees who leads, not the rest.
        return format!(
            "node {} ({}), term {}, leader {leader}
  ({})
",
            s.node_id,
            s.state,
            s.term,
            s.note.as_deref().unwrap_or_default()
        );
    }
    let mut out = format!(
        "node {} ({}), term {}, leader {}\n  last log {}  applied {}\n  members:\n",
        s.node_id,
        s.state,
        s.term,
        match (s.leader_id, &s.leader_addr) {
            (Some(id), Some(addr)) => format!("{id} at {addr}"),
            (Some(id), None) => id.to_string(),
            _ => "unknown".into(),
        },
        s.last_log_index,
        s.applied_index,
    );
    if let Some(note) = &s.note {
        out.insert_str(0, &format!("{note}\n"));
    }
    out.insert_str(
        out.find("  members:").unwrap_or(out.len()),
        &format!(
            "  disk {} MiB free (limit {} MiB){}\n",
            s.disk_free_bytes >> 20,
            s.disk_min_free_bytes >> 20,
            if s.disk_alarm {
                ": ALARM, enqueues refused"
            } else {
                ""
            }
        ),
    );
    for m in &s.members {
        let mut flags = String::new();
        if m.disk_alarm {
            flags.push_str("  DISK ALARM");
        }
        if m.clock_offset_ms != 0 {
            flags.push_str(&format!("  clock {:+} ms", m.clock_offset_ms));
        }
        out.push_str(&format!(
            "    {:>3}  {:<22} {:<8} matched {:>8}  lag {}{flags}\n",
            m.id, m.addr, m.role, m.matched_index, m.lag
        ));
    }
    out
}
