//! `prereq`: find every IAM role that EC2 can assume and lacks the SSM managed policy (so that
//! the SSM agent on its instances cannot register) and, with `--apply`, attach it; list running
//! instances with no instance profile at all, since no policy can help them. Without `--apply`
//! it changes nothing. It attaches AmazonSSMManagedInstanceCore or the stack's
//! CommandOutputWriterPolicy; any other policy needs `--allow-any-policy`. Roles whose trust
//! policy it cannot read are reported, never skipped silently.
//!
//! It also reads Default Host Management Configuration (crate::dhmc; an unreadable setting is
//! shown as unknown and is not a failure) and, with `--enable-default-host-management`, turns it
//! on (`--apply`) or says how it would (without `--apply`: a dry run, not a usage error, like the
//! rest of prereq). For the running instances without an instance profile (the ones DHMC is
//! for) it shows IMDS (HttpTokens), the SSM Agent version where SSM still lists the instance,
//! and whether DHMC can reach it.

use anyhow::{anyhow, Context as _, Result};
use serde::Serialize;
use serde_json::Value;

use crate::cli::{partition_of, ssm_policy_arn, PrereqArgs, PARTITIONS};
use crate::context::{Context, Progress, Report};
use crate::dhmc::DhmcReport;
use crate::table::{key_values, section, Table};
use crate::UsageError;

/// The stack output naming the managed policy that lets instances write command output.
pub const WRITER_POLICY_OUTPUT: &str = "CommandOutputWriterPolicyArn";

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

/// A role whose trust policy could not be read (so prereq cannot tell whether EC2 may assume
/// it), or a page of ListRoles that could not be read (`role` is then absent).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnreadableRole {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The ListRoles page (from 1) that failed; the roles on it and after it were not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_roles_page: Option<usize>,
    pub reason: String,
}

/// A running instance without an instance profile, and whether Default Host Management
/// Configuration can reach it (IMDSv2 required, SSM Agent 3.2.582.0 or later).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BareInstance {
    pub instance_id: String,
    pub name: String,
    pub platform: String,
    pub launch_time: String,
    /// EC2 MetadataOptions.HttpTokens: required (IMDSv2 only) or optional (IMDSv1 allowed);
    /// empty when EC2 did not say.
    pub http_tokens: String,
    /// EC2 MetadataOptions.HttpEndpoint: enabled or disabled; empty when EC2 did not say.
    pub http_endpoint: String,
    /// SSM Agent version from DescribeInstanceInformation, when SSM still lists the instance
    /// (e.g. ConnectionLost); None: unknown.
    pub agent_version: Option<String>,
    /// SSM's PingStatus, when SSM lists the instance.
    pub ping_status: Option<String>,
    /// Can DHMC reach it: yes, no, unknown.
    pub dhmc: String,
    /// Why not, or why unknown.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dhmc_reasons: Vec<String>,
}

/// Why DHMC cannot reach an instance with IMDSv1 allowed.
pub const IMDSV1_ALLOWED: &str = "IMDSv1 allowed (HttpTokens optional)";
/// Why DHMC cannot reach an instance whose metadata service is off.
pub const IMDS_DISABLED: &str = "instance metadata service disabled";

