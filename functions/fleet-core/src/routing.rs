//! group-by-platform's logic: which document each managed instance gets, and batches of at
//! most 50 (SendCommand's limit). SSM only knows Linux, Windows and MacOS as platform types;
//! the routing table also reads the platform name, so FreeBSD (which reports itself as Linux)
//! and each Linux distribution of the write-up route deliberately, and anything else is skipped
//! with a reason instead of being sent a document that cannot work.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::model::{Batch, BatchInstance, InstanceNote, ManagedInstance, ReasonCode};

/// SendCommand accepts at most 50 instance ids per call.
pub const MAX_BATCH: usize = 50;

/// A batch's `route`: the role of its document. send-command resolves the current document name
/// from the route at send time (a stack update replaces the documents under new names).
pub const LINUX_ROUTE: &str = "linux";
pub const WINDOWS_ROUTE: &str = "windows";
/// The environment variable that names each route's document.
pub const DOCUMENT_NAME_VARIABLES: &[(&str, &str)] = &[
    (LINUX_ROUTE, "LINUX_DOCUMENT_NAME"),
    (WINDOWS_ROUTE, "WINDOWS_DOCUMENT_NAME"),
];

/// Parameter names of the Linux install document (documents/install-agent-linux.yml).
pub const LINUX_PARAMETERS: &[&str] = &[
    "InstallerUrlRpm",
    "InstallerSha256Rpm",
    "InstallerUrlDeb",
    "InstallerSha256Deb",
    "InstallerUrlFreeBsd",
    "InstallerSha256FreeBsd",
    "ServiceName",
    "ExecutionTimeoutSeconds",
];

/// Parameter names of the Windows install document (documents/install-agent-windows.yml).
pub const WINDOWS_PARAMETERS: &[&str] = &[
    "InstallerUrl",
    "InstallerSha256",
    "ServiceName",
    "ExecutionTimeoutSeconds",
];

/// The route of SSM Agent updates: instances whose agent is older than their document needs get
/// AWS's own `AWS-UpdateSSMAgent` first, batched and sent like any install.
pub const AGENT_UPDATE_ROUTE: &str = "agent-update";
/// The AWS-owned document that updates the SSM Agent (its ARN has no account:
/// `arn:<partition>:ssm:<region>::document/AWS-UpdateSSMAgent`).
pub const AGENT_UPDATE_DOCUMENT: &str = "AWS-UpdateSSMAgent";
/// AWS-UpdateSSMAgent is sent at its default version and with no parameters (it installs the latest agent).
pub const AGENT_UPDATE_DOCUMENT_VERSION: &str = "$DEFAULT";

/// Parameters with `interpolationType: ENV_VAR` reach the script as environment variables only from
/// SSM Agent 3.3.2746.0 on; an older agent runs the script without them (the documents exit 2).
pub const ENV_VAR_MIN_AGENT_VERSION: &str = "3.3.2746.0";

/// What one of the install documents' exit codes means, what to do about it, and whether it is
/// worth another attempt. A code is retried only when its cause can clear on its own; a
/// permanent one ends the instance at once with its reason (a resend would fail the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCode {
    pub code: i32,
    pub reason_code: ReasonCode,
    /// What the document says happened.
    pub meaning: &'static str,
    /// What a person does about it.
    pub fix: &'static str,
    pub retry: bool,
}

