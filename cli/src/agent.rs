//! SSM Agent versions: the minimums that matter to the CLI (fleet-core compares versions).
//!
//! Two minimums: Default Host Management Configuration (DHMC) needs SSM Agent 3.2.582.0 or later
//! on the instance, and each install document needs the agent its steps were written for (a
//! property of the document in fleet-core: `routing::DocumentSpec::min_agent_version`).

use fleet_core::routing;

/// The oldest SSM Agent that Default Host Management Configuration can reach.
pub const DHMC_MIN_AGENT_VERSION: &str = "3.2.582.0";

/// The minimum SSM Agent of a route's install document (`linux`, `windows`), from fleet-core;
/// None for agent updates and unknown routes.
pub fn document_min_agent_version(route: &str) -> Option<&'static str> {
    routing::document_of_route(route).map(|d| d.min_agent_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        // the comparison is fleet-core's (tested there); here, the DHMC minimum with it
        assert_eq!(routing::older_than("3.2.532.0", DHMC_MIN_AGENT_VERSION), Some(true));
        assert_eq!(routing::older_than("3.2.582.0", DHMC_MIN_AGENT_VERSION), Some(false));
        assert_eq!(document_min_agent_version("linux"), Some("3.3.2746.0"));
        assert_eq!(document_min_agent_version("windows"), Some("3.3.2746.0"));
        assert_eq!(document_min_agent_version(routing::AGENT_UPDATE_ROUTE), None);
        assert_eq!(document_min_agent_version("macos"), None);
    }
}