/// Whether DHMC can reach an instance ("yes", "no", "unknown") and why not or why unknown.
pub fn dhmc_reach(http_tokens: &str, http_endpoint: &str, agent_version: Option<&str>) -> (String, Vec<String>) {
    let min = crate::agent::DHMC_MIN_AGENT_VERSION;
    let mut blockers = Vec::new();
    let mut unknown = Vec::new();
    if http_endpoint.eq_ignore_ascii_case("disabled") {
        blockers.push(IMDS_DISABLED.to_string());
    } else if http_tokens.is_empty() {
        unknown.push("IMDS settings unknown".to_string());
    } else if !http_tokens.eq_ignore_ascii_case("required") {
        blockers.push(IMDSV1_ALLOWED.to_string());
    }
    match agent_version.map(|v| (v, fleet_core::routing::older_than(v, min))) {
        Some((v, Some(true))) => blockers.push(format!("SSM Agent {v} older than {min}")),
        Some((_, Some(false))) => {}
        Some((v, None)) => unknown.push(format!("SSM Agent version {v:?} unreadable")),
        None => unknown.push("SSM Agent version unknown (SSM does not list the instance)".to_string()),
    }
    if !blockers.is_empty() {
        ("no".into(), blockers)
    } else if !unknown.is_empty() {
        ("unknown".into(), unknown)
    } else {
        ("yes".into(), Vec::new())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrereqReport {
    pub policy_arn: String,
    /// True unless --apply: nothing was attached.
    pub dry_run: bool,
    /// All roles listed in the account.
    pub roles_listed: usize,
    /// The roles EC2 can assume, and what was done to each.
    pub roles: Vec<RoleRow>,
    /// Roles whose trust policy could not be read, and ListRoles pages that could not be read.
    pub unreadable_roles: Vec<UnreadableRole>,
    /// The Region the DHMC setting and the instances are read in.
    pub region: String,
    /// Default Host Management Configuration: its state, and what was (or would be) done to turn it on.
    pub default_host_management: DhmcReport,
    /// Running instances without an instance profile (the ones DHMC is for), with whether DHMC
    /// can reach each.
    pub instances_without_profile: Vec<BareInstance>,
    /// Why the instances' SSM Agent versions could not be read (they are then unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_versions_error: Option<String>,
}

impl PrereqReport {
    /// Roles that could not be checked or changed, unreadable trust policies or pages, and a
    /// DHMC step that failed (only with --enable-default-host-management).
    pub fn failed(&self) -> usize {
        self.roles.iter().filter(|r| r.action == "failed").count()
            + self.unreadable_roles.len()
            + usize::from(self.default_host_management.failed())
    }

    /// Instances without an instance profile that DHMC cannot reach.
    pub fn dhmc_unreachable(&self) -> Vec<&BareInstance> {
        self.instances_without_profile
            .iter()
            .filter(|i| i.dhmc == "no")
            .collect()
    }

    fn dhmc_line(&self) -> String {
        let d = &self.default_host_management;
        let region = if self.region.is_empty() {
            "this Region"
        } else {
            self.region.as_str()
        };
        let step = |action: &str| d.steps.iter().find(|s| s.step == "setting" && s.action == action);
        if let Some(s) = step("turned on") {
            return format!("on in {region} since this run (it was off): role {}", s.target);
        }
        if let Some(s) = step("would turn on") {
            return format!("off in {region}; --apply would turn it on with role {}", s.target);
        }
        match d.state.as_str() {
            "on" => format!(
                "on in {region}: role {} (for instances without an instance profile; IMDSv2 and SSM Agent {} or later needed)",
                d.role.clone().unwrap_or_default(),
                crate::agent::DHMC_MIN_AGENT_VERSION
            ),
            "off" => format!(
                "off in {region}: instances without an instance profile cannot register{}",
                if d.enable_requested {
                    ""
                } else {
                    " (prereq --apply --enable-default-host-management turns it on)"
                }
            ),
            _ => format!("unknown in {region}: {}", d.reason.clone().unwrap_or_default()),
        }
    }

    fn instances_line(&self) -> String {
        let n = self.instances_without_profile.len();
        if n == 0 {
            return String::new();
        }
        let count =
            |pred: &dyn Fn(&BareInstance) -> bool| self.instances_without_profile.iter().filter(|i| pred(i)).count();
        let imds = count(&|i| i.dhmc_reasons.iter().any(|r| r == IMDSV1_ALLOWED || r == IMDS_DISABLED));
        let old_agent = count(&|i| {
            i.dhmc_reasons
                .iter()
                .any(|r| r.starts_with("SSM Agent ") && r.contains(" older than "))
        });
        let unknown_agent = count(&|i| i.agent_version.is_none());
        format!(
            "DHMC cannot reach {} of {n} running instances without an instance profile (IMDSv1 allowed or IMDS off: {imds}, SSM Agent older than {}: {old_agent}); SSM Agent version unknown for {unknown_agent}",
            self.dhmc_unreachable().len(),
            crate::agent::DHMC_MIN_AGENT_VERSION
        )
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
                        " (dry run: nothing attached; --apply attaches)"
                    } else {
                        ""
                    }
                ),
            ),
            ("DHMC", self.dhmc_line()),
            (
                "Unreadable",
                match self.unreadable_roles.len() {
                    0 => String::new(),
                    n => format!("{n} trust policies or role pages could not be read: see below"),
                },
            ),
        ]);
        out.push('\n');
        out.push_str(&section("IAM roles EC2 can assume", &roles, "none"));
        let failed = self.roles.iter().filter(|r| r.action == "failed").count();
        if failed > 0 {
            out.push_str(&format!(
                "{failed} role(s) could not be changed: see the reasons above (permissions, service-linked roles, policy quota).\n"
            ));
        }
        if !self.unreadable_roles.is_empty() {
            let mut t = Table::new(&["ROLE", "REASON"]);
            for u in &self.unreadable_roles {
                let role = match (&u.role, u.list_roles_page) {
                    (Some(r), _) => r.clone(),
                    (None, Some(p)) => format!("(ListRoles page {p} and later)"),
                    (None, None) => "(unknown)".to_string(),
                };
                t.row([role, u.reason.clone()]);
            }
            out.push('\n');
            out.push_str(&section(
                "Roles whose trust policy could not be read (EC2 may be able to assume them; nothing was attached to them)",
                &t,
                "none",
            ));
        }
        let d = &self.default_host_management;
        if !d.steps.is_empty() {
            let mut t = Table::new(&["STEP", "TARGET", "ACTION"]);
            for st in &d.steps {
                let action = match &st.reason {
                    Some(reason) => format!("{}: {reason}", st.action),
                    None => st.action.clone(),
                };
                t.row([st.step.clone(), st.target.clone(), action]);
            }
            out.push('\n');
            out.push_str(&section(
                if self.dry_run {
                    "Default Host Management Configuration (dry run: nothing changed; --apply changes it)"
                } else {
                    "Default Host Management Configuration"
                },
                &t,
                "nothing to do",
            ));
        }
        let mut bare = Table::new(&["INSTANCE", "NAME", "PLATFORM", "LAUNCHED", "IMDS", "SSM AGENT", "DHMC"]);
        for i in &self.instances_without_profile {
            let imds = if i.http_endpoint.eq_ignore_ascii_case("disabled") {
                "disabled"
            } else {
                match i.http_tokens.as_str() {
                    "required" => "v2 required",
                    "" => "unknown",
                    _ => "v1 allowed",
                }
            };
            let agent = match (&i.agent_version, &i.ping_status) {
                (Some(v), Some(p)) => format!("{v} ({p})"),
                (Some(v), None) => v.clone(),
                (None, _) => "unknown".to_string(),
            };
            let dhmc = match i.dhmc.as_str() {
                "yes" => "yes".to_string(),
                other => format!("{other}: {}", i.dhmc_reasons.join("; ")),
            };
            bare.row([
                i.instance_id.clone(),
                i.name.clone(),
                i.platform.clone(),
                i.launch_time.clone(),
                imds.to_string(),
                agent,
                dhmc,
            ]);
        }
        out.push('\n');
        out.push_str(&section(
            "Running instances without an instance profile (attach one with a role above, or turn on DHMC for those it can reach; a policy alone cannot help them)",
            &bare,
            "none",
        ));
        let line = self.instances_line();
        if !line.is_empty() {
            out.push_str(&line);
            out.push('\n');
        }
        if let Some(e) = &self.agent_versions_error {
            out.push_str(&format!("SSM Agent versions could not be read: {e}\n"));
        }
        out
    }
}