/// The exit codes of both install documents (documents/*.yml, "Exit codes"). 2-7 are common to both;
/// 8-10 only the Windows document returns. Any other non-zero code (1: an unexpected error) stays a
/// generic, retried CommandFailed.
pub const EXIT_CODES: &[ExitCode] = &[
    // Permanent: the same parameters fail the same way, and an old agent does not update itself.
    ExitCode {
        code: 2,
        reason_code: ReasonCode::BadParameter,
        meaning: "a document parameter is missing or invalid",
        fix: "check the stack's installer parameters (URL, SHA-256, service name); if they are right, the SSM Agent is too old to pass ENV_VAR parameters to the script: update it (AWS-UpdateSSMAgent) and run the install again",
        retry: false,
    },
    // Permanent: the OS, privileges or tools do not change between attempts.
    ExitCode {
        code: 3,
        reason_code: ReasonCode::UnsupportedPlatform,
        meaning: "the operating system or environment is not supported (unknown distribution, no package manager, downloader, SHA-256 tool or service manager, or not run as root/Administrator)",
        fix: "install the agent on this instance by hand, or exclude it with the opt-out tag",
        retry: false,
    },
    // Transient: a network, DNS or repository hiccup at boot often clears within minutes.
    ExitCode {
        code: 4,
        reason_code: ReasonCode::DownloadFailed,
        meaning: "the installer download failed",
        fix: "check that the instance reaches the installer URL over HTTPS (route, proxy, DNS, security groups) and that the URL is right",
        retry: true,
    },
    // Permanent: the file at the URL does not match the configured hash; a resend downloads the same file.
    ExitCode {
        code: 5,
        reason_code: ReasonCode::ChecksumMismatch,
        meaning: "the downloaded installer does not match its SHA-256",
        fix: "publish the right file at the installer URL or set the stack's InstallerSha256 parameter to its SHA-256",
        retry: false,
    },
    // Permanent: the documents already wait out a busy package manager (apt's DPkg::Lock::Timeout of
    // 300 s, yum/dnf's own lock wait, msiexec 1618 retried), so a failure here is the package itself
    // (broken package, conflict, missing dependency), which a resend meets again.
    ExitCode {
        code: 6,
        reason_code: ReasonCode::InstallFailed,
        meaning: "the installer or package manager failed",
        fix: "read the command output in CloudWatch Logs for the package manager's error, fix the package or the instance, then run the install again",
        retry: false,
    },
    // Transient: a service slow to start on a busy new instance; the next run finds the agent
    // installed, starts it and waits again.
    ExitCode {
        code: 7,
        reason_code: ReasonCode::ServiceNotRunning,
        meaning: "the agent's service is not running after install and start",
        fix: "check the service's logs on the instance (systemctl status / journalctl, or the Windows event log) and the service name parameter",
        retry: true,
    },
    // Permanent: an installer that waits for a window nobody clicks hangs again, and every retry
    // would hold the instance for InstallerTimeoutSeconds.
    ExitCode {
        code: 8,
        reason_code: ReasonCode::InstallerTimedOut,
        meaning: "the installer did not finish within InstallerTimeoutSeconds and was killed",
        fix: "make the installer silent (InstallerArguments, e.g. /quiet /norestart) or raise InstallerTimeoutSeconds",
        retry: false,
    },
    // Transient: the installer restarted the instance itself; a later run, after the restart,
    // finds the agent installed and checks its service.
    ExitCode {
        code: 9,
        reason_code: ReasonCode::RebootStarted,
        meaning: "the installer started a reboot (1641) before the service could be checked",
        fix: "nothing, once the instance is back; if it keeps rebooting, install it by hand",
        retry: true,
    },
    // Permanent: nothing reboots the instance on its own (the documents never reboot).
    ExitCode {
        code: 10,
        reason_code: ReasonCode::RebootRequired,
        meaning: "the installer needs a reboot (3010) and the service is not running",
        fix: "reboot the instance in a maintenance window; the next install run (or the service after the restart) completes it",
        retry: false,
    },
];

/// The exit codes each document returns (the Linux document stops at 7).
const LINUX_EXIT_CODES: &[ExitCode] = EXIT_CODES.split_at(6).0;

/// An install document's facts: where it is routed, the variable that names it, its parameters,
/// the oldest SSM Agent that runs it, and its exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentSpec {
    pub kind: DocumentKind,
    pub route: &'static str,
    pub name_variable: &'static str,
    pub parameters: &'static [&'static str],
    pub min_agent_version: &'static str,
    pub exit_codes: &'static [ExitCode],
}

