//! `prereq`: every IAM role that EC2 can assume gets the SSM managed policy, so that the SSM
//! agent on its instances can register; running instances with no instance profile at all
//! are listed, since no policy can help them.

use anyhow::{anyhow, bail, Context as _, Result};
use aws_sdk_ec2::types::Filter;
use serde::Serialize;
use serde_json::Value;

use crate::cli::PrereqArgs;
use crate::context::{Context, Progress, Report};
use crate::table::{key_values, section, Table};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRow {
    pub role: String,
    /// None when the role's policies could not be listed.
    pub has_policy: Option<bool>,
    /// attached, would attach, already, failed
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BareInstance {
    pub instance_id: String,
    pub name: String,
    pub platform: String,
    pub launch_time: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrereqReport {
    pub policy_arn: String,
    pub dry_run: bool,
    /// All roles in the account.
    pub roles_listed: usize,
    /// The roles EC2 can assume, and what was done to each.
    pub roles: Vec<RoleRow>,
    pub instances_without_profile: Vec<BareInstance>,
}

impl PrereqReport {
    pub fn failed(&self) -> usize {
        self.roles.iter().filter(|r| r.action == "failed").count()
    }
}

impl Report for PrereqReport {
    fn to_table(&self) -> String {
        let mut roles = Table::new(&["ROLE", "HAS POLICY", "ACTION"]);
        for r in &self.roles {
            let has = match r.has_policy {
                Some(true) => "yes",
                Some(false) => "no",
                None => "unknown",
            };
            let action = match &r.reason {
                Some(reason) => format!("{}: {reason}", r.action),
                None => r.action.clone(),
            };
            roles.row([r.role.as_str(), has, action.as_str()]);
        }
        let mut out = key_values(&[
            ("Policy", self.policy_arn.clone()),
            (
                "Roles",
                format!(
                    "{} of {} can be assumed by EC2{}",
                    self.roles.len(),
                    self.roles_listed,
                    if self.dry_run {
                        " (dry run: nothing attached)"
                    } else {
                        ""
                    }
                ),
            ),
        ]);
        out.push('\n');
        out.push_str(&section("IAM roles EC2 can assume", &roles, "none"));
        let failed = self.failed();
        if failed > 0 {
            out.push_str(&format!(
                "{failed} role(s) could not be changed: see the reasons above (permissions, service-linked roles, policy quota).\n"
            ));
        }
        let mut bare = Table::new(&["INSTANCE", "NAME", "PLATFORM", "LAUNCHED"]);
        for i in &self.instances_without_profile {
            bare.row([&i.instance_id, &i.name, &i.platform, &i.launch_time]);
        }
        out.push('\n');
        out.push_str(&section(
            "Running instances without an instance profile (attach one with a role above; a policy alone cannot help them)",
            &bare,
            "none",
        ));
        out
    }
}

pub async fn run(ctx: &Context, args: &PrereqArgs) -> Result<PrereqReport> {
    if args.policy_arn.trim().is_empty() || !args.policy_arn.starts_with("arn:") {
        bail!("--policy-arn must be a policy ARN, got {:?}", args.policy_arn);
    }
    prereq(&ctx.iam(), &ctx.ec2(), &args.policy_arn, args.dry_run, ctx.progress).await
}

/// List the roles EC2 can assume, attach `policy_arn` where it is missing (unless `dry_run`),
/// and list running instances without an instance profile.
pub async fn prereq(
    iam: &aws_sdk_iam::Client,
    ec2: &aws_sdk_ec2::Client,
    policy_arn: &str,
    dry_run: bool,
    progress: Progress,
) -> Result<PrereqReport> {
    let all = list_roles(iam, progress).await?;
    let roles_listed = all.len();
    let mut rows = Vec::new();
    let assumable: Vec<&(String, Option<String>)> = all
        .iter()
        .filter(|(_, doc)| {
            doc.as_deref()
                .and_then(|d| parse_trust_policy(d).ok())
                .is_some_and(|p| ec2_can_assume(&p))
        })
        .collect();
    for (n, (role, _)) in assumable.iter().enumerate() {
        progress.update(format!("checking role {}/{}: {role}", n + 1, assumable.len()));
        rows.push(ensure_policy(iam, role, policy_arn, dry_run).await);
    }
    progress.update("listing running instances");
    let instances_without_profile = instances_without_profile(ec2).await?;
    progress.clear();
    Ok(PrereqReport {
        policy_arn: policy_arn.to_string(),
        dry_run,
        roles_listed,
        roles: rows,
        instances_without_profile,
    })
}

/// Every role with its trust policy document (as IAM returns it: URL-encoded JSON).
async fn list_roles(iam: &aws_sdk_iam::Client, progress: Progress) -> Result<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        progress.update(format!("listing IAM roles ({} so far)", out.len()));
        let resp = iam
            .list_roles()
            .set_marker(marker.take())
            .send()
            .await
            .map_err(|e| anyhow!(crate::aws::message(&e)))
            .context("cannot list IAM roles (iam:ListRoles)")?;
        out.extend(resp.roles().iter().map(|r| {
            (
                r.role_name().to_string(),
                r.assume_role_policy_document().map(str::to_string),
            )
        }));
        match resp.marker() {
            Some(m) if resp.is_truncated() => marker = Some(m.to_string()),
            _ => break,
        }
    }
    Ok(out)
}