/// True for `arn:<partition>:iam::aws:policy/AmazonSSMManagedInstanceCore` in any partition.
pub fn is_ssm_policy(arn: &str) -> bool {
    PARTITIONS.iter().any(|p| arn == ssm_policy_arn(p))
}

/// The policy prereq may attach: the SSM policy (the default, in `partition`), the stack's
/// CommandOutputWriterPolicy (`writer`: its ARN, or why it could not be read), or with
/// `allow_any` any policy ARN. Anything else is a usage error naming --allow-any-policy.
pub fn choose_policy(
    requested: Option<&str>,
    partition: &str,
    writer: Option<Result<&str, String>>,
    allow_any: bool,
) -> Result<String, UsageError> {
    let usage = |message: String| UsageError {
        command: "prereq",
        message,
    };
    let Some(requested) = requested.map(str::trim) else {
        return Ok(ssm_policy_arn(partition));
    };
    let arn_like = requested
        .strip_prefix("arn:")
        .and_then(|rest| rest.split_once(":iam::"))
        .is_some_and(|(_, rest)| rest.contains(":policy/"));
    if !arn_like {
        return Err(usage(format!(
            "--policy-arn must be an IAM policy ARN (arn:<partition>:iam::<account>:policy/<name>), got {requested:?}"
        )));
    }
    if is_ssm_policy(requested) || allow_any {
        return Ok(requested.to_string());
    }
    match writer {
        Some(Ok(w)) if w == requested => Ok(requested.to_string()),
        other => {
            let known = match other {
                Some(Ok(w)) => format!("the stack's {WRITER_POLICY_OUTPUT} is {w}"),
                Some(Err(why)) => format!("the stack's {WRITER_POLICY_OUTPUT} could not be read: {why}"),
                None => format!("the stack's {WRITER_POLICY_OUTPUT} was not read"),
            };
            Err(usage(format!(
                "--policy-arn {requested} is neither {} nor the stack's CommandOutputWriterPolicy ({known}). \
                 prereq attaches it to every role EC2 can assume: pass --allow-any-policy to confirm that policy",
                ssm_policy_arn(partition)
            )))
        }
    }
}

pub async fn run(ctx: &Context, args: &PrereqArgs) -> Result<PrereqReport> {
    let partition = partition_of(ctx.sdk.region().map(|r| r.as_ref()));
    let requested = args.policy_arn.as_deref();
    // The stack's outputs are read only when they decide: a policy other than the SSM one.
    let writer = match requested {
        Some(r) if !is_ssm_policy(r.trim()) && !args.allow_any_policy => Some(
            ctx.outputs()
                .await
                .and_then(|o| o.get(WRITER_POLICY_OUTPUT).map(str::to_string))
                .map_err(|e| format!("{e:#}")),
        ),
        _ => None,
    };
    let policy_arn = choose_policy(
        requested,
        partition,
        writer.as_ref().map(|w| w.as_deref().map_err(Clone::clone)),
        args.allow_any_policy,
    )?;
    let clients = Clients {
        iam: ctx.iam(),
        ec2: ctx.ec2(),
        ssm: ctx.ssm(),
    };
    let options = Options {
        policy_arn,
        apply: args.apply,
        enable_default_host_management: args.enable_default_host_management,
        partition: partition.to_string(),
        region: ctx.sdk.region().map(|r| r.to_string()).unwrap_or_default(),
    };
    prereq(&clients, &options, ctx.progress).await
}

/// The clients prereq calls.
pub struct Clients {
    pub iam: aws_sdk_iam::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub ssm: aws_sdk_ssm::Client,
}

/// What prereq does.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The policy every EC2-assumable role needs.
    pub policy_arn: String,
    /// Change things (attach, create the DHMC role, turn DHMC on); otherwise only report.
    pub apply: bool,
    pub enable_default_host_management: bool,
    /// The partition of the DHMC managed policy.
    pub partition: String,
    pub region: String,
}