/// The install documents.
pub const DOCUMENTS: &[DocumentSpec] = &[
    DocumentSpec {
        kind: DocumentKind::Linux,
        route: LINUX_ROUTE,
        name_variable: "LINUX_DOCUMENT_NAME",
        parameters: LINUX_PARAMETERS,
        // every parameter is interpolationType ENV_VAR
        min_agent_version: ENV_VAR_MIN_AGENT_VERSION,
        exit_codes: LINUX_EXIT_CODES,
    },
    DocumentSpec {
        kind: DocumentKind::Windows,
        route: WINDOWS_ROUTE,
        name_variable: "WINDOWS_DOCUMENT_NAME",
        parameters: WINDOWS_PARAMETERS,
        min_agent_version: ENV_VAR_MIN_AGENT_VERSION,
        exit_codes: EXIT_CODES,
    },
];

impl DocumentKind {
    pub fn spec(self) -> &'static DocumentSpec {
        DOCUMENTS
            .iter()
            .find(|d| d.kind == self)
            .expect("every document kind has a spec")
    }
}

/// The install document of a route (linux, windows); None for agent updates and unknown routes.
pub fn document_of_route(route: &str) -> Option<&'static DocumentSpec> {
    DOCUMENTS.iter().find(|d| d.route == route)
}

/// What an install document's exit code means; None for 0, for codes it does not define, and for
/// routes that are not install documents.
pub fn exit_code(route: &str, code: i32) -> Option<&'static ExitCode> {
    document_of_route(route)?.exit_codes.iter().find(|e| e.code == code)
}

/// The oldest SSM Agent that can run the install document this platform routes to; None when the
/// platform has no document.
pub fn min_agent_version(platform_type: &str, platform_name: &str) -> Option<&'static str> {
    lookup(platform_type, platform_name).map(|(_, kind)| kind.spec().min_agent_version)
}

/// A dotted numeric version ("3.3.2746.0"); None when empty or a part is not a number.
pub fn parse_version(v: &str) -> Option<Vec<u64>> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    v.split('.').map(|p| p.parse::<u64>().ok()).collect()
}

/// Compare two versions numerically part by part (missing parts count as 0: "3.3" = "3.3.0.0",
/// "3.10" > "3.9"); None when either is unreadable.
pub fn compare_versions(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    let (a, b) = (parse_version(a)?, parse_version(b)?);
    let part = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
    Some(
        (0..a.len().max(b.len()))
            .map(|i| part(&a, i).cmp(&part(&b, i)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal),
    )
}

/// True when `version` is older than `minimum`; None when either is unreadable (an instance whose
/// agent version SSM does not report is not held back: the document's exit code 2 tells then).
pub fn older_than(version: &str, minimum: &str) -> Option<bool> {
    compare_versions(version, minimum).map(|o| o.is_lt())
}

/// A platform family the routing table knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    AmazonLinux,
    Rhel,
    CentOs,
    Rocky,
    Alma,
    Oracle,
    Fedora,
    Ubuntu,
    Debian,
    FreeBsd,
    Windows,
}

/// Which document a family is installed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    Linux,
    Windows,
}

/// The routing table: (platform type, platform name prefix, family, document).
const TABLE: &[(&str, &str, Family, DocumentKind)] = &[
    ("Linux", "Amazon Linux", Family::AmazonLinux, DocumentKind::Linux),
    ("Linux", "Red Hat", Family::Rhel, DocumentKind::Linux),
    ("Linux", "RHEL", Family::Rhel, DocumentKind::Linux),
    ("Linux", "CentOS", Family::CentOs, DocumentKind::Linux),
    ("Linux", "Rocky", Family::Rocky, DocumentKind::Linux),
    ("Linux", "AlmaLinux", Family::Alma, DocumentKind::Linux),
    ("Linux", "Oracle Linux", Family::Oracle, DocumentKind::Linux),
    ("Linux", "Fedora", Family::Fedora, DocumentKind::Linux),
    ("Linux", "Ubuntu", Family::Ubuntu, DocumentKind::Linux),
    ("Linux", "Debian", Family::Debian, DocumentKind::Linux),
    ("Linux", "FreeBSD", Family::FreeBsd, DocumentKind::Linux),
    ("Windows", "", Family::Windows, DocumentKind::Windows),
];