/// One role: does it have the policy, and attach it if not. Errors become a "failed" row.
async fn ensure_policy(iam: &aws_sdk_iam::Client, role: &str, policy_arn: &str, dry_run: bool) -> RoleRow {
    let failed = |has_policy, reason: String| RoleRow {
        role: role.to_string(),
        has_policy,
        action: "failed".into(),
        reason: Some(reason),
    };
    let has = match has_policy(iam, role, policy_arn).await {
        Ok(h) => h,
        Err(reason) => return failed(None, reason),
    };
    let action = if has {
        "already"
    } else if dry_run {
        "would attach"
    } else {
        match iam
            .attach_role_policy()
            .role_name(role)
            .policy_arn(policy_arn)
            .send()
            .await
        {
            Ok(_) => "attached",
            Err(e) => return failed(Some(false), crate::aws::message(&e)),
        }
    };
    RoleRow {
        role: role.to_string(),
        has_policy: Some(has),
        action: action.into(),
        reason: None,
    }
}

async fn has_policy(iam: &aws_sdk_iam::Client, role: &str, policy_arn: &str) -> Result<bool, String> {
    let mut marker: Option<String> = None;
    loop {
        let resp = iam
            .list_attached_role_policies()
            .role_name(role)
            .set_marker(marker.take())
            .send()
            .await
            .map_err(|e| crate::aws::message(&e))?;
        if resp
            .attached_policies()
            .iter()
            .any(|p| p.policy_arn() == Some(policy_arn))
        {
            return Ok(true);
        }
        match resp.marker() {
            Some(m) if resp.is_truncated() => marker = Some(m.to_string()),
            _ => return Ok(false),
        }
    }
}

/// Running instances that have no IAM instance profile.
async fn instances_without_profile(ec2: &aws_sdk_ec2::Client) -> Result<Vec<BareInstance>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let resp = ec2
            .describe_instances()
            .filters(Filter::builder().name("instance-state-name").values("running").build())
            .max_results(1000)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| anyhow!(crate::aws::message(&e)))
            .context("cannot list running instances (ec2:DescribeInstances)")?;
        for i in resp.reservations().iter().flat_map(|r| r.instances()) {
            if i.iam_instance_profile().is_some() {
                continue;
            }
            out.push(BareInstance {
                instance_id: i.instance_id().unwrap_or_default().to_string(),
                name: i
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some("Name"))
                    .and_then(|t| t.value())
                    .unwrap_or_default()
                    .to_string(),
                platform: i.platform_details().unwrap_or_default().to_string(),
                launch_time: i.launch_time().map(crate::aws::rfc3339).unwrap_or_default(),
            });
        }
        token = resp.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    Ok(out)
}

/// Decode `%XX` escapes (IAM returns policy documents URL-encoded). Invalid escapes are kept
/// as they are; the result must be UTF-8.
pub fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).context("the decoded policy document is not UTF-8")
}

/// A trust policy document, URL-encoded (as IAM returns it) or plain JSON.
pub fn parse_trust_policy(doc: &str) -> Result<Value> {
    let doc = doc.trim();
    let text = if doc.starts_with('{') {
        doc.to_string()
    } else {
        percent_decode(doc)?
    };
    serde_json::from_str(&text).context("the trust policy is not JSON")
}

fn one_or_many(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    }
}

