//! start-install's logic: which SQS messages are EC2 "running" events, which instance ids they
//! carry, and how the batch becomes deterministically named workflow executions.

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::model::is_valid_instance_id;

pub const EC2_SOURCE: &str = "aws.ec2";
pub const STATE_CHANGE: &str = "EC2 Instance State-change Notification";

/// What one SQS message body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// An EC2 instance entered `running`.
    Running {
        event_id: String,
        instance_id: String,
        time: String,
    },
    /// A well-formed event that is not ours to act on: logged with the reason and dropped.
    Ignored { reason: String },
    /// Not an EventBridge event at all: reported as a batch item failure so that it ends in the DLQ.
    Malformed { reason: String },
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: Option<String>,
    source: Option<String>,
    #[serde(rename = "detail-type")]
    detail_type: Option<String>,
    #[serde(default)]
    time: Option<String>,
    detail: Option<serde_json::Value>,
}

pub fn parse_message(body: &str) -> Message {
    let env: Envelope = match serde_json::from_str(body) {
        Ok(e) => e,
        Err(e) => {
            return Message::Malformed {
                reason: format!("body is not an EventBridge event: {e}"),
            }
        }
    };
    let (Some(source), Some(detail_type), Some(detail)) = (env.source, env.detail_type, env.detail) else {
        return Message::Malformed {
            reason: "body lacks source, detail-type or detail".into(),
        };
    };
    if source != EC2_SOURCE || detail_type != STATE_CHANGE {
        return Message::Ignored {
            reason: format!("foreign event: source {source:?}, detail-type {detail_type:?}"),
        };
    }
    let state = detail.get("state").and_then(|v| v.as_str()).unwrap_or("");
    let instance_id = detail.get("instance-id").and_then(|v| v.as_str()).unwrap_or("");
    if instance_id.is_empty() {
        return Message::Malformed {
            reason: "EC2 state-change event without detail.instance-id".into(),
        };
    }
    if !is_valid_instance_id(instance_id) {
        return Message::Malformed {
            reason: format!("EC2 state-change event with malformed instance id {instance_id:?}"),
        };
    }
    if state != "running" {
        return Message::Ignored {
            reason: format!("instance {instance_id} entered {state:?}, not running"),
        };
    }
    Message::Running {
        event_id: env.id.unwrap_or_default(),
        instance_id: instance_id.to_string(),
        time: env.time.unwrap_or_default(),
    }
}

/// A workflow execution to start: its deterministic name, its instances, and the SQS messages
/// that must be reported as failed if it cannot be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedExecution {
    pub name: String,
    pub instance_ids: Vec<String>,
    pub message_ids: Vec<String>,
}