impl Family {
    pub fn label(&self) -> &'static str {
        match self {
            Family::AmazonLinux => "Amazon Linux",
            Family::Rhel => "RHEL",
            Family::CentOs => "CentOS",
            Family::Rocky => "Rocky Linux",
            Family::Alma => "AlmaLinux",
            Family::Oracle => "Oracle Linux",
            Family::Fedora => "Fedora",
            Family::Ubuntu => "Ubuntu",
            Family::Debian => "Debian",
            Family::FreeBsd => "FreeBSD",
            Family::Windows => "Windows",
        }
    }
}

fn lookup(platform_type: &str, platform_name: &str) -> Option<(Family, DocumentKind)> {
    let name = platform_name.trim().to_ascii_lowercase();
    TABLE
        .iter()
        .find(|(t, prefix, _, _)| {
            t.eq_ignore_ascii_case(platform_type) && name.starts_with(&prefix.to_ascii_lowercase())
        })
        .map(|(_, _, f, d)| (*f, *d))
}

/// The family of an SSM (PlatformType, PlatformName) pair, if the table knows it.
pub fn family_of(platform_type: &str, platform_name: &str) -> Option<Family> {
    lookup(platform_type, platform_name).map(|(f, _)| f)
}

/// Where a document kind is sent: the document, its pinned version and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTarget {
    pub route: String,
    pub document_name: String,
    pub document_version: String,
    pub parameters: BTreeMap<String, String>,
}

/// The configured documents. A missing target means that kind is not installed (skipped).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteTable {
    pub linux: Option<RouteTarget>,
    pub windows: Option<RouteTarget>,
}

impl RouteTable {
    fn target(&self, kind: DocumentKind) -> Option<&RouteTarget> {
        match kind {
            DocumentKind::Linux => self.linux.as_ref(),
            DocumentKind::Windows => self.windows.as_ref(),
        }
    }
}

/// The output of routing: batches to send, and instances that have no route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routed {
    pub batches: Vec<Batch>,
    pub skipped: Vec<InstanceNote>,
}

/// Route every managed instance and split each route into batches of at most `max_batch`.
/// Deterministic: the same instances give the same batches in the same order.
pub fn route(instances: &[ManagedInstance], table: &RouteTable, attempt: u32, max_batch: usize) -> Routed {
    let max_batch = max_batch.clamp(1, MAX_BATCH);
    // Verifications (the sweep's drift check) go in batches of their own: their claim differs.
    let mut by_route: BTreeMap<(String, bool), (&RouteTarget, Vec<BatchInstance>)> = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for inst in instances {
        if !seen.insert(inst.instance_id.as_str()) {
            continue;
        }
        let found = lookup(&inst.platform_type, &inst.platform_name);
        match found.and_then(|(family, kind)| table.target(kind).map(|t| (family, t))) {
            Some((family, target)) => by_route
                .entry((target.route.clone(), inst.verify))
                .or_insert_with(|| (target, Vec::new()))
                .1
                .push(BatchInstance {
                    instance_id: inst.instance_id.clone(),
                    platform: family.label().to_string(),
                    agent_version: None,
                }),
            None => {
                let what = format!(
                    "{} {} {}",
                    inst.platform_type, inst.platform_name, inst.platform_version
                );
                let reason = match found {
                    Some((_, kind)) => format!("no {kind:?} document is configured for {}", what.trim()),
                    None => format!("no install document for platform {}", what.trim()),
                };
                skipped.push(InstanceNote {
                    instance_id: inst.instance_id.clone(),
                    reason_code: ReasonCode::NoRoute,
                    reason,
                    platform: Some(crate::classify::platform_label(
                        &inst.platform_type,
                        &inst.platform_name,
                    )),
                });
            }
        }
    }
    let mut batches = Vec::new();
    for ((_, verify), (target, mut members)) in by_route {
        members.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        for chunk in members.chunks(max_batch) {
            batches.push(Batch {
                route: target.route.clone(),
                document_name: target.document_name.clone(),
                document_version: target.document_version.clone(),
                parameters: target.parameters.clone(),
                attempt,
                instances: chunk.to_vec(),
                min_agent_version: None,
                verify,
            });
        }
    }
    Routed { batches, skipped }
}

