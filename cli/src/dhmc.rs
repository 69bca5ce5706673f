//! Default Host Management Configuration (DHMC): one SSM service setting per account and Region
//! that names an IAM role SSM gives to every EC2 instance, so that its SSM Agent can register
//! without an instance profile (IMDSv2 and SSM Agent 3.2.582.0 or later needed).
//!
//! prereq reads the setting (GetServiceSetting) and, with `--apply --enable-default-host-management`,
//! creates or reuses the role AWSSystemsManagerDefaultEC2InstanceManagementRole (path /service-role/,
//! as the console creates it; trusted by ssm.amazonaws.com), attaches
//! AmazonSSMManagedEC2InstanceDefaultPolicy and sets the setting to the role (UpdateServiceSetting).
//! A setting that is already on is left as it is, whichever role it names.

use aws_sdk_iam::operation::get_role::GetRoleError;
use serde::Serialize;

use crate::commands::prereq::{has_policy, parse_trust_policy, service_can_assume};

/// The SSM service setting that holds the DHMC role (the name, with its path if not /).
pub const DHMC_SETTING_ID: &str = "/ssm/managed-instance/default-ec2-instance-management-role";
/// The role DHMC uses when prereq creates it: the console's name...
pub const DHMC_ROLE_NAME: &str = "AWSSystemsManagerDefaultEC2InstanceManagementRole";
/// ... and path.
pub const DHMC_ROLE_PATH: &str = "/service-role/";
/// The AWS managed policy the DHMC role needs.
pub const DHMC_POLICY_NAME: &str = "AmazonSSMManagedEC2InstanceDefaultPolicy";
/// The service that assumes the DHMC role.
pub const DHMC_PRINCIPAL: &str = "ssm.amazonaws.com";
/// The trust policy prereq creates the role with.
pub const DHMC_TRUST_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ssm.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
/// What GetServiceSetting returns for a setting nobody has set.
pub const UNSET_VALUE: &str = "$None";

/// `arn:<partition>:iam::aws:policy/AmazonSSMManagedEC2InstanceDefaultPolicy`.
pub fn dhmc_policy_arn(partition: &str) -> String {
    format!("arn:{partition}:iam::aws:policy/{DHMC_POLICY_NAME}")
}

/// The setting's value for a role: its name, preceded by its path without the leading slash
/// (`service-role/AWSSystemsManagerDefaultEC2InstanceManagementRole`; a role at / is its name).
pub fn setting_value(path: &str, name: &str) -> String {
    format!("{}{name}", path.trim_start_matches('/'))
}

/// One step of turning DHMC on: the role, its policy, the setting.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DhmcStep {
    /// role, policy, setting
    pub step: String,
    /// What the step is about: the role (path and name), the policy ARN, the setting's value.
    pub target: String,
    /// exists, created, would create, already, attached, would attach, already on, turned on,
    /// would turn on, failed
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DhmcReport {
    pub setting_id: String,
    /// on, off, unknown: as read before any change.
    pub state: String,
    /// The role the setting names, when on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Why the state is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// --enable-default-host-management was given.
    pub enable_requested: bool,
    /// What was done (with --apply) or would be done to turn it on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<DhmcStep>,
}

impl DhmcReport {
    /// A step failed, or turning DHMC on was asked for and the setting could not be read.
    pub fn failed(&self) -> bool {
        self.steps.iter().any(|s| s.action == "failed")
    }

    pub fn is_on(&self) -> bool {
        self.state == "on"
    }
}

