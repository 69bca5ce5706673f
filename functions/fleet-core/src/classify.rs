//! filter-managed's decision for each instance: managed, still registering, unmanaged (with a
//! reason a person can act on) or skipped. Pure: the facts come from EC2 and SSM adapters.

use chrono::{DateTime, Duration, Utc};

use crate::model::{is_valid_instance_id, InstanceNote, ManagedInstance, ReasonCode};

/// What EC2 says about an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Facts {
    pub instance_id: String,
    /// pending, running, shutting-down, terminated, stopping, stopped
    pub state: String,
    pub launch_time: Option<DateTime<Utc>>,
    pub has_instance_profile: bool,
    /// The opt-out tag key is present (whatever its value: the key alone opts out).
    pub opted_out: bool,
    /// EC2's PlatformDetails, e.g. "Linux/UNIX", "Windows", "Red Hat Enterprise Linux".
    pub platform_details: Option<String>,
}

/// What SSM's DescribeInstanceInformation says about an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsmFacts {
    pub instance_id: String,
    /// Online, ConnectionLost, Inactive
    pub ping_status: String,
    pub last_ping: Option<DateTime<Utc>>,
    pub platform_type: String,
    pub platform_name: String,
    pub platform_version: String,
    pub agent_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    Managed(ManagedInstance),
    PendingRegistration,
    Unmanaged(InstanceNote),
    Skipped(InstanceNote),
}

/// Classify one instance. `deadline` counts from its launch time.
pub fn classify(
    instance_id: &str,
    ec2: Option<&Ec2Facts>,
    ssm: Option<&SsmFacts>,
    now: DateTime<Utc>,
    deadline: Duration,
    opt_out_tag: &str,
) -> Classification {
    let note = |code: ReasonCode, reason: String, platform: Option<String>| InstanceNote {
        instance_id: instance_id.to_string(),
        reason_code: code,
        reason,
        platform,
    };
    if !is_valid_instance_id(instance_id) {
        return Classification::Skipped(note(
            ReasonCode::MalformedInstanceId,
            "not an EC2 instance id (expected i- and 8 or 17 lowercase hex digits)".into(),
            None,
        ));
    }
    let Some(ec2) = ec2 else {
        return Classification::Skipped(note(
            ReasonCode::NotFound,
            "EC2 does not know this instance in this account and region (terminated over an hour ago, or a wrong id)"
                .into(),
            None,
        ));
    };
    let platform = ssm
        .map(|s| platform_label(&s.platform_type, &s.platform_name))
        .or_else(|| ec2.platform_details.clone());
    match ec2.state.as_str() {
        "terminated" | "shutting-down" => {
            return Classification::Skipped(note(
                ReasonCode::Terminated,
                format!("instance is {}", ec2.state),
                platform,
            ))
        }
        "stopped" | "stopping" => {
            return Classification::Skipped(note(
                ReasonCode::Stopped,
                format!("instance is {}; it is installed on its next start", ec2.state),
                platform,
            ))
        }
        _ => {}
    }
    if ec2.opted_out {
        return Classification::Skipped(note(
            ReasonCode::OptedOut,
            format!("opted out by tag {opt_out_tag}"),
            platform,
        ));
    }
    if let Some(s) = ssm.filter(|s| s.ping_status == "Online") {
        return Classification::Managed(ManagedInstance {
            instance_id: instance_id.to_string(),
            platform_type: s.platform_type.clone(),
            platform_name: s.platform_name.clone(),
            platform_version: s.platform_version.clone(),
            agent_version: s.agent_version.clone(),
            verify: false,
        });
    }
    let within_deadline = match ec2.launch_time {
        Some(launched) => now < launched + deadline,
        None => ec2.state == "pending",
    };
    if within_deadline {
        return Classification::PendingRegistration;
    }
    let waited = format!(
        "{} after launch",
        age(ec2.launch_time.map(|launched| now - launched).unwrap_or(deadline))
    );
    let unmanaged = if !ec2.has_instance_profile {
        note(
            ReasonCode::NoInstanceProfile,
            format!(
                "no IAM instance profile, so the SSM agent cannot register: attach a role with AmazonSSMManagedInstanceCore, or turn on Default Host Management Configuration for the account (fleet-install prereq --apply --enable-default-host-management; it needs IMDSv2 and SSM Agent 3.2.582.0 or later) (not registered {waited})"
            ),
            platform,
        )
    } else {
        match ssm {
            Some(s) if s.ping_status == "ConnectionLost" => note(
                ReasonCode::ConnectionLost,
                format!(
                    "SSM agent lost its connection (last ping {}): check the agent service and the route to the SSM endpoints",
                    s.last_ping.map(|t| t.to_rfc3339()).unwrap_or_else(|| "unknown".into())
                ),
                platform,
            ),
            Some(s) => note(
                ReasonCode::AgentInactive,
                format!("SSM reports the instance {}", s.ping_status),
                platform,
            ),
            None => note(
                ReasonCode::AgentNotReporting,
                format!(
                    "SSM agent never registered {waited}: agent missing or stopped, role lacks AmazonSSMManagedInstanceCore, or no route to the SSM endpoints"
                ),
                platform,
            ),
        }
    };
    Classification::Unmanaged(unmanaged)
}