/// Batches of AWS-UpdateSSMAgent (route `agent-update`) for managed instances whose SSM Agent is older
/// than their install document needs. Each batch names the minimum it updates towards and each
/// instance its current version (for the reason if the update fails). An instance whose document is
/// not configured is skipped with the same reason as `route` gives (updating it would serve nothing).
pub fn route_agent_updates(
    instances: &[ManagedInstance],
    table: &RouteTable,
    attempt: u32,
    max_batch: usize,
) -> Routed {
    let max_batch = max_batch.clamp(1, MAX_BATCH);
    let mut by_minimum: BTreeMap<&'static str, Vec<BatchInstance>> = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for inst in instances {
        if !seen.insert(inst.instance_id.as_str()) {
            continue;
        }
        match lookup(&inst.platform_type, &inst.platform_name) {
            Some((family, kind)) if table.target(kind).is_some() => by_minimum
                .entry(kind.spec().min_agent_version)
                .or_default()
                .push(BatchInstance {
                    instance_id: inst.instance_id.clone(),
                    platform: family.label().to_string(),
                    agent_version: Some(inst.agent_version.clone()),
                }),
            // Same as route(): no document for the platform, or it is not configured.
            _ => skipped.extend(route(std::slice::from_ref(inst), table, attempt, max_batch).skipped),
        }
    }
    let mut batches = Vec::new();
    for (minimum, mut members) in by_minimum {
        members.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        for chunk in members.chunks(max_batch) {
            batches.push(Batch {
                route: AGENT_UPDATE_ROUTE.into(),
                document_name: AGENT_UPDATE_DOCUMENT.into(),
                document_version: AGENT_UPDATE_DOCUMENT_VERSION.into(),
                parameters: BTreeMap::new(),
                attempt,
                instances: chunk.to_vec(),
                min_agent_version: Some(minimum.to_string()),
                verify: false,
            });
        }
    }
    Routed { batches, skipped }
}

