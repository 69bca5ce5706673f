//! The SSM Agent against the install documents' minimum (routing::DocumentSpec::min_agent_version):
//! which managed instances need AWS-UpdateSSMAgent before their install, and the reasons of those
//! that end AgentTooOld. Pure.

use crate::model::ManagedInstance;
use crate::routing;

/// The minimum SSM Agent version the instance's install document needs, when its agent is older.
/// None when the agent is recent enough, when the platform has no document, or when SSM reports no
/// readable version (then the install is sent, and the document's exit code 2 says what happened).
pub fn needs_update(m: &ManagedInstance) -> Option<&'static str> {
    let minimum = routing::min_agent_version(&m.platform_type, &m.platform_name)?;
    routing::older_than(&m.agent_version, minimum)
        .unwrap_or(false)
        .then_some(minimum)
}

/// "SSM Agent 3.3.1142.0 is older than 3.3.2746.0, which the install document needs"
pub fn too_old(version: &str, minimum: &str) -> String {
    let version = if version.trim().is_empty() {
        "(version unknown)"
    } else {
        version.trim()
    };
    format!(
        "SSM Agent {version} is older than {minimum}, which the install document needs (its parameters reach the script as environment variables, interpolationType ENV_VAR)"
    )
}

/// The reason when automatic agent updates are turned off (AutoUpdateSsmAgent=false): nothing is sent.
pub fn update_disabled_reason(version: &str, minimum: &str) -> String {
    format!(
        "{}: update it (run AWS-UpdateSSMAgent on the instance, or deploy the stack with AutoUpdateSsmAgent=true) and run the install again; nothing was sent because AutoUpdateSsmAgent is false",
        too_old(version, minimum)
    )
}

/// The reason when AWS-UpdateSSMAgent succeeded but SSM still reports an old agent after the bound.
pub fn still_old_reason(version: &str, minimum: &str, waited: &str) -> String {
    format!(
        "{} and still reports it {waited} after AWS-UpdateSSMAgent succeeded: check the agent on the instance (restart it, or update it by hand) and run the install again",
        too_old(version, minimum)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(t: &str, name: &str, agent: &str) -> ManagedInstance {
        ManagedInstance {
            instance_id: "i-0123456789abcdef0".into(),
            platform_type: t.into(),
            platform_name: name.into(),
            platform_version: "1".into(),
            agent_version: agent.into(),
            verify: false,
        }
    }

    #[test]
    fn only_an_agent_older_than_the_documents_minimum_needs_an_update() {
        assert_eq!(needs_update(&inst("Linux", "Ubuntu", "3.3.1142.0")), Some("3.3.2746.0"));
        assert_eq!(
            needs_update(&inst("Windows", "Microsoft Windows Server 2019", "3.2.582.0")),
            Some("3.3.2746.0")
        );
        assert_eq!(needs_update(&inst("Linux", "Ubuntu", "3.3.2746.0")), None);
        assert_eq!(needs_update(&inst("Linux", "Ubuntu", "3.3.3050.0")), None);
        assert_eq!(needs_update(&inst("Linux", "Ubuntu", "3.10.0.0")), None);
        // no document for the platform: nothing to update for
        assert_eq!(needs_update(&inst("MacOS", "macOS", "1.0.0.0")), None);
        // unknown version: not held back
        assert_eq!(needs_update(&inst("Linux", "Ubuntu", "")), None);
    }

    #[test]
    fn reasons_say_what_to_do() {
        let r = update_disabled_reason("3.3.1142.0", "3.3.2746.0");
        assert!(
            r.starts_with("SSM Agent 3.3.1142.0 is older than 3.3.2746.0, which the install document needs"),
            "{r}"
        );
        assert!(
            r.contains("AWS-UpdateSSMAgent") && r.contains("AutoUpdateSsmAgent=true"),
            "{r}"
        );
        let r = still_old_reason("3.3.1142.0", "3.3.2746.0", "15 min");
        assert!(r.contains("15 min after AWS-UpdateSSMAgent succeeded"), "{r}");
        assert!(too_old("", "3.3.2746.0").starts_with("SSM Agent (version unknown) is older"));
    }
}
