//! SSM Agent versions: the minimums that matter to the CLI and how versions compare.
//!
//! Two minimums: Default Host Management Configuration (DHMC) needs SSM Agent 3.2.582.0 or later
//! on the instance, and each install document needs the agent its steps were written for.

use std::cmp::Ordering;

/// The oldest SSM Agent that Default Host Management Configuration can reach.
pub const DHMC_MIN_AGENT_VERSION: &str = "3.2.582.0";

/// The oldest SSM Agent the Linux install document (documents/install-agent-linux.yml) runs on.
pub const LINUX_DOCUMENT_MIN_AGENT_VERSION: &str = "3.3.2746.0";
/// The oldest SSM Agent the Windows install document (documents/install-agent-windows.yml) runs on.
pub const WINDOWS_DOCUMENT_MIN_AGENT_VERSION: &str = "3.3.2746.0";

/// The minimum SSM Agent of a route's document (`linux`, `windows`); None for an unknown route.
pub fn document_min_agent_version(route: &str) -> Option<&'static str> {
    match route {
        fleet_core::routing::LINUX_ROUTE => Some(LINUX_DOCUMENT_MIN_AGENT_VERSION),
        fleet_core::routing::WINDOWS_ROUTE => Some(WINDOWS_DOCUMENT_MIN_AGENT_VERSION),
        _ => None,
    }
}

/// A dotted numeric version ("3.2.582.0"); None when empty or any part is not a number.
pub fn parse_version(v: &str) -> Option<Vec<u64>> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    v.split('.').map(|p| p.parse::<u64>().ok()).collect()
}

/// Compare two versions part by part (missing parts count as 0); None if either is unreadable.
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    let (a, b) = (parse_version(a)?, parse_version(b)?);
    let n = a.len().max(b.len());
    let part = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
    Some(
        (0..n)
            .map(|i| part(&a, i).cmp(&part(&b, i)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal),
    )
}

/// True when `version` is older than `minimum`; None when `version` is unknown or unreadable.
pub fn older_than(version: &str, minimum: &str) -> Option<bool> {
    compare_versions(version, minimum).map(|o| o == Ordering::Less)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(older_than("3.2.532.0", DHMC_MIN_AGENT_VERSION), Some(true));
        assert_eq!(older_than("3.2.582.0", DHMC_MIN_AGENT_VERSION), Some(false));
        assert_eq!(older_than("3.10.0.0", "3.9.9999.0"), Some(false));
        assert_eq!(older_than("3.3.2745.9", "3.3.2746.0"), Some(true));
        assert_eq!(older_than("3.3.2746", "3.3.2746.0"), Some(false));
        assert_eq!(older_than("4", "3.3.2746.0"), Some(false));
        assert_eq!(older_than("", "3.3.2746.0"), None);
        assert_eq!(older_than("3.x", "3.3.2746.0"), None);
        assert_eq!(compare_versions("2.3.1319.0", "2.3.1319"), Some(Ordering::Equal));
        assert_eq!(document_min_agent_version("linux"), Some("3.3.2746.0"));
        assert_eq!(document_min_agent_version("windows"), Some("3.3.2746.0"));
        assert_eq!(document_min_agent_version("macos"), None);
    }
}