/// Deterministic idempotency key of a batch within an execution: the same execution sending
/// the same attempt of the same instances always gets the same key.
pub fn batch_key(execution_id: &str, batch: &Batch) -> String {
    let mut h = Sha256::new();
    h.update(execution_id.as_bytes());
    h.update(b"\n");
    h.update(batch.route.as_bytes());
    h.update(b"\n");
    h.update(batch.attempt.to_string().as_bytes());
    if batch.verify {
        h.update(b"\nverify");
    }
    let mut ids = batch.instance_ids();
    ids.sort();
    for id in ids {
        h.update(b"\n");
        h.update(id.as_bytes());
    }
    let digest = h.finalize();
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// Split ids into chunks of at most `size`, preserving order.
pub fn chunks<T: Clone>(items: &[T], size: usize) -> Vec<Vec<T>> {
    items.chunks(size.max(1)).map(|c| c.to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(n: usize, t: &str, name: &str) -> ManagedInstance {
        ManagedInstance {
            instance_id: format!("i-{n:017x}"),
            platform_type: t.into(),
            platform_name: name.into(),
            platform_version: "1".into(),
            agent_version: "3".into(),
            verify: false,
        }
    }

    fn table() -> RouteTable {
        let t = |route: &str, doc: &str| RouteTarget {
            route: route.into(),
            document_name: doc.into(),
            document_version: "1".into(),
            parameters: BTreeMap::from([("ServiceName".to_string(), "fleet-agent".to_string())]),
        };
        RouteTable {
            linux: Some(t("linux", "LinuxDoc")),
            windows: Some(t("windows", "WinDoc")),
        }
    }

    #[test]
    fn write_up_platforms_route_to_the_right_document() {
        let cases = [
            ("Linux", "Amazon Linux", "LinuxDoc", "Amazon Linux"),
            ("Linux", "Red Hat Enterprise Linux Server", "LinuxDoc", "RHEL"),
            ("Linux", "CentOS Linux", "LinuxDoc", "CentOS"),
            ("Linux", "Fedora", "LinuxDoc", "Fedora"),
            ("Linux", "Ubuntu", "LinuxDoc", "Ubuntu"),
            ("Linux", "Debian GNU/Linux", "LinuxDoc", "Debian"),
            ("Linux", "FreeBSD", "LinuxDoc", "FreeBSD"),
            (
                "Windows",
                "Microsoft Windows Server 2022 Datacenter",
                "WinDoc",
                "Windows",
            ),
        ];
        for (i, (t, name, doc, label)) in cases.iter().enumerate() {
            let r = route(&[inst(i, t, name)], &table(), 1, 50);
            assert_eq!(r.skipped, vec![], "{name}");
            assert_eq!(r.batches.len(), 1);
            assert_eq!(r.batches[0].document_name, *doc, "{name}");
            assert_eq!(r.batches[0].instances[0].platform, *label);
        }
    }

    #[test]
    fn unknown_platforms_are_skipped_with_reason() {
        let r = route(&[inst(1, "MacOS", "macOS"), inst(2, "Linux", "SLES")], &table(), 1, 50);
        assert!(r.batches.is_empty());
        assert_eq!(r.skipped.len(), 2);
        assert!(r.skipped.iter().all(|s| s.reason_code == ReasonCode::NoRoute));
        assert!(r.skipped[1].reason.contains("SLES"), "{}", r.skipped[1].reason);
    }

    #[test]
    fn missing_windows_document_skips_windows_only() {
        let mut t = table();
        t.windows = None;
        let r = route(
            &[
                inst(1, "Windows", "Microsoft Windows Server 2019"),
                inst(2, "Linux", "Ubuntu"),
            ],
            &t,
            1,
            50,
        );
        assert_eq!(r.batches.len(), 1);
        assert_eq!(r.skipped.len(), 1);
        assert!(r.skipped[0].reason.contains("Windows document"));
    }

    #[test]
    fn batches_hold_at_most_fifty_and_cover_every_instance_once() {
        let mut all = Vec::new();
        for n in 0..237 {
            all.push(inst(
                n,
                if n % 5 == 0 { "Windows" } else { "Linux" },
                if n % 5 == 0 { "Windows" } else { "Ubuntu" },
            ));
        }
        all.push(inst(3, "Linux", "Ubuntu")); // duplicate id
        let r = route(&all, &table(), 2, 50);
        assert!(r.batches.iter().all(|b| b.instances.len() <= 50 && b.attempt == 2));
        let mut ids: Vec<_> = r.batches.iter().flat_map(|b| b.instance_ids()).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(n, 237);
        assert_eq!(ids.len(), 237);
        // 190 Linux -> 4 batches, 47 Windows -> 1 batch
        assert_eq!(r.batches.len(), 5);
        let max = route(&all, &table(), 1, 500);
        assert!(max.batches.iter().all(|b| b.instances.len() <= MAX_BATCH));
    }

    #[test]
    fn routing_is_deterministic_and_keys_are_stable() {
        let a: Vec<_> = (0..60).map(|n| inst(n, "Linux", "Ubuntu")).collect();
        let mut b = a.clone();
        b.reverse();
        let ra = route(&a, &table(), 1, 50);
        let rb = route(&b, &table(), 1, 50);
        assert_eq!(ra, rb);
        let k1 = batch_key("arn:exec:1", &ra.batches[0]);
        assert_eq!(k1, batch_key("arn:exec:1", &rb.batches[0]));
        assert_eq!(k1.len(), 24);
        assert_ne!(k1, batch_key("arn:exec:2", &ra.batches[0]));
        assert_ne!(k1, batch_key("arn:exec:1", &ra.batches[1]));
        let mut retry = ra.batches[0].clone();
        retry.attempt = 2;
        assert_ne!(k1, batch_key("arn:exec:1", &retry));
    }

    #[test]
    fn versions_compare_numerically_by_dotted_parts() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("3.3.2746.0", "3.3.2746.0"), Some(Equal));
        assert_eq!(compare_versions("3.3.2746", "3.3.2746.0"), Some(Equal));
        assert_eq!(compare_versions("3.10.0.0", "3.9.9999.0"), Some(Greater));
        assert_eq!(compare_versions("3.3.999.0", "3.3.2746.0"), Some(Less));
        assert_eq!(compare_versions("4", "3.3.2746.0"), Some(Greater));
        assert_eq!(compare_versions(" 3.3.3050.0 ", "3.3.2746.0"), Some(Greater));
        assert_eq!(older_than("3.3.1142.0", ENV_VAR_MIN_AGENT_VERSION), Some(true));
        assert_eq!(older_than("3.3.2745.99", ENV_VAR_MIN_AGENT_VERSION), Some(true));
        assert_eq!(older_than("3.3.2746.0", ENV_VAR_MIN_AGENT_VERSION), Some(false));
        assert_eq!(older_than("3.3.3050.0", ENV_VAR_MIN_AGENT_VERSION), Some(false));
        for unreadable in ["", "3.x.1", "3..1", "v3.3", "-1.0"] {
            assert_eq!(
                older_than(unreadable, ENV_VAR_MIN_AGENT_VERSION),
                None,
                "{unreadable:?}"
            );
        }
    }

    #[test]
    fn each_document_states_its_minimum_agent_and_platforms_find_it() {
        for spec in DOCUMENTS {
            assert_eq!(spec.kind.spec(), spec);
            assert_eq!(document_of_route(spec.route), Some(spec));
            assert!(parse_version(spec.min_agent_version).is_some());
            assert_eq!(
                DOCUMENT_NAME_VARIABLES
                    .iter()
                    .find(|(r, _)| *r == spec.route)
                    .map(|(_, v)| *v),
                Some(spec.name_variable)
            );
        }
        assert_eq!(min_agent_version("Linux", "Ubuntu"), Some(ENV_VAR_MIN_AGENT_VERSION));
        assert_eq!(
            min_agent_version("Windows", "Microsoft Windows Server 2022"),
            Some(ENV_VAR_MIN_AGENT_VERSION)
        );
        assert_eq!(min_agent_version("MacOS", "macOS"), None);
        assert_eq!(document_of_route(AGENT_UPDATE_ROUTE), None);
    }

    #[test]
    fn exit_codes_are_distinct_and_only_what_can_clear_on_its_own_is_retried() {
        let codes: Vec<i32> = EXIT_CODES.iter().map(|e| e.code).collect();
        assert_eq!(codes, (2..=10).collect::<Vec<_>>());
        let reasons: std::collections::BTreeSet<_> = EXIT_CODES.iter().map(|e| e.reason_code).collect();
        assert_eq!(reasons.len(), EXIT_CODES.len(), "one reason code per exit code");
        let retried: Vec<i32> = EXIT_CODES.iter().filter(|e| e.retry).map(|e| e.code).collect();
        assert_eq!(retried, vec![4, 7, 9]);
        assert!(EXIT_CODES.iter().all(|e| !e.meaning.is_empty() && !e.fix.is_empty()));
        // the Linux document returns 2-7, the Windows one 2-10
        assert_eq!(
            exit_code(LINUX_ROUTE, 5).map(|e| e.reason_code),
            Some(ReasonCode::ChecksumMismatch)
        );
        assert_eq!(exit_code(LINUX_ROUTE, 8), None);
        assert_eq!(
            exit_code(WINDOWS_ROUTE, 8).map(|e| e.reason_code),
            Some(ReasonCode::InstallerTimedOut)
        );
        assert_eq!(
            exit_code(WINDOWS_ROUTE, 10).map(|e| e.reason_code),
            Some(ReasonCode::RebootRequired)
        );
        for unknown in [0, 1, 11, 255, -1] {
            assert_eq!(exit_code(WINDOWS_ROUTE, unknown), None, "{unknown}");
        }
        // AWS-UpdateSSMAgent's codes are not ours
        assert_eq!(exit_code(AGENT_UPDATE_ROUTE, 2), None);
    }

    fn aged(n: usize, t: &str, name: &str, agent: &str) -> ManagedInstance {
        ManagedInstance {
            agent_version: agent.into(),
            verify: false,
            ..inst(n, t, name)
        }
    }

    #[test]
    fn agent_updates_go_in_batches_of_fifty_to_aws_update_ssm_agent() {
        let mut all: Vec<_> = (0..120).map(|n| aged(n, "Linux", "Ubuntu", "3.3.1142.0")).collect();
        all.push(aged(500, "Windows", "Microsoft Windows Server 2019", "3.2.582.0"));
        all.push(aged(3, "Linux", "Ubuntu", "3.3.1142.0")); // duplicate
        all.push(aged(600, "MacOS", "macOS", "1.0"));
        let r = route_agent_updates(&all, &table(), 1, 50);
        assert_eq!(
            r.batches.iter().map(|b| b.instances.len()).collect::<Vec<_>>(),
            vec![50, 50, 21]
        );
        for b in &r.batches {
            assert_eq!(b.route, AGENT_UPDATE_ROUTE);
            assert!(b.is_agent_update());
            assert_eq!(b.document_name, "AWS-UpdateSSMAgent");
            assert_eq!(b.document_version, "$DEFAULT");
            assert!(b.parameters.is_empty());
            assert_eq!(b.min_agent_version.as_deref(), Some(ENV_VAR_MIN_AGENT_VERSION));
            assert!(b.instances.iter().all(|i| i.agent_version.is_some()));
        }
        let win = r
            .batches
            .iter()
            .flat_map(|b| &b.instances)
            .find(|i| i.instance_id == inst(500, "", "").instance_id)
            .unwrap();
        assert_eq!(
            (win.platform.as_str(), win.agent_version.as_deref()),
            ("Windows", Some("3.2.582.0"))
        );
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].reason_code, ReasonCode::NoRoute);
        // a document that is not configured: its instances are not updated for nothing
        let mut t = table();
        t.windows = None;
        let r = route_agent_updates(&all, &t, 1, 50);
        assert_eq!(r.batches.iter().map(|b| b.instances.len()).sum::<usize>(), 120);
        assert_eq!(r.skipped.len(), 2);
        assert!(
            r.skipped[0].reason.contains("Windows document"),
            "{}",
            r.skipped[0].reason
        );
        // installs and updates of the same instances never share a batch key
        let install = route(&all[..1], &table(), 1, 50).batches.remove(0);
        let update = route_agent_updates(&all[..1], &table(), 1, 50).batches.remove(0);
        assert_ne!(batch_key("arn:e", &install), batch_key("arn:e", &update));
    }

    #[test]
    fn chunks_split_evenly() {
        let v: Vec<u32> = (0..101).collect();
        let c = chunks(&v, 50);
        assert_eq!(c.iter().map(Vec::len).collect::<Vec<_>>(), vec![50, 50, 1]);
        assert!(chunks::<u32>(&[], 50).is_empty());
    }
}
