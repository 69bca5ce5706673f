//! Configuration from the environment, with errors that name the variable.

use std::collections::BTreeMap;

use crate::error::FleetError;
use crate::routing::{RouteTable, RouteTarget};

/// Read a required variable from `get` (the environment in production, a map in tests).
pub fn required(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<String, FleetError> {
    match get(name) {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => Err(FleetError::Configuration(format!(
            "environment variable {name} is not set"
        ))),
    }
}

/// Read an optional variable, falling back to `default`.
pub fn optional(get: &impl Fn(&str) -> Option<String>, name: &str, default: &str) -> String {
    get(name)
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| default.to_string())
}

/// Read a number, with the variable's name in the error.
pub fn number<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
) -> Result<T, FleetError> {
    match get(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| FleetError::Configuration(format!("environment variable {name}={v:?} is not a number"))),
    }
}

pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The routing table from the environment: documents, pinned version, installer parameters.
/// A document whose name is unset is not routed to (its instances are skipped with that reason).
pub fn route_table(get: &impl Fn(&str) -> Option<String>) -> Result<RouteTable, FleetError> {
    let version = optional(get, "DOCUMENT_VERSION", "1");
    let timeout = number::<u32>(get, "EXECUTION_TIMEOUT_SECONDS", 900)?.to_string();
    let linux = match get("LINUX_DOCUMENT_NAME").filter(|v| !v.is_empty()) {
        None => None,
        Some(document_name) => {
            let mut p = BTreeMap::new();
            for (param, var) in [
                ("InstallerUrlRpm", "INSTALLER_URL_RPM"),
                ("InstallerSha256Rpm", "INSTALLER_SHA256_RPM"),
                ("InstallerUrlDeb", "INSTALLER_URL_DEB"),
                ("InstallerSha256Deb", "INSTALLER_SHA256_DEB"),
                ("InstallerUrlFreeBsd", "INSTALLER_URL_FREEBSD"),
                ("InstallerSha256FreeBsd", "INSTALLER_SHA256_FREEBSD"),
                ("ServiceName", "SERVICE_NAME_LINUX"),
            ] {
                p.insert(param.to_string(), required(get, var)?);
            }
            p.insert("ExecutionTimeoutSeconds".into(), timeout.clone());
            Some(RouteTarget {
                route: crate::routing::LINUX_ROUTE.into(),
                document_name,
                document_version: version.clone(),
                parameters: p,
            })
        }
    };
    let windows = match get("WINDOWS_DOCUMENT_NAME").filter(|v| !v.is_empty()) {
        None => None,
        Some(document_name) => {
            let mut p = BTreeMap::new();
            for (param, var) in [
                ("InstallerUrl", "INSTALLER_URL_WINDOWS"),
                ("InstallerSha256", "INSTALLER_SHA256_WINDOWS"),
                ("ServiceName", "SERVICE_NAME_WINDOWS"),
            ] {
                p.insert(param.to_string(), required(get, var)?);
            }
            p.insert("ExecutionTimeoutSeconds".into(), timeout);
            Some(RouteTarget {
                route: crate::routing::WINDOWS_ROUTE.into(),
                document_name,
                document_version: version,
                parameters: p,
            })
        }
    };
    if linux.is_none() && windows.is_none() {
        return Err(FleetError::Configuration(
            "neither LINUX_DOCUMENT_NAME nor WINDOWS_DOCUMENT_NAME is set: nothing can be installed".into(),
        ));
    }
    Ok(RouteTable { linux, windows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{LINUX_PARAMETERS, WINDOWS_PARAMETERS};

    fn full() -> BTreeMap<&'static str, &'static str> {
        BTreeMap::from([
            ("LINUX_DOCUMENT_NAME", "Linux-Doc"),
            ("WINDOWS_DOCUMENT_NAME", "Win-Doc"),
            ("INSTALLER_URL_RPM", "https://x/a.rpm"),
            ("INSTALLER_SHA256_RPM", "00"),
            ("INSTALLER_URL_DEB", "https://x/a.deb"),
            ("INSTALLER_SHA256_DEB", "00"),
            ("INSTALLER_URL_FREEBSD", "https://x/a.pkg"),
            ("INSTALLER_SHA256_FREEBSD", "00"),
            ("INSTALLER_URL_WINDOWS", "https://x/a.msi"),
            ("INSTALLER_SHA256_WINDOWS", "00"),
            ("SERVICE_NAME_LINUX", "fleet-agent"),
            ("SERVICE_NAME_WINDOWS", "FleetAgent"),
        ])
    }

    #[test]
    fn route_table_passes_exactly_the_document_parameters() {
        let m = full();
        let t = route_table(&|k: &str| m.get(k).map(|v| v.to_string())).unwrap();
        let linux: Vec<_> = t.linux.as_ref().unwrap().parameters.keys().cloned().collect();
        let mut expected: Vec<_> = LINUX_PARAMETERS.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(linux, expected);
        let win: Vec<_> = t.windows.as_ref().unwrap().parameters.keys().cloned().collect();
        let mut expected: Vec<_> = WINDOWS_PARAMETERS.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(win, expected);
        assert_eq!(t.linux.unwrap().document_version, "1");
    }

    #[test]
    fn missing_variable_is_named() {
        let mut m = full();
        m.remove("INSTALLER_URL_DEB");
        let err = route_table(&|k: &str| m.get(k).map(|v| v.to_string())).unwrap_err();
        assert!(err.to_string().contains("INSTALLER_URL_DEB"), "{err}");
        assert_eq!(err.error_type(), crate::error::CONFIGURATION);
        let err = route_table(&|_: &str| None).unwrap_err();
        assert!(err.to_string().contains("nothing can be installed"));
        let bad = |k: &str| (k == "N").then(|| "x".to_string());
        assert!(number::<u32>(&bad, "N", 1).is_err());
    }
}