/// Deduplicate instance ids across the batch and split them into executions of at most
/// `max_per_execution`. The name hashes the instance ids and the events' ids, so an SQS
/// redelivery of the same messages gives the same names (Step Functions then refuses to start
/// the same work twice), while a later start of the same instance gets a new name.
pub fn plan_executions(running: &[(String, Message)], max_per_execution: usize, prefix: &str) -> Vec<PlannedExecution> {
    // instance id -> (event ids, message ids, earliest time)
    let mut by_instance: BTreeMap<&str, (Vec<&str>, Vec<&str>, &str)> = BTreeMap::new();
    for (message_id, msg) in running {
        if let Message::Running {
            event_id,
            instance_id,
            time,
        } = msg
        {
            let e = by_instance
                .entry(instance_id.as_str())
                .or_insert((Vec::new(), Vec::new(), time.as_str()));
            e.0.push(event_id.as_str());
            e.1.push(message_id.as_str());
            if time.as_str() < e.2 {
                e.2 = time.as_str();
            }
        }
    }
    let entries: Vec<_> = by_instance.into_iter().collect();
    entries
        .chunks(max_per_execution.max(1))
        .map(|chunk| {
            let mut h = Sha256::new();
            let mut message_ids = Vec::new();
            let mut earliest = "";
            for (instance_id, (event_ids, msg_ids, time)) in chunk {
                h.update(instance_id.as_bytes());
                let mut ev = event_ids.clone();
                ev.sort();
                for e in ev {
                    h.update(b"/");
                    h.update(e.as_bytes());
                }
                h.update(b"\n");
                message_ids.extend(msg_ids.iter().map(|m| m.to_string()));
                if earliest.is_empty() || *time < earliest {
                    earliest = time;
                }
            }
            message_ids.sort();
            message_ids.dedup();
            let digest: String = h.finalize().iter().take(10).map(|b| format!("{b:02x}")).collect();
            let stamp: String = earliest.chars().filter(|c| c.is_ascii_digit()).take(12).collect();
            let name = if stamp.len() == 12 {
                format!("{prefix}-{}T{}-{digest}", &stamp[..8], &stamp[8..12])
            } else {
                format!("{prefix}-{digest}")
            };
            PlannedExecution {
                name,
                instance_ids: chunk.iter().map(|(id, _)| id.to_string()).collect(),
                message_ids,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, instance: &str, state: &str) -> String {
        serde_json::json!({
            "version": "0", "id": id, "source": "aws.ec2",
            "detail-type": "EC2 Instance State-change Notification",
            "time": "2026-11-25T18:01:02Z", "region": "us-east-1", "account": "123456789012",
            "resources": [format!("arn:aws:ec2:us-east-1:123456789012:instance/{instance}")],
            "detail": {"instance-id": instance, "state": state}
        })
        .to_string()
    }

    #[test]
    fn accepts_running_and_explains_the_rest() {
        assert!(matches!(
            parse_message(&event("e1", "i-0123456789abcdef0", "running")),
            Message::Running { .. }
        ));
        assert!(matches!(
            parse_message(&event("e1", "i-0123456789abcdef0", "stopped")),
            Message::Ignored { .. }
        ));
        assert!(matches!(parse_message("not json"), Message::Malformed { .. }));
        assert!(matches!(parse_message("{}"), Message::Malformed { .. }));
        assert!(matches!(
            parse_message(&event("e1", "i-BAD", "running")),
            Message::Malformed { .. }
        ));
        let foreign =
            serde_json::json!({"source": "aws.s3", "detail-type": "Object Created", "detail": {}}).to_string();
        match parse_message(&foreign) {
            Message::Ignored { reason } => assert!(reason.contains("aws.s3")),
            other => panic!("{other:?}"),
        }
    }

    fn running(msg: &str, ev: &str, inst: &str) -> (String, Message) {
        (msg.to_string(), parse_message(&event(ev, inst, "running")))
    }

    #[test]
    fn dedupes_and_chunks_with_stable_names() {
        let msgs = vec![
            running("m1", "e1", "i-0000000000000000a"),
            running("m2", "e2", "i-0000000000000000b"),
            running("m3", "e3", "i-0000000000000000a"), // duplicate running event
            running("m4", "e4", "i-0000000000000000c"),
        ];
        let plan = plan_executions(&msgs, 2, "launch");
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].instance_ids, vec!["i-0000000000000000a", "i-0000000000000000b"]);
        assert_eq!(plan[0].message_ids, vec!["m1", "m2", "m3"]);
        assert_eq!(plan[1].instance_ids, vec!["i-0000000000000000c"]);
        assert!(plan[0].name.starts_with("launch-20261125T1801-"), "{}", plan[0].name);
        assert!(plan[0].name.len() <= 80);
        // redelivery in another order: same names
        let mut again = msgs.clone();
        again.reverse();
        assert_eq!(plan_executions(&again, 2, "launch"), plan);
        // a later start of the same instance: a new event id, a new name
        let later = vec![running("m9", "e9", "i-0000000000000000c")];
        assert_ne!(plan_executions(&later, 2, "launch")[0].name, plan[1].name);
    }
}
