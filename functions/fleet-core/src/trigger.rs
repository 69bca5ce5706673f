//! start-install's logic: which SQS messages are EC2 "running" events, which instance ids they
//! carry, and how the batch becomes deterministically named workflow executions.

use std::collections::BTreeMap;

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

/// Parse one SQS message body. Only a JSON object that is an EventBridge event from `aws.ec2`
/// with detail-type "EC2 Instance State-change Notification", `detail.state` "running" and a
/// well-formed `detail.instance-id` is `Running`. The body is read as a JSON value and its fields
/// looked up by name: a JSON array of positional values is not an event (serde's derive would
/// have taken it for the struct).
pub fn parse_message(body: &str) -> Message {
    let value: serde_json::Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => {
            return Message::Malformed {
                reason: format!("body is not JSON: {e}"),
            }
        }
    };
    let Some(event) = value.as_object() else {
        return Message::Malformed {
            reason: format!("body is a JSON {}, not an EventBridge event object", json_kind(&value)),
        };
    };
    // Optional string fields: absent or null is fine, any other type is malformed.
    let text = |name: &str| -> Result<Option<&str>, Message> {
        match event.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(Message::Malformed {
                reason: format!("event field {name:?} is a JSON {}, not a string", json_kind(other)),
            }),
        }
    };
    let fields = (|| Ok((text("id")?, text("source")?, text("detail-type")?, text("time")?)))();
    let (id, source, detail_type, time) = match fields {
        Ok(f) => f,
        Err(m) => return m,
    };
    let (Some(source), Some(detail_type), Some(detail)) = (source, detail_type, event.get("detail")) else {
        return Message::Malformed {
            reason: "body lacks source, detail-type or detail".into(),
        };
    };
    if source != EC2_SOURCE || detail_type != STATE_CHANGE {
        return Message::Ignored {
            reason: format!("foreign event: source {source:?}, detail-type {detail_type:?}"),
        };
    }
    let Some(detail) = detail.as_object() else {
        return Message::Malformed {
            reason: format!(
                "EC2 state-change event whose detail is a JSON {}, not an object",
                json_kind(detail)
            ),
        };
    };
    let Some(instance_id) = detail
        .get("instance-id")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
    else {
        return Message::Malformed {
            reason: "EC2 state-change event without a string detail.instance-id".into(),
        };
    };
    if !is_valid_instance_id(instance_id) {
        return Message::Malformed {
            reason: format!(
                "EC2 state-change event with malformed instance id {:?} (expected i- and 8 or 17 lowercase hex digits)",
                crate::text::clip(instance_id, 64)
            ),
        };
    }
    let Some(state) = detail.get("state").and_then(|v| v.as_str()) else {
        return Message::Malformed {
            reason: format!("EC2 state-change event for {instance_id} without a string detail.state"),
        };
    };
    if state != "running" {
        return Message::Ignored {
            reason: format!(
                "instance {instance_id} entered {:?}, not running",
                crate::text::clip(state, 32)
            ),
        };
    }
    Message::Running {
        event_id: id.unwrap_or_default().to_string(),
        instance_id: instance_id.to_string(),
        time: time.unwrap_or_default().to_string(),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
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
            // Only ASCII digits, so the date and the time split at a character boundary.
            let digits: Vec<char> = earliest.chars().filter(|c| c.is_ascii_digit()).take(12).collect();
            // The prefix is cut (by characters) so that the name keeps within Step Functions' 80.
            let prefix = crate::text::clip(prefix, 40);
            let name = if digits.len() == 12 {
                let date: String = digits[..8].iter().collect();
                let hhmm: String = digits[8..].iter().collect();
                format!("{prefix}-{date}T{hhmm}-{digest}")
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

    fn malformed(body: &str) -> String {
        match parse_message(body) {
            Message::Malformed { reason } => reason,
            other => panic!("{body}: expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn only_a_json_object_is_an_event() {
        // serde's derive takes a sequence of positional values for a struct: this array used to
        // pass as a running event.
        let array = serde_json::json!([
            "e1",
            "aws.ec2",
            "EC2 Instance State-change Notification",
            "2026-11-25T18:01:02Z",
            {"instance-id": "i-0123456789abcdef0", "state": "running"}
        ])
        .to_string();
        assert!(malformed(&array).contains("array"), "{}", malformed(&array));
        let array2 = serde_json::json!([
            "aws.ec2",
            "EC2 Instance State-change Notification",
            {"instance-id": "i-0123456789abcdef0", "state": "running"}
        ])
        .to_string();
        malformed(&array2);
        for body in ["\"aws.ec2\"", "42", "null", "true"] {
            malformed(body);
        }
    }

    #[test]
    fn fields_must_have_the_right_types_and_values() {
        let base = serde_json::json!({
            "id": "e1", "source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification",
            "time": "2026-11-25T18:01:02Z", "detail": {"instance-id": "i-0123456789abcdef0", "state": "running"}
        });
        assert!(matches!(parse_message(&base.to_string()), Message::Running { .. }));
        let with = |path: &[&str], v: serde_json::Value| {
            let mut e = base.clone();
            let mut at = &mut e;
            for p in &path[..path.len() - 1] {
                at = at.get_mut(*p).unwrap();
            }
            at[path[path.len() - 1]] = v;
            e.to_string()
        };
        malformed(&with(&["source"], serde_json::json!(["aws.ec2"])));
        malformed(&with(&["detail-type"], serde_json::json!(7)));
        malformed(&with(
            &["detail"],
            serde_json::json!(["i-0123456789abcdef0", "running"]),
        ));
        malformed(&with(&["detail", "instance-id"], serde_json::json!(12)));
        malformed(&with(
            &["detail", "instance-id"],
            serde_json::json!("i-0123456789ABCDEF0"),
        ));
        malformed(&with(
            &["detail", "instance-id"],
            serde_json::json!("i-0123456789abcdef"),
        ));
        malformed(&with(&["detail", "state"], serde_json::json!({"name": "running"})));
        let r = malformed(&with(
            &["detail", "instance-id"],
            serde_json::json!("i-日本語".repeat(50)),
        ));
        assert!(r.contains("malformed instance id"), "{r}");
        // well-formed, but not ours: logged and dropped
        assert!(matches!(
            parse_message(&with(&["source"], serde_json::json!("aws.ec2.fake"))),
            Message::Ignored { .. }
        ));
        assert!(matches!(
            parse_message(&with(
                &["detail-type"],
                serde_json::json!("EC2 Spot Instance Interruption Warning")
            )),
            Message::Ignored { .. }
        ));
        assert!(matches!(
            parse_message(&with(&["detail", "state"], serde_json::json!("pending"))),
            Message::Ignored { .. }
        ));
    }

    #[test]
    fn names_stay_within_80_characters_with_a_multibyte_prefix() {
        let msgs = vec![running("m1", "e1", "i-0000000000000000a")];
        let prefix = format!("déploiement-été-{}", "日本語".repeat(20));
        let plan = plan_executions(&msgs, 10, &prefix);
        assert!(plan[0].name.chars().count() <= 80, "{}", plan[0].name);
        assert!(plan[0].name.contains("-20261125T1801-"), "{}", plan[0].name);
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