/// List the roles EC2 can assume, attach `policy_arn` where it is missing (only if `apply`),
/// report roles whose trust policy could not be read, read (and with
/// `enable_default_host_management`, turn on) DHMC, and list running instances without an
/// instance profile with whether DHMC can reach them.
pub async fn prereq(c: &Clients, o: &Options, progress: Progress) -> Result<PrereqReport> {
    let (iam, ec2, policy_arn, apply) = (&c.iam, &c.ec2, o.policy_arn.as_str(), o.apply);
    let listed = list_roles(iam, progress).await?;
    let roles_listed = listed.roles.len();
    let mut unreadable_roles = Vec::new();
    let mut assumable = Vec::new();
    for (n, role) in listed.roles.iter().enumerate() {
        progress.update(format!("reading trust policy {}/{roles_listed}: {}", n + 1, role.name));
        match trust_policy(iam, role).await {
            Ok(p) if ec2_can_assume(&p) => assumable.push(role.name.as_str()),
            Ok(_) => {}
            Err(reason) => unreadable_roles.push(UnreadableRole {
                role: Some(role.name.clone()),
                list_roles_page: None,
                reason,
            }),
        }
    }
    if let Some((page, reason)) = listed.failed_page {
        unreadable_roles.push(UnreadableRole {
            role: None,
            list_roles_page: Some(page),
            reason: format!("ListRoles failed: {reason}; the roles on this page and after it were not checked"),
        });
    }
    let mut rows = Vec::new();
    for (n, role) in assumable.iter().enumerate() {
        progress.update(format!("checking role {}/{}: {role}", n + 1, assumable.len()));
        rows.push(ensure_policy(iam, role, policy_arn, apply).await);
    }
    progress.update("reading Default Host Management Configuration");
    let default_host_management =
        crate::dhmc::dhmc(&c.ssm, iam, &o.partition, o.enable_default_host_management, apply).await;
    progress.update("listing running instances");
    let mut instances_without_profile = instances_without_profile(ec2).await?;
    progress.update(format!(
        "asking SSM about {} instances without an instance profile",
        instances_without_profile.len()
    ));
    let ids: Vec<String> = instances_without_profile
        .iter()
        .map(|i| i.instance_id.clone())
        .collect();
    let (ssm_facts, agent_versions_error) = match fleet_core::adapters::describe_ssm(&c.ssm, &ids).await {
        Ok(f) => (f, None),
        Err(e) => (
            Default::default(),
            Some(format!("ssm:DescribeInstanceInformation: {e}")),
        ),
    };
    for i in &mut instances_without_profile {
        if let Some(f) = ssm_facts.get(&i.instance_id) {
            i.agent_version = Some(f.agent_version.clone()).filter(|v| !v.is_empty());
            i.ping_status = Some(f.ping_status.clone()).filter(|v| !v.is_empty());
        }
        let (dhmc, reasons) = dhmc_reach(&i.http_tokens, &i.http_endpoint, i.agent_version.as_deref());
        i.dhmc = dhmc;
        i.dhmc_reasons = reasons;
    }
    progress.clear();
    Ok(PrereqReport {
        policy_arn: policy_arn.to_string(),
        dry_run: !apply,
        roles_listed,
        roles: rows,
        unreadable_roles,
        region: o.region.clone(),
        default_host_management,
        instances_without_profile,
        agent_versions_error,
    })
}

/// A role as ListRoles returns it.
#[derive(Debug, Clone)]
struct ListedRole {
    name: String,
    /// The trust policy (URL-encoded JSON), when ListRoles included it.
    trust: Option<String>,
}

struct ListedRoles {
    roles: Vec<ListedRole>,
    /// The page (from 1) that could not be read after the first, and why.
    failed_page: Option<(usize, String)>,
}

/// Every role with its trust policy document. The first page must succeed; a later page that
/// fails ends the listing and is reported.
async fn list_roles(iam: &aws_sdk_iam::Client, progress: Progress) -> Result<ListedRoles> {
    let mut roles = Vec::new();
    let mut marker: Option<String> = None;
    let mut page = 0;
    loop {
        page += 1;
        progress.update(format!("listing IAM roles ({} so far)", roles.len()));
        let resp = match iam.list_roles().set_marker(marker.take()).send().await {
            Ok(r) => r,
            Err(e) if page == 1 => {
                return Err(anyhow!(crate::aws::message(&e))).context("cannot list IAM roles (iam:ListRoles)")
            }
            Err(e) => {
                return Ok(ListedRoles {
                    roles,
                    failed_page: Some((page, crate::aws::message(&e))),
                })
            }
        };
        roles.extend(resp.roles().iter().map(|r| ListedRole {
            name: r.role_name().to_string(),
            trust: r.assume_role_policy_document().map(str::to_string),
        }));
        match resp.marker() {
            Some(m) if resp.is_truncated() => marker = Some(m.to_string()),
            _ => break,
        }
    }
    Ok(ListedRoles {
        roles,
        failed_page: None,
    })
}

/// A role's trust policy: from ListRoles, or GetRole when ListRoles left it out. Err: why it
/// could not be read.
async fn trust_policy(iam: &aws_sdk_iam::Client, role: &ListedRole) -> Result<Value, String> {
    let doc = match &role.trust {
        Some(d) => d.clone(),
        None => iam
            .get_role()
            .role_name(&role.name)
            .send()
            .await
            .map_err(|e| format!("iam:GetRole: {}", crate::aws::message(&e)))?
            .role()
            .and_then(|r| r.assume_role_policy_document())
            .map(str::to_string)
            .ok_or_else(|| "IAM returned no trust policy (ListRoles and GetRole)".to_string())?,
    };
    parse_trust_policy(&doc).map_err(|e| format!("{e:#}"))
}