/// A short platform label for summaries: the distribution family, not the exact build.
pub fn platform_label(platform_type: &str, platform_name: &str) -> String {
    match crate::routing::family_of(platform_type, platform_name) {
        Some(f) => f.label().to_string(),
        None if !platform_name.is_empty() => platform_name.to_string(),
        None => platform_type.to_string(),
    }
}

/// A duration as people read it in a reason: "45s", "12 min", "5 h", "7 days".
pub fn age(d: Duration) -> String {
    let secs = d.num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s if s < 48 * 3600 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "i-0123456789abcdef0";

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn ec2(state: &str, launched_secs_ago: i64) -> Ec2Facts {
        Ec2Facts {
            instance_id: ID.into(),
            state: state.into(),
            launch_time: Some(now() - Duration::seconds(launched_secs_ago)),
            has_instance_profile: true,
            opted_out: false,
            platform_details: Some("Linux/UNIX".into()),
        }
    }

    fn ssm(ping: &str) -> SsmFacts {
        SsmFacts {
            instance_id: ID.into(),
            ping_status: ping.into(),
            last_ping: Some(now() - Duration::seconds(3600)),
            platform_type: "Linux".into(),
            platform_name: "Ubuntu".into(),
            platform_version: "22.04".into(),
            agent_version: "3.3.0.0".into(),
        }
    }

    fn run(ec2: Option<&Ec2Facts>, ssm: Option<&SsmFacts>) -> Classification {
        classify(ID, ec2, ssm, now(), Duration::seconds(900), "fleet-install:opt-out")
    }

    fn code(c: Classification) -> ReasonCode {
        match c {
            Classification::Unmanaged(n) | Classification::Skipped(n) => n.reason_code,
            other => panic!("expected a note, got {other:?}"),
        }
    }

    #[test]
    fn online_instance_is_managed_with_platform() {
        match run(Some(&ec2("running", 60)), Some(&ssm("Online"))) {
            Classification::Managed(m) => {
                assert_eq!(m.platform_name, "Ubuntu");
                assert_eq!(m.agent_version, "3.3.0.0");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unregistered_inside_deadline_is_pending() {
        assert_eq!(
            run(Some(&ec2("running", 60)), None),
            Classification::PendingRegistration
        );
        assert_eq!(run(Some(&ec2("pending", 5)), None), Classification::PendingRegistration);
    }

    #[test]
    fn unregistered_after_deadline_is_unmanaged_with_actionable_reason() {
        assert_eq!(
            code(run(Some(&ec2("running", 901)), None)),
            ReasonCode::AgentNotReporting
        );
        let mut no_profile = ec2("running", 901);
        no_profile.has_instance_profile = false;
        let c = run(Some(&no_profile), None);
        match &c {
            Classification::Unmanaged(n) => {
                assert!(n.reason.contains("AmazonSSMManagedInstanceCore"));
                assert!(
                    n.reason.contains("prereq --apply --enable-default-host-management"),
                    "{}",
                    n.reason
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(code(c), ReasonCode::NoInstanceProfile);
        assert_eq!(
            code(run(Some(&ec2("running", 5000)), Some(&ssm("ConnectionLost")))),
            ReasonCode::ConnectionLost
        );
        assert_eq!(
            code(run(Some(&ec2("running", 5000)), Some(&ssm("Inactive")))),
            ReasonCode::AgentInactive
        );
    }

    #[test]
    fn connection_lost_inside_deadline_waits() {
        assert_eq!(
            run(Some(&ec2("running", 30)), Some(&ssm("ConnectionLost"))),
            Classification::PendingRegistration
        );
    }

    #[test]
    fn skips_are_explained() {
        assert_eq!(
            code(run(Some(&ec2("stopped", 10)), Some(&ssm("Online")))),
            ReasonCode::Stopped
        );
        assert_eq!(code(run(Some(&ec2("terminated", 10)), None)), ReasonCode::Terminated);
        assert_eq!(code(run(None, None)), ReasonCode::NotFound);
        let mut opted = ec2("running", 10);
        opted.opted_out = true;
        assert_eq!(code(run(Some(&opted), Some(&ssm("Online")))), ReasonCode::OptedOut);
        assert_eq!(
            code(classify("bogus", None, None, now(), Duration::seconds(1), "t")),
            ReasonCode::MalformedInstanceId
        );
    }

    #[test]
    fn ages_read_as_people_say_them() {
        assert_eq!(age(Duration::seconds(45)), "45s");
        assert_eq!(age(Duration::seconds(900)), "15 min");
        assert_eq!(age(Duration::hours(5)), "5 h");
        assert_eq!(age(Duration::days(7)), "7 days");
        assert_eq!(age(Duration::seconds(-3)), "0s");
    }
}