/// True when a statement allows the EC2 service principal to assume the role.
pub fn ec2_can_assume(policy: &Value) -> bool {
    let statements: Vec<&Value> = match policy.get("Statement") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(s @ Value::Object(_)) => vec![s],
        _ => vec![],
    };
    statements.into_iter().any(|st| {
        let allow = st.get("Effect").and_then(Value::as_str) == Some("Allow");
        let assume = one_or_many(st.get("Action"))
            .iter()
            .any(|a| a.eq_ignore_ascii_case("sts:AssumeRole") || *a == "sts:*" || *a == "*");
        let ec2 = one_or_many(st.get("Principal").and_then(|p| p.get("Service")))
            .iter()
            .any(|s| s.eq_ignore_ascii_case("ec2.amazonaws.com") || s.eq_ignore_ascii_case("ec2.amazonaws.com.cn"));
        allow && assume && ec2
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
    use aws_sdk_ec2::types::{IamInstanceProfile, Instance, Reservation, Tag};
    use aws_sdk_iam::operation::attach_role_policy::{AttachRolePolicyError, AttachRolePolicyOutput};
    use aws_sdk_iam::operation::list_attached_role_policies::ListAttachedRolePoliciesOutput;
    use aws_sdk_iam::operation::list_roles::ListRolesOutput;
    use aws_sdk_iam::types::error::UnmodifiableEntityException;
    use aws_sdk_iam::types::{AttachedPolicy, Role};
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    const POLICY: &str = crate::cli::DEFAULT_POLICY_ARN;
    const EC2_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

    fn encode(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("%7B%22a%22%3A1%7D").unwrap(), r#"{"a":1}"#);
        assert_eq!(percent_decode("a%2fb%20c").unwrap(), "a/b c");
        assert_eq!(percent_decode("100%").unwrap(), "100%");
        assert_eq!(percent_decode("%zz%4").unwrap(), "%zz%4");
        assert_eq!(percent_decode("caf%C3%A9").unwrap(), "café");
        assert!(percent_decode("%FF").is_err());
    }

    #[test]
    fn trust_policies_with_string_or_list_principals() {
        assert!(ec2_can_assume(&parse_trust_policy(&encode(EC2_TRUST)).unwrap()));
        assert!(ec2_can_assume(&parse_trust_policy(EC2_TRUST).unwrap()));
        let list = r#"{"Statement":{"Effect":"Allow","Principal":{"Service":["lambda.amazonaws.com","ec2.amazonaws.com"]},"Action":["sts:AssumeRole","sts:TagSession"]}}"#;
        assert!(ec2_can_assume(&parse_trust_policy(&encode(list)).unwrap()));
        let lambda = r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
        assert!(!ec2_can_assume(&parse_trust_policy(lambda).unwrap()));
        let deny = EC2_TRUST.replace("Allow", "Deny");
        assert!(!ec2_can_assume(&parse_trust_policy(&deny).unwrap()));
        let account = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}"#;
        assert!(!ec2_can_assume(&parse_trust_policy(account).unwrap()));
        let web_identity = EC2_TRUST.replace("sts:AssumeRole", "sts:AssumeRoleWithWebIdentity");
        assert!(!ec2_can_assume(&parse_trust_policy(&web_identity).unwrap()));
        assert!(parse_trust_policy("%7Bnot json").is_err());
    }

    fn role(name: &str, trust: &str) -> Role {
        Role::builder()
            .role_name(name)
            .path("/")
            .role_id(format!("AROA{name}"))
            .arn(format!("arn:aws:iam::123456789012:role/{name}"))
            .create_date(aws_smithy_types::DateTime::from_secs(0))
            .assume_role_policy_document(encode(trust))
            .build()
            .unwrap()
    }

    fn no_instances() -> aws_smithy_mocks::Rule {
        mock!(aws_sdk_ec2::Client::describe_instances).then_output(|| DescribeInstancesOutput::builder().build())
    }

    #[tokio::test]
    async fn attaches_where_missing_and_reports_what_it_could_not_change() {
        let lambda = r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
        let roles = mock!(aws_sdk_iam::Client::list_roles)
            .sequence()
            .output(|| {
                ListRolesOutput::builder()
                    .roles(role("web", EC2_TRUST))
                    .roles(role("fn", lambda))
                    .is_truncated(true)
                    .marker("m1")
                    .build()
                    .unwrap()
            })
            .output(|| {
                ListRolesOutput::builder()
                    .roles(role("db", EC2_TRUST))
                    .roles(role("locked", EC2_TRUST))
                    .build()
                    .unwrap()
            })
            .build();
        let web_policies = mock!(aws_sdk_iam::Client::list_attached_role_policies)
            .match_requests(|r| r.role_name() == Some("web"))
            .then_output(|| {
                ListAttachedRolePoliciesOutput::builder()
                    .attached_policies(
                        AttachedPolicy::builder()
                            .policy_arn("arn:aws:iam::aws:policy/ReadOnlyAccess")
                            .build(),
                    )
                    .build()
            });
        let db_policies = mock!(aws_sdk_iam::Client::list_attached_role_policies)
            .match_requests(|r| r.role_name() == Some("db"))
            .then_output(|| {
                ListAttachedRolePoliciesOutput::builder()
                    .attached_policies(AttachedPolicy::builder().policy_arn(POLICY).build())
                    .build()
            });
        let locked_policies = mock!(aws_sdk_iam::Client::list_attached_role_policies)
            .match_requests(|r| r.role_name() == Some("locked"))
            .then_output(|| ListAttachedRolePoliciesOutput::builder().build());
        let attach_web = mock!(aws_sdk_iam::Client::attach_role_policy)
            .match_requests(|r| r.role_name() == Some("web") && r.policy_arn() == Some(POLICY))
            .then_output(|| AttachRolePolicyOutput::builder().build());
        let attach_locked = mock!(aws_sdk_iam::Client::attach_role_policy)
            .match_requests(|r| r.role_name() == Some("locked"))
            .then_error(|| {
                AttachRolePolicyError::UnmodifiableEntityException(
                    UnmodifiableEntityException::builder()
                        .message("Cannot perform the operation on the protected role 'locked'")
                        .build(),
                )
            });
        let iam = mock_client!(
            aws_sdk_iam,
            RuleMode::MatchAny,
            [
                &roles,
                &web_policies,
                &db_policies,
                &locked_policies,
                &attach_web,
                &attach_locked
            ]
        );
        let profiled = mock!(aws_sdk_ec2::Client::describe_instances)
            .match_requests(|r| {
                r.filters()
                    .iter()
                    .any(|f| f.name() == Some("instance-state-name") && f.values() == ["running"])
            })
            .then_output(|| {
                DescribeInstancesOutput::builder()
                    .reservations(
                        Reservation::builder()
                            .instances(
                                Instance::builder()
                                    .instance_id("i-0000000000000000b")
                                    .iam_instance_profile(IamInstanceProfile::builder().arn("arn:p").build())
                                    .build(),
                            )
                            .instances(
                                Instance::builder()
                                    .instance_id("i-0000000000000000a")
                                    .platform_details("Linux/UNIX")
                                    .tags(Tag::builder().key("Name").value("legacy-batch").build())
                                    .build(),
                            )
                            .build(),
                    )
                    .build()
            });
        let ec2 = mock_client!(aws_sdk_ec2, [&profiled]);

        let report = prereq(&iam, &ec2, POLICY, false, Progress::disabled()).await.unwrap();
        assert_eq!(report.roles_listed, 4);
        let actions: Vec<(&str, Option<bool>, &str)> = report
            .roles
            .iter()
            .map(|r| (r.role.as_str(), r.has_policy, r.action.as_str()))
            .collect();
        assert_eq!(
            actions,
            vec![
                ("web", Some(false), "attached"),
                ("db", Some(true), "already"),
                ("locked", Some(false), "failed"),
            ]
        );
        assert!(report.roles[2]
            .reason
            .as_deref()
            .unwrap()
            .contains("UnmodifiableEntityException"));
        assert_eq!(attach_web.num_calls(), 1);
        assert_eq!(attach_locked.num_calls(), 1);
        assert_eq!(roles.num_calls(), 2);
        assert_eq!(report.instances_without_profile.len(), 1);
        assert_eq!(report.instances_without_profile[0].name, "legacy-batch");

        let text = report.to_table();
        println!("{text}");
        assert!(text.contains("web     no          attached\n"), "{text}");
        assert!(text.contains("db      yes         already\n"), "{text}");
        assert!(text.contains(
            "locked  no          failed: UnmodifiableEntityException: Cannot perform the operation on the protected role 'locked'"
        ));
        assert!(text.contains("1 role(s) could not be changed"));
        assert!(text.contains("i-0000000000000000a  legacy-batch  Linux/UNIX"));
    }

    #[tokio::test]
    async fn dry_run_attaches_nothing() {
        let roles = mock!(aws_sdk_iam::Client::list_roles).then_output(|| {
            ListRolesOutput::builder()
                .roles(role("web", EC2_TRUST))
                .build()
                .unwrap()
        });
        let policies = mock!(aws_sdk_iam::Client::list_attached_role_policies)
            .then_output(|| ListAttachedRolePoliciesOutput::builder().build());
        let attach =
            mock!(aws_sdk_iam::Client::attach_role_policy).then_output(|| AttachRolePolicyOutput::builder().build());
        let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&roles, &policies, &attach]);
        let ec2 = mock_client!(aws_sdk_ec2, [&no_instances()]);
        let report = prereq(&iam, &ec2, POLICY, true, Progress::disabled()).await.unwrap();
        assert_eq!(report.roles[0].action, "would attach");
        assert_eq!(attach.num_calls(), 0);
        assert!(report.to_table().contains("dry run"));
    }
}