/// One role: does it have the policy, and attach it if not (only if `apply`). Errors become a
/// "failed" row.
async fn ensure_policy(iam: &aws_sdk_iam::Client, role: &str, policy_arn: &str, apply: bool) -> RoleRow {
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
    } else if !apply {
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

pub(crate) async fn has_policy(iam: &aws_sdk_iam::Client, role: &str, policy_arn: &str) -> Result<bool, String> {
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
    let mut out = crate::aws::running_instances(
        ec2,
        |i| {
            if i.iam_instance_profile().is_some() {
                return None;
            }
            Some(BareInstance {
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
                http_tokens: i
                    .metadata_options()
                    .and_then(|m| m.http_tokens())
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                http_endpoint: i
                    .metadata_options()
                    .and_then(|m| m.http_endpoint())
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                agent_version: None,
                ping_status: None,
                dhmc: String::new(),
                dhmc_reasons: Vec::new(),
            })
        },
        |_| {},
    )
    .await
    .context("cannot list running instances (ec2:DescribeInstances)")?;
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
    let policy: Value = serde_json::from_str(&text).context("the trust policy is not JSON")?;
    match policy.get("Statement") {
        Some(Value::Array(_) | Value::Object(_)) => Ok(policy),
        _ => Err(anyhow!("the trust policy has no Statement list")),
    }
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
    service_can_assume(policy, "ec2")
}

/// True when a statement allows `<service>.amazonaws.com` (or `.amazonaws.com.cn`) to assume
/// the role.
pub fn service_can_assume(policy: &Value, service: &str) -> bool {
    let principal = format!("{service}.amazonaws.com");
    let principal_cn = format!("{principal}.cn");
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
        let trusted = one_or_many(st.get("Principal").and_then(|p| p.get("Service")))
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&principal) || s.eq_ignore_ascii_case(&principal_cn));
        allow && assume && trusted
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
    use aws_sdk_ec2::types::{IamInstanceProfile, Instance, Reservation, Tag};
    use aws_sdk_iam::operation::attach_role_policy::{AttachRolePolicyError, AttachRolePolicyOutput};
    use aws_sdk_iam::operation::get_role::{GetRoleError, GetRoleOutput};
    use aws_sdk_iam::operation::list_attached_role_policies::ListAttachedRolePoliciesOutput;
    use aws_sdk_iam::operation::list_roles::{ListRolesError, ListRolesOutput};
    use aws_sdk_iam::types::error::UnmodifiableEntityException;
    use aws_sdk_iam::types::{AttachedPolicy, Role};
    use aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationOutput;
    use aws_sdk_ssm::operation::get_service_setting::GetServiceSettingOutput;
    use aws_sdk_ssm::types::ServiceSetting;
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
        assert!(parse_trust_policy("%5B%5D")
            .unwrap_err()
            .to_string()
            .contains("no Statement"));
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

    /// An SSM client whose DHMC setting is off and which lists no instance.
    fn ssm_off() -> aws_sdk_ssm::Client {
        let setting = mock!(aws_sdk_ssm::Client::get_service_setting).then_output(|| setting_output("$None"));
        let info = mock!(aws_sdk_ssm::Client::describe_instance_information)
            .then_output(|| DescribeInstanceInformationOutput::builder().build());
        mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&setting, &info])
    }

    fn setting_output(value: &str) -> GetServiceSettingOutput {
        GetServiceSettingOutput::builder()
            .service_setting(
                ServiceSetting::builder()
                    .setting_id(crate::dhmc::DHMC_SETTING_ID)
                    .setting_value(value)
                    .status(if value == "$None" { "Default" } else { "Customized" })
                    .build(),
            )
            .build()
    }

    async fn run_prereq(
        iam: aws_sdk_iam::Client,
        ec2: aws_sdk_ec2::Client,
        ssm: aws_sdk_ssm::Client,
        apply: bool,
        enable: bool,
    ) -> Result<PrereqReport> {
        let options = Options {
            policy_arn: POLICY.to_string(),
            apply,
            enable_default_host_management: enable,
            partition: "aws".into(),
            region: "eu-west-1".into(),
        };
        prereq(&Clients { iam, ec2, ssm }, &options, Progress::disabled()).await
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

        let report = run_prereq(iam, ec2, ssm_off(), true, false).await.unwrap();
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
    async fn without_apply_nothing_is_attached() {
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
        let report = run_prereq(iam, ec2, ssm_off(), false, false).await.unwrap();
        assert_eq!(report.roles[0].action, "would attach");
        assert_eq!(attach.num_calls(), 0);
        assert!(report.dry_run);
        assert!(report
            .to_table()
            .contains("dry run: nothing attached; --apply attaches"));
    }
    fn role_raw(name: &str, doc: Option<&str>) -> Role {
        Role::builder()
            .role_name(name)
            .path("/")
            .role_id(format!("AROA{name}"))
            .arn(format!("arn:aws:iam::123456789012:role/{name}"))
            .create_date(aws_smithy_types::DateTime::from_secs(0))
            .set_assume_role_policy_document(doc.map(str::to_string))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn unreadable_trust_policies_are_reported_not_skipped() {
        let roles = mock!(aws_sdk_iam::Client::list_roles)
            .sequence()
            .output(|| {
                ListRolesOutput::builder()
                    .roles(role("web", EC2_TRUST))
                    .roles(role_raw("latin1", Some("%7B%22Statement%22%3A%FF%7D")))
                    .roles(role_raw("garbled", Some("%7B%22Statement%22%3A%5B")))
                    .roles(role_raw("hidden", None))
                    .roles(role_raw("fetched", None))
                    .is_truncated(true)
                    .marker("m1")
                    .build()
                    .unwrap()
            })
            .error(|| {
                ListRolesError::generic(
                    aws_smithy_types::error::ErrorMetadata::builder()
                        .code("AccessDenied")
                        .message("User is not authorized to perform: iam:ListRoles")
                        .build(),
                )
            })
            .build();
        let get_hidden = mock!(aws_sdk_iam::Client::get_role)
            .match_requests(|r| r.role_name() == Some("hidden"))
            .then_error(|| {
                GetRoleError::generic(
                    aws_smithy_types::error::ErrorMetadata::builder()
                        .code("AccessDenied")
                        .message("User is not authorized to perform: iam:GetRole on resource: role hidden")
                        .build(),
                )
            });
        let get_fetched = mock!(aws_sdk_iam::Client::get_role)
            .match_requests(|r| r.role_name() == Some("fetched"))
            .then_output(|| GetRoleOutput::builder().role(role("fetched", EC2_TRUST)).build());
        let policies = mock!(aws_sdk_iam::Client::list_attached_role_policies)
            .then_output(|| ListAttachedRolePoliciesOutput::builder().build());
        let attach =
            mock!(aws_sdk_iam::Client::attach_role_policy).then_output(|| AttachRolePolicyOutput::builder().build());
        let iam = mock_client!(
            aws_sdk_iam,
            RuleMode::MatchAny,
            [&roles, &get_hidden, &get_fetched, &policies, &attach]
        );
        let ec2 = mock_client!(aws_sdk_ec2, [&no_instances()]);
        let report = run_prereq(iam, ec2, ssm_off(), false, false).await.unwrap();
        assert_eq!(report.roles_listed, 5);
        assert_eq!(
            report.roles.iter().map(|r| r.role.as_str()).collect::<Vec<_>>(),
            vec!["web", "fetched"]
        );
        assert_eq!(attach.num_calls(), 0);
        assert_eq!(get_hidden.num_calls(), 1);
        let unreadable: Vec<(Option<&str>, Option<usize>, &str)> = report
            .unreadable_roles
            .iter()
            .map(|u| (u.role.as_deref(), u.list_roles_page, u.reason.as_str()))
            .collect();
        assert_eq!(unreadable.len(), 4, "{unreadable:?}");
        assert_eq!(unreadable[0].0, Some("latin1"));
        assert!(unreadable[0].2.contains("not UTF-8"), "{unreadable:?}");
        assert_eq!(unreadable[1].0, Some("garbled"));
        assert!(unreadable[1].2.contains("not JSON"), "{unreadable:?}");
        assert_eq!(unreadable[2].0, Some("hidden"));
        assert!(unreadable[2].2.contains("iam:GetRole: AccessDenied"), "{unreadable:?}");
        assert_eq!((unreadable[3].0, unreadable[3].1), (None, Some(2)));
        assert!(
            unreadable[3].2.contains("ListRoles failed: AccessDenied"),
            "{unreadable:?}"
        );
        assert_eq!(report.failed(), 4);

        let text = report.to_table();
        println!("{text}");
        assert!(
            text.contains("Unreadable  4 trust policies or role pages could not be read: see below\n"),
            "{text}"
        );
        assert!(text.contains("Roles whose trust policy could not be read"));
        assert!(
            text.contains("hidden                        iam:GetRole: AccessDenied: User is not authorized"),
            "{text}"
        );
        assert!(
            text.contains("(ListRoles page 2 and later)  ListRoles failed: AccessDenied"),
            "{text}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["unreadableRoles"][1]["role"], "garbled");
        assert_eq!(json["unreadableRoles"][3]["listRolesPage"], 2);
        assert!(json["unreadableRoles"][3].get("role").is_none());
    }

    #[tokio::test]
    async fn a_first_listing_that_fails_is_an_error() {
        let roles = mock!(aws_sdk_iam::Client::list_roles).then_error(|| {
            ListRolesError::generic(
                aws_smithy_types::error::ErrorMetadata::builder()
                    .code("AccessDenied")
                    .message("no")
                    .build(),
            )
        });
        let iam = mock_client!(aws_sdk_iam, [&roles]);
        let ec2 = mock_client!(aws_sdk_ec2, [&no_instances()]);
        let err = run_prereq(iam, ec2, ssm_off(), false, false).await.unwrap_err();
        assert!(format!("{err:#}").contains("iam:ListRoles"), "{err:#}");
    }

    #[tokio::test]
    async fn instances_dhmc_cannot_reach_are_listed_with_why() {
        use aws_sdk_ec2::types::{HttpTokensState, InstanceMetadataEndpointState, InstanceMetadataOptionsResponse};
        use aws_sdk_ssm::types::{InstanceInformation, PingStatus};
        let roles = mock!(aws_sdk_iam::Client::list_roles)
            .then_output(|| ListRolesOutput::builder().set_roles(Some(vec![])).build().unwrap());
        let iam = mock_client!(aws_sdk_iam, [&roles]);
        let bare = |id: &str, tokens: HttpTokensState, endpoint: InstanceMetadataEndpointState| {
            Instance::builder()
                .instance_id(id)
                .platform_details("Linux/UNIX")
                .metadata_options(
                    InstanceMetadataOptionsResponse::builder()
                        .http_tokens(tokens)
                        .http_endpoint(endpoint)
                        .build(),
                )
                .build()
        };
        let instances = mock!(aws_sdk_ec2::Client::describe_instances).then_output(move || {
            use HttpTokensState::{Optional, Required};
            use InstanceMetadataEndpointState::{Disabled, Enabled};
            DescribeInstancesOutput::builder()
                .reservations(
                    Reservation::builder()
                        .instances(bare("i-0000000000000000a", Required, Enabled))
                        .instances(bare("i-0000000000000000b", Optional, Enabled))
                        .instances(bare("i-0000000000000000c", Required, Enabled))
                        .instances(bare("i-0000000000000000d", Required, Enabled))
                        .instances(bare("i-0000000000000000e", Required, Disabled))
                        .build(),
                )
                .build()
        });
        let ec2 = mock_client!(aws_sdk_ec2, [&instances]);
        let setting = mock!(aws_sdk_ssm::Client::get_service_setting).then_output(|| setting_output("$None"));
        let info = mock!(aws_sdk_ssm::Client::describe_instance_information)
            .match_requests(|r| {
                r.filters()
                    .iter()
                    .any(|f| f.key() == "InstanceIds" && f.values().len() == 5)
            })
            .then_output(|| {
                let i = |id: &str, v: &str, p: PingStatus| {
                    InstanceInformation::builder()
                        .instance_id(id)
                        .agent_version(v)
                        .ping_status(p)
                        .build()
                };
                DescribeInstanceInformationOutput::builder()
                    .instance_information_list(i("i-0000000000000000a", "3.3.40.0", PingStatus::Online))
                    .instance_information_list(i("i-0000000000000000b", "3.3.40.0", PingStatus::ConnectionLost))
                    .instance_information_list(i("i-0000000000000000c", "3.1.1080.0", PingStatus::ConnectionLost))
                    .build()
            });
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&setting, &info]);
        let report = run_prereq(iam, ec2, ssm, false, false).await.unwrap();
        assert_eq!(info.num_calls(), 1);
        let reach: Vec<(&str, &str, Option<&str>)> = report
            .instances_without_profile
            .iter()
            .map(|i| (i.instance_id.as_str(), i.dhmc.as_str(), i.agent_version.as_deref()))
            .collect();
        assert_eq!(
            reach,
            vec![
                ("i-0000000000000000a", "yes", Some("3.3.40.0")),
                ("i-0000000000000000b", "no", Some("3.3.40.0")),
                ("i-0000000000000000c", "no", Some("3.1.1080.0")),
                ("i-0000000000000000d", "unknown", None),
                ("i-0000000000000000e", "no", None),
            ]
        );
        assert_eq!(report.dhmc_unreachable().len(), 3);
        assert_eq!(report.failed(), 0);
        let text = report.to_table();
        println!("{text}");
        assert!(text.contains("DHMC    off in eu-west-1: instances without an instance profile cannot register (prereq --apply --enable-default-host-management turns it on)\n"), "{text}");
        assert!(text.contains("i-0000000000000000b        Linux/UNIX            v1 allowed   3.3.40.0 (ConnectionLost)    no: IMDSv1 allowed (HttpTokens optional)"), "{text}");
        assert!(text.contains("no: SSM Agent 3.1.1080.0 older than 3.2.582.0"), "{text}");
        assert!(text.contains("v2 required  unknown                      unknown: SSM Agent version unknown (SSM does not list the instance)"), "{text}");
        assert!(text.contains("DHMC cannot reach 3 of 5 running instances without an instance profile (IMDSv1 allowed or IMDS off: 2, SSM Agent older than 3.2.582.0: 1); SSM Agent version unknown for 2"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["defaultHostManagement"]["state"], "off");
        assert_eq!(json["region"], "eu-west-1");
        assert_eq!(json["instancesWithoutProfile"][1]["httpTokens"], "optional");
        assert_eq!(
            json["instancesWithoutProfile"][3]["agentVersion"],
            serde_json::Value::Null
        );
        assert_eq!(json["instancesWithoutProfile"][4]["dhmcReasons"][0], IMDS_DISABLED);
    }

    #[tokio::test]
    async fn enabling_dhmc_shows_its_steps_and_a_failed_step_fails_prereq() {
        let roles = mock!(aws_sdk_iam::Client::list_roles)
            .then_output(|| ListRolesOutput::builder().set_roles(Some(vec![])).build().unwrap());
        let no_role = mock!(aws_sdk_iam::Client::get_role).then_error(|| {
            GetRoleError::NoSuchEntityException(aws_sdk_iam::types::error::NoSuchEntityException::builder().build())
        });
        let iam = || mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&roles, &no_role]);
        let ec2 = || mock_client!(aws_sdk_ec2, [&no_instances()]);
        let report = run_prereq(iam(), ec2(), ssm_off(), false, true).await.unwrap();
        assert_eq!(report.failed(), 0);
        let text = report.to_table();
        println!("{text}");
        assert!(
            text.contains("Default Host Management Configuration (dry run: nothing changed; --apply changes it)\n"),
            "{text}"
        );
        assert!(text.contains("role     service-role/AWSSystemsManagerDefaultEC2InstanceManagementRole    would create: trusted by ssm.amazonaws.com\n"), "{text}");
        assert!(
            text.contains("policy   arn:aws:iam::aws:policy/AmazonSSMManagedEC2InstanceDefaultPolicy  would attach\n"),
            "{text}"
        );
        assert!(
            text.contains("setting  service-role/AWSSystemsManagerDefaultEC2InstanceManagementRole    would turn on\n"),
            "{text}"
        );
        assert!(
            text.contains("DHMC    off in eu-west-1; --apply would turn it on with role service-role/AWSSystemsManagerDefaultEC2InstanceManagementRole\n"),
            "{text}"
        );

        let denied = mock!(aws_sdk_iam::Client::create_role).then_error(|| {
            aws_sdk_iam::operation::create_role::CreateRoleError::generic(
                aws_smithy_types::error::ErrorMetadata::builder()
                    .code("AccessDenied")
                    .message("not authorized to perform: iam:CreateRole")
                    .build(),
            )
        });
        let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&roles, &no_role, &denied]);
        let report = run_prereq(iam, ec2(), ssm_off(), true, true).await.unwrap();
        assert_eq!(report.failed(), 1);
        let text = report.to_table();
        println!("{text}");
        assert!(
            text.contains("failed: iam:CreateRole: AccessDenied: not authorized"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn apply_turns_dhmc_on_and_a_setting_already_on_shows_its_role() {
        use aws_sdk_iam::operation::create_role::CreateRoleOutput;
        use aws_sdk_ssm::operation::update_service_setting::UpdateServiceSettingOutput;
        let roles = mock!(aws_sdk_iam::Client::list_roles)
            .then_output(|| ListRolesOutput::builder().set_roles(Some(vec![])).build().unwrap());
        let no_role = mock!(aws_sdk_iam::Client::get_role).then_error(|| {
            GetRoleError::NoSuchEntityException(aws_sdk_iam::types::error::NoSuchEntityException::builder().build())
        });
        let create = mock!(aws_sdk_iam::Client::create_role).then_output(|| {
            let mut r = role(crate::dhmc::DHMC_ROLE_NAME, crate::dhmc::DHMC_TRUST_POLICY);
            r.path = crate::dhmc::DHMC_ROLE_PATH.into();
            CreateRoleOutput::builder().role(r).build()
        });
        let attach =
            mock!(aws_sdk_iam::Client::attach_role_policy).then_output(|| AttachRolePolicyOutput::builder().build());
        let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&roles, &no_role, &create, &attach]);
        let setting = mock!(aws_sdk_ssm::Client::get_service_setting).then_output(|| setting_output("$None"));
        let update = mock!(aws_sdk_ssm::Client::update_service_setting)
            .then_output(|| UpdateServiceSettingOutput::builder().build());
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&setting, &update]);
        let ec2 = mock_client!(aws_sdk_ec2, [&no_instances()]);
        let report = run_prereq(iam, ec2, ssm, true, true).await.unwrap();
        assert_eq!(report.failed(), 0);
        assert_eq!((create.num_calls(), attach.num_calls(), update.num_calls()), (1, 1, 1));
        let text = report.to_table();
        println!("{text}");
        assert!(
            text.contains("setting  service-role/AWSSystemsManagerDefaultEC2InstanceManagementRole    turned on\n"),
            "{text}"
        );
        assert!(
            text.contains("DHMC    on in eu-west-1 since this run (it was off): role service-role/AWSSystemsManagerDefaultEC2InstanceManagementRole\n"),
            "{text}"
        );

        let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&roles]);
        let on = mock!(aws_sdk_ssm::Client::get_service_setting)
            .then_output(|| setting_output("service-role/AWSSystemsManagerDefaultEC2InstanceManagementRole"));
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&on]);
        let ec2 = mock_client!(aws_sdk_ec2, [&no_instances()]);
        let report = run_prereq(iam, ec2, ssm, false, false).await.unwrap();
        let text = report.to_table();
        println!("{text}");
        assert!(text.contains("DHMC    on in eu-west-1: role service-role/AWSSystemsManagerDefaultEC2InstanceManagementRole (for instances without an instance profile; IMDSv2 and SSM Agent 3.2.582.0 or later needed)\n"), "{text}");
    }

    #[test]
    fn only_the_ssm_and_writer_policies_without_confirmation() {
        let writer = "arn:aws:iam::123456789012:policy/fleet-install-CommandOutputWriterPolicy-ABC";
        // The default follows the region's partition.
        assert_eq!(choose_policy(None, "aws", None, false).unwrap(), POLICY);
        assert_eq!(
            choose_policy(None, "aws-cn", None, false).unwrap(),
            "arn:aws-cn:iam::aws:policy/AmazonSSMManagedInstanceCore"
        );
        assert_eq!(
            choose_policy(
                Some("arn:aws-us-gov:iam::aws:policy/AmazonSSMManagedInstanceCore"),
                "aws",
                None,
                false
            )
            .unwrap(),
            "arn:aws-us-gov:iam::aws:policy/AmazonSSMManagedInstanceCore"
        );
        assert_eq!(
            choose_policy(Some(writer), "aws", Some(Ok(writer)), false).unwrap(),
            writer
        );

        let admin = "arn:aws:iam::aws:policy/AdministratorAccess";
        let e = choose_policy(Some(admin), "aws", Some(Ok(writer)), false).unwrap_err();
        assert_eq!(e.command, "prereq");
        assert!(e.message.contains("--allow-any-policy"), "{e}");
        assert!(e.message.contains(writer), "{e}");
        let e = choose_policy(Some(admin), "aws", Some(Err("stack x has no output".into())), false).unwrap_err();
        assert!(e.message.contains("could not be read: stack x has no output"), "{e}");
        assert!(e.message.contains("--allow-any-policy"), "{e}");
        // A look-alike of the SSM policy in a customer account is not the SSM policy.
        let fake = "arn:aws:iam::123456789012:policy/AmazonSSMManagedInstanceCore";
        assert!(!is_ssm_policy(fake));
        assert!(choose_policy(Some(fake), "aws", Some(Ok(writer)), false).is_err());
        assert_eq!(choose_policy(Some(admin), "aws", None, true).unwrap(), admin);
        for bad in ["AmazonSSMManagedInstanceCore", "arn:aws:s3:::bucket", ""] {
            let e = choose_policy(Some(bad), "aws", None, true).unwrap_err();
            assert!(e.message.contains("must be an IAM policy ARN"), "{e}");
        }
    }
}