/// Read the setting; with `enable`, turn DHMC on (only if `apply`; otherwise say what would be
/// done). `partition` names the managed policy.
pub async fn dhmc(
    ssm: &aws_sdk_ssm::Client,
    iam: &aws_sdk_iam::Client,
    partition: &str,
    enable: bool,
    apply: bool,
) -> DhmcReport {
    let mut r = DhmcReport {
        setting_id: DHMC_SETTING_ID.to_string(),
        state: "unknown".into(),
        role: None,
        reason: None,
        enable_requested: enable,
        steps: Vec::new(),
    };
    match ssm.get_service_setting().setting_id(DHMC_SETTING_ID).send().await {
        Ok(out) => {
            let value = out
                .service_setting()
                .and_then(|s| s.setting_value())
                .map(str::trim)
                .filter(|v| !v.is_empty() && *v != UNSET_VALUE);
            match value {
                Some(v) => {
                    r.state = "on".into();
                    r.role = Some(v.to_string());
                }
                None => r.state = "off".into(),
            }
        }
        Err(e) => r.reason = Some(format!("ssm:GetServiceSetting: {}", crate::aws::message(&e))),
    }
    if !enable {
        return r;
    }
    let step = |step: &str, target: &str, action: &str, reason: Option<String>| DhmcStep {
        step: step.into(),
        target: target.into(),
        action: action.into(),
        reason,
    };
    match r.state.as_str() {
        "on" => {
            let role = r.role.clone().unwrap_or_default();
            r.steps.push(step(
                "setting",
                &role,
                "already on",
                Some("the setting already names a role; prereq leaves it as it is".into()),
            ));
            return r;
        }
        "unknown" => {
            r.steps.push(step(
                "setting",
                DHMC_SETTING_ID,
                "failed",
                Some(format!(
                    "cannot read the setting, so prereq does not change it (it may already name another role): {}",
                    r.reason.clone().unwrap_or_default()
                )),
            ));
            return r;
        }
        _ => {}
    }

    // The role: reuse one of that name wherever its path, or create it at /service-role/.
    let policy_arn = dhmc_policy_arn(partition);
    let default_value = setting_value(DHMC_ROLE_PATH, DHMC_ROLE_NAME);
    let (path, created) = match iam.get_role().role_name(DHMC_ROLE_NAME).send().await {
        Ok(out) => {
            let Some(role) = out.role() else {
                r.steps.push(step(
                    "role",
                    DHMC_ROLE_NAME,
                    "failed",
                    Some("iam:GetRole returned no role".into()),
                ));
                return r;
            };
            let value = setting_value(role.path(), role.role_name());
            let trusted = role
                .assume_role_policy_document()
                .ok_or_else(|| "IAM returned no trust policy".to_string())
                .and_then(|d| parse_trust_policy(d).map_err(|e| format!("{e:#}")))
                .map(|p| service_can_assume(&p, "ssm"));
            match trusted {
                Ok(true) => r.steps.push(step("role", &value, "exists", None)),
                Ok(false) => {
                    r.steps.push(step(
                        "role",
                        &value,
                        "failed",
                        Some(format!(
                            "the role exists but its trust policy does not let {DHMC_PRINCIPAL} assume it: allow sts:AssumeRole for {DHMC_PRINCIPAL} (prereq does not change trust policies)"
                        )),
                    ));
                    return r;
                }
                Err(why) => {
                    r.steps.push(step(
                        "role",
                        &value,
                        "failed",
                        Some(format!("cannot read the role's trust policy: {why}")),
                    ));
                    return r;
                }
            }
            (role.path().to_string(), false)
        }
        Err(e) if matches!(e.as_service_error(), Some(GetRoleError::NoSuchEntityException(_))) => {
            if !apply {
                r.steps.push(step(
                    "role",
                    &default_value,
                    "would create",
                    Some(format!("trusted by {DHMC_PRINCIPAL}")),
                ));
                r.steps.push(step("policy", &policy_arn, "would attach", None));
                r.steps.push(step("setting", &default_value, "would turn on", None));
                return r;
            }
            match iam
                .create_role()
                .role_name(DHMC_ROLE_NAME)
                .path(DHMC_ROLE_PATH)
                .assume_role_policy_document(DHMC_TRUST_POLICY)
                .description(
                    "Default Host Management Configuration: SSM gives this role to EC2 instances without an instance profile (created by fleet-install prereq)",
                )
                .send()
                .await
            {
                Ok(out) => {
                    let path = out
                        .role()
                        .map(|role| role.path().to_string())
                        .unwrap_or_else(|| DHMC_ROLE_PATH.to_string());
                    r.steps.push(step(
                        "role",
                        &setting_value(&path, DHMC_ROLE_NAME),
                        "created",
                        Some(format!("trusted by {DHMC_PRINCIPAL}")),
                    ));
                    (path, true)
                }
                Err(e) => {
                    r.steps.push(step(
                        "role",
                        &default_value,
                        "failed",
                        Some(format!("iam:CreateRole: {}", crate::aws::message(&e))),
                    ));
                    return r;
                }
            }
        }
        Err(e) => {
            r.steps.push(step(
                "role",
                DHMC_ROLE_NAME,
                "failed",
                Some(format!("iam:GetRole: {}", crate::aws::message(&e))),
            ));
            return r;
        }
    };
    let value = setting_value(&path, DHMC_ROLE_NAME);

    // The policy: a new role has none; an existing one may have it already.
    let has = if created {
        Ok(false)
    } else {
        has_policy(iam, DHMC_ROLE_NAME, &policy_arn)
            .await
            .map_err(|e| format!("iam:ListAttachedRolePolicies: {e}"))
    };
    match has {
        Ok(true) => r.steps.push(step("policy", &policy_arn, "already", None)),
        Ok(false) if !apply => r.steps.push(step("policy", &policy_arn, "would attach", None)),
        Ok(false) => match iam
            .attach_role_policy()
            .role_name(DHMC_ROLE_NAME)
            .policy_arn(&policy_arn)
            .send()
            .await
        {
            Ok(_) => r.steps.push(step("policy", &policy_arn, "attached", None)),
            Err(e) => {
                r.steps.push(step(
                    "policy",
                    &policy_arn,
                    "failed",
                    Some(format!("iam:AttachRolePolicy: {}", crate::aws::message(&e))),
                ));
                return r;
            }
        },
        Err(why) => {
            r.steps.push(step("policy", &policy_arn, "failed", Some(why)));
            return r;
        }
    }

    // The setting.
    if !apply {
        r.steps.push(step("setting", &value, "would turn on", None));
        return r;
    }
    match ssm
        .update_service_setting()
        .setting_id(DHMC_SETTING_ID)
        .setting_value(&value)
        .send()
        .await
    {
        Ok(_) => r.steps.push(step("setting", &value, "turned on", None)),
        Err(e) => r.steps.push(step(
            "setting",
            &value,
            "failed",
            Some(format!(
                "ssm:UpdateServiceSetting: {} (the role is ready: run prereq --apply --enable-default-host-management again)",
                crate::aws::message(&e)
            )),
        )),
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_iam::operation::attach_role_policy::AttachRolePolicyOutput;
    use aws_sdk_iam::operation::create_role::CreateRoleOutput;
    use aws_sdk_iam::operation::get_role::GetRoleOutput;
    use aws_sdk_iam::operation::list_attached_role_policies::ListAttachedRolePoliciesOutput;
    use aws_sdk_iam::types::error::NoSuchEntityException;
    use aws_sdk_iam::types::{AttachedPolicy, Role};
    use aws_sdk_ssm::operation::get_service_setting::{GetServiceSettingError, GetServiceSettingOutput};
    use aws_sdk_ssm::operation::update_service_setting::UpdateServiceSettingOutput;
    use aws_sdk_ssm::types::ServiceSetting;
    use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};

    const POLICY: &str = "arn:aws:iam::aws:policy/AmazonSSMManagedEC2InstanceDefaultPolicy";
    const VALUE: &str = "service-role/AWSSystemsManagerDefaultEC2InstanceManagementRole";

    fn setting(value: &'static str) -> Rule {
        mock!(aws_sdk_ssm::Client::get_service_setting)
            .match_requests(|r| r.setting_id() == Some(DHMC_SETTING_ID))
            .then_output(move || {
                GetServiceSettingOutput::builder()
                    .service_setting(
                        ServiceSetting::builder()
                            .setting_id(DHMC_SETTING_ID)
                            .setting_value(value)
                            .build(),
                    )
                    .build()
            })
    }

    fn update() -> Rule {
        mock!(aws_sdk_ssm::Client::update_service_setting)
            .match_requests(|r| r.setting_id() == Some(DHMC_SETTING_ID) && r.setting_value() == Some(VALUE))
            .then_output(|| UpdateServiceSettingOutput::builder().build())
    }

    fn role(path: &str, trust: &str) -> Role {
        Role::builder()
            .role_name(DHMC_ROLE_NAME)
            .path(path)
            .role_id("AROADHMC")
            .arn(format!("arn:aws:iam::123456789012:role{path}{DHMC_ROLE_NAME}"))
            .create_date(aws_smithy_types::DateTime::from_secs(0))
            .assume_role_policy_document(trust)
            .build()
            .unwrap()
    }

    fn no_role() -> Rule {
        mock!(aws_sdk_iam::Client::get_role).then_error(|| {
            GetRoleError::NoSuchEntityException(
                NoSuchEntityException::builder()
                    .message("The role with name AWSSystemsManagerDefaultEC2InstanceManagementRole cannot be found.")
                    .build(),
            )
        })
    }

    fn create() -> Rule {
        mock!(aws_sdk_iam::Client::create_role)
            .match_requests(|r| {
                r.role_name() == Some(DHMC_ROLE_NAME)
                    && r.path() == Some(DHMC_ROLE_PATH)
                    && r.assume_role_policy_document().is_some_and(|d| {
                        let p = parse_trust_policy(d).unwrap();
                        service_can_assume(&p, "ssm") && !service_can_assume(&p, "ec2")
                    })
            })
            .then_output(|| {
                CreateRoleOutput::builder()
                    .role(role(DHMC_ROLE_PATH, DHMC_TRUST_POLICY))
                    .build()
            })
    }

    fn attach() -> Rule {
        mock!(aws_sdk_iam::Client::attach_role_policy)
            .match_requests(|r| r.role_name() == Some(DHMC_ROLE_NAME) && r.policy_arn() == Some(POLICY))
            .then_output(|| AttachRolePolicyOutput::builder().build())
    }

    fn steps(r: &DhmcReport) -> Vec<(&str, &str, &str)> {
        r.steps
            .iter()
            .map(|s| (s.step.as_str(), s.target.as_str(), s.action.as_str()))
            .collect()
    }

    #[tokio::test]
    async fn off_without_apply_says_what_it_would_do_and_changes_nothing() {
        let (get, upd, get_role, create, attach) = (setting("$None"), update(), no_role(), create(), attach());
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&get, &upd]);
        let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&get_role, &create, &attach]);
        let r = dhmc(&ssm, &iam, "aws", true, false).await;
        assert_eq!((r.state.as_str(), r.role.as_deref()), ("off", None));
        assert_eq!(
            steps(&r),
            vec![
                ("role", VALUE, "would create"),
                ("policy", POLICY, "would attach"),
                ("setting", VALUE, "would turn on"),
            ]
        );
        assert_eq!(create.num_calls() + attach.num_calls() + upd.num_calls(), 0);
        assert!(!r.failed());
    }

    #[tokio::test]
    async fn apply_creates_the_role_attaches_the_policy_and_turns_it_on() {
        let (get, upd, get_role, create, attach) = (setting("$None"), update(), no_role(), create(), attach());
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&get, &upd]);
        let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&get_role, &create, &attach]);
        let r = dhmc(&ssm, &iam, "aws", true, true).await;
        assert_eq!(
            steps(&r),
            vec![
                ("role", VALUE, "created"),
                ("policy", POLICY, "attached"),
                ("setting", VALUE, "turned on"),
            ]
        );
        assert_eq!((create.num_calls(), attach.num_calls(), upd.num_calls()), (1, 1, 1));
        assert!(!r.failed());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["state"], "off");
        assert_eq!(json["steps"][2]["action"], "turned on");
    }

    #[tokio::test]
    async fn an_existing_role_is_used_and_given_the_policy_if_missing() {
        let trust = crate::dhmc::DHMC_TRUST_POLICY;
        let get_role = mock!(aws_sdk_iam::Client::get_role)
            .match_requests(|r| r.role_name() == Some(DHMC_ROLE_NAME))
            .then_output(move || GetRoleOutput::builder().role(role(DHMC_ROLE_PATH, trust)).build());
        let listed = mock!(aws_sdk_iam::Client::list_attached_role_policies).then_output(|| {
            ListAttachedRolePoliciesOutput::builder()
                .attached_policies(
                    AttachedPolicy::builder()
                        .policy_arn("arn:aws:iam::aws:policy/ReadOnlyAccess")
                        .build(),
                )
                .build()
        });
        let (get, upd, create, attach) = (setting(""), update(), create(), attach());
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&get, &upd]);
        let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&get_role, &listed, &create, &attach]);
        let r = dhmc(&ssm, &iam, "aws", true, true).await;
        assert_eq!(r.state, "off");
        assert_eq!(
            steps(&r),
            vec![
                ("role", VALUE, "exists"),
                ("policy", POLICY, "attached"),
                ("setting", VALUE, "turned on"),
            ]
        );
        assert_eq!((create.num_calls(), attach.num_calls(), upd.num_calls()), (0, 1, 1));
    }

    #[tokio::test]
    async fn a_role_at_the_root_path_with_the_policy_is_named_without_a_path() {
        let get_role = mock!(aws_sdk_iam::Client::get_role)
            .then_output(|| GetRoleOutput::builder().role(role("/", DHMC_TRUST_POLICY)).build());
        let listed = mock!(aws_sdk_iam::Client::list_attached_role_policies).then_output(|| {
            ListAttachedRolePoliciesOutput::builder()
                .attached_policies(AttachedPolicy::builder().policy_arn(POLICY).build())
                .build()
        });
        let upd = mock!(aws_sdk_ssm::Client::update_service_setting)
            .match_requests(|r| r.setting_value() == Some(DHMC_ROLE_NAME))
            .then_output(|| UpdateServiceSettingOutput::builder().build());
        let (get, attach) = (setting("$None"), attach());
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&get, &upd]);
        let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&get_role, &listed, &attach]);
        let r = dhmc(&ssm, &iam, "aws", true, true).await;
        assert_eq!(
            steps(&r),
            vec![
                ("role", DHMC_ROLE_NAME, "exists"),
                ("policy", POLICY, "already"),
                ("setting", DHMC_ROLE_NAME, "turned on"),
            ]
        );
        assert_eq!((attach.num_calls(), upd.num_calls()), (0, 1));
    }

    #[tokio::test]
    async fn a_setting_that_is_on_is_shown_and_left_alone() {
        let (get, upd, get_role) = (setting("MyFleetDhmcRole"), update(), no_role());
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&get, &upd]);
        let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&get_role]);
        let r = dhmc(&ssm, &iam, "aws", false, false).await;
        assert_eq!((r.state.as_str(), r.role.as_deref()), ("on", Some("MyFleetDhmcRole")));
        assert!(r.steps.is_empty());
        let r = dhmc(&ssm, &iam, "aws", true, true).await;
        assert_eq!(steps(&r), vec![("setting", "MyFleetDhmcRole", "already on")]);
        assert_eq!((get_role.num_calls(), upd.num_calls()), (0, 0));
        assert!(!r.failed());
    }

    #[tokio::test]
    async fn an_unreadable_setting_is_unknown_and_never_overwritten() {
        let get = mock!(aws_sdk_ssm::Client::get_service_setting).then_error(|| {
            GetServiceSettingError::generic(
                aws_smithy_types::error::ErrorMetadata::builder()
                    .code("AccessDeniedException")
                    .message("User is not authorized to perform: ssm:GetServiceSetting")
                    .build(),
            )
        });
        let (upd, get_role, create) = (update(), no_role(), create());
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&get, &upd]);
        let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&get_role, &create]);
        let r = dhmc(&ssm, &iam, "aws", false, false).await;
        assert_eq!(r.state, "unknown");
        assert!(r
            .reason
            .as_deref()
            .unwrap()
            .contains("ssm:GetServiceSetting: AccessDeniedException"));
        assert!(!r.failed(), "reading alone is not a failure");
        let r = dhmc(&ssm, &iam, "aws", true, true).await;
        assert!(r.failed());
        assert_eq!(steps(&r), vec![("setting", DHMC_SETTING_ID, "failed")]);
        assert_eq!(get_role.num_calls() + create.num_calls() + upd.num_calls(), 0);
    }

    #[tokio::test]
    async fn an_existing_role_ssm_cannot_assume_is_a_failure() {
        let ec2_trust = r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
        let get_role = mock!(aws_sdk_iam::Client::get_role)
            .then_output(move || GetRoleOutput::builder().role(role(DHMC_ROLE_PATH, ec2_trust)).build());
        let (get, upd, attach) = (setting("$None"), update(), attach());
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&get, &upd]);
        let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&get_role, &attach]);
        let r = dhmc(&ssm, &iam, "aws", true, true).await;
        assert!(r.failed());
        assert_eq!(steps(&r), vec![("role", VALUE, "failed")]);
        assert!(r.steps[0].reason.as_deref().unwrap().contains("ssm.amazonaws.com"));
        assert_eq!(attach.num_calls() + upd.num_calls(), 0);
    }

    #[test]
    fn names_and_values() {
        assert_eq!(setting_value("/service-role/", DHMC_ROLE_NAME), VALUE);
        assert_eq!(setting_value("/", "R"), "R");
        assert_eq!(
            dhmc_policy_arn("aws-cn"),
            "arn:aws-cn:iam::aws:policy/AmazonSSMManagedEC2InstanceDefaultPolicy"
        );
    }
}
