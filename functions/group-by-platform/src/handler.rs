use fleet_core::model::{Batch, InstanceNote, ManagedInstance, ReasonCode};
use fleet_core::routing::{route, route_agent_updates, RouteTable, MAX_BATCH};
use fleet_core::FleetError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub managed: Vec<ManagedInstance>,
    /// Managed instances whose SSM Agent is too old for their document: AWS-UpdateSSMAgent batches.
    #[serde(default)]
    pub agent_update: Vec<ManagedInstance>,
    #[serde(default = "first_attempt")]
    pub attempt: u32,
}

fn first_attempt() -> u32 {
    1
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub batches: Vec<Batch>,
    /// Managed instances without a document for their platform.
    pub skipped: Vec<InstanceNote>,
}

pub async fn handle(table: &RouteTable, payload: Value) -> Result<Response, FleetError> {
    let req: Request = serde_json::from_value(payload).map_err(|e| {
        FleetError::invalid_input(format!(
            "group-by-platform expects {{managed: [{{instanceId, platformType, platformName}}]}}: {e}"
        ))
    })?;
    if req.attempt == 0 {
        return Err(FleetError::invalid_input("attempt starts at 1"));
    }
    // A malformed id never reaches a batch (send-command would write it as a ledger key): it is
    // skipped with the reason, and record-unmanaged counts it without writing it.
    let valid = |m: &ManagedInstance| fleet_core::model::is_valid_instance_id(&m.instance_id);
    let (managed, mut malformed): (Vec<_>, Vec<_>) = req.managed.into_iter().partition(valid);
    let (agent_update, malformed_update): (Vec<_>, Vec<_>) = req.agent_update.into_iter().partition(valid);
    malformed.extend(malformed_update);
    let mut routed = route(&managed, table, req.attempt, MAX_BATCH);
    // Agent updates go out with the installs, in their own batches (route agent-update).
    let updates = route_agent_updates(&agent_update, table, req.attempt, MAX_BATCH);
    routed.batches.extend(updates.batches);
    routed.skipped.extend(updates.skipped);
    for m in malformed {
        tracing::warn!(
            instance_id = fleet_core::text::clip(&m.instance_id, 64),
            "malformed instance id in the managed list: skipped"
        );
        routed.skipped.push(InstanceNote {
            instance_id: m.instance_id,
            reason_code: ReasonCode::MalformedInstanceId,
            reason: "not an EC2 instance id (expected i- and 8 or 17 lowercase hex digits)".into(),
            platform: None,
        });
    }
    tracing::info!(
        managed = managed.len(),
        agent_update = agent_update.len(),
        batches = routed.batches.len(),
        skipped = routed.skipped.len(),
        "routed instances"
    );
    Ok(Response {
        batches: routed.batches,
        skipped: routed.skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn table() -> RouteTable {
        let env = BTreeMap::from([
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
        ]);
        fleet_core::config::route_table(&|k: &str| env.get(k).map(|v| v.to_string())).unwrap()
    }

    #[tokio::test]
    async fn routes_the_write_up_fleet() {
        let platforms = [
            ("Linux", "Amazon Linux"),
            ("Linux", "CentOS Linux"),
            ("Linux", "FreeBSD"),
            ("Windows", "Microsoft Windows Server 2019 Datacenter"),
            ("MacOS", "macOS"),
        ];
        let managed: Vec<_> = (0..120)
            .map(|n| {
                let (t, name) = platforms[n % platforms.len()];
                serde_json::json!({"instanceId": format!("i-{n:017x}"), "platformType": t, "platformName": name, "platformVersion": "1"})
            })
            .collect();
        let r = handle(&table(), serde_json::json!({"managed": managed})).await.unwrap();
        let linux: usize = r
            .batches
            .iter()
            .filter(|b| b.document_name == "Linux-Doc")
            .map(|b| b.instances.len())
            .sum();
        let win: usize = r
            .batches
            .iter()
            .filter(|b| b.document_name == "Win-Doc")
            .map(|b| b.instances.len())
            .sum();
        assert_eq!((linux, win, r.skipped.len()), (72, 24, 24));
        assert!(r.batches.iter().all(|b| b.instances.len() <= 50 && b.attempt == 1));
        assert_eq!(r.batches.len(), 3); // 72 Linux -> 50 + 22, 24 Windows -> 1
        assert!(r.batches[0].parameters.contains_key("InstallerUrlDeb"));
    }

    #[tokio::test]
    async fn too_old_agents_get_aws_update_ssm_agent_batches_beside_the_installs() {
        let old = |n: u32| serde_json::json!({"instanceId": format!("i-{n:017x}"), "platformType": "Linux", "platformName": "Ubuntu", "agentVersion": "3.3.1142.0"});
        let r = handle(
            &table(),
            serde_json::json!({
                "managed": [{"instanceId": "i-0123456789abcdef0", "platformType": "Linux", "platformName": "Ubuntu", "agentVersion": "3.3.3050.0"}],
                "agentUpdate": (0..60).map(old).chain([serde_json::json!({"instanceId": "i-nope", "platformType": "Linux", "platformName": "Ubuntu"})]).collect::<Vec<_>>(),
                "attempt": 1
            }),
        )
        .await
        .unwrap();
        let (updates, installs): (Vec<_>, Vec<_>) = r.batches.iter().partition(|b| b.is_agent_update());
        assert_eq!(installs.len(), 1);
        assert_eq!(installs[0].document_name, "Linux-Doc");
        assert_eq!(
            updates.iter().map(|b| b.instances.len()).collect::<Vec<_>>(),
            vec![50, 10]
        );
        for b in &updates {
            assert_eq!(
                (b.document_name.as_str(), b.document_version.as_str()),
                ("AWS-UpdateSSMAgent", "$DEFAULT")
            );
            assert!(b.parameters.is_empty());
            assert_eq!(b.min_agent_version.as_deref(), Some("3.3.2746.0"));
        }
        // the batch as it travels: the update's instance carries its version, an install's does not
        let json = serde_json::to_value(&r.batches).unwrap();
        assert!(json.to_string().contains(r#""agentVersion":"3.3.1142.0""#));
        assert!(json[0]["instances"][0].get("agentVersion").is_none());
        assert!(json[0].get("minAgentVersion").is_none());
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].reason_code, ReasonCode::MalformedInstanceId);
        // older workflows pass no agentUpdate
        let r = handle(&table(), serde_json::json!({"managed": []})).await.unwrap();
        assert!(r.batches.is_empty());
    }

    #[tokio::test]
    async fn empty_and_malformed_input() {
        let r = handle(&table(), serde_json::json!({"managed": []})).await.unwrap();
        assert!(r.batches.is_empty() && r.skipped.is_empty());
        let err = handle(&table(), serde_json::json!({"managed": [{"instanceId": 3}]}))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT);
        let r = handle(
            &table(),
            serde_json::json!({"managed": [
                {"instanceId": "i-0123456789abcdef0", "platformType": "Linux", "platformName": "Ubuntu"},
                {"instanceId": "i-bad id", "platformType": "Linux", "platformName": "Ubuntu"}
            ]}),
        )
        .await
        .unwrap();
        assert_eq!(r.batches.len(), 1);
        assert_eq!(r.batches[0].instance_ids(), vec!["i-0123456789abcdef0"]);
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].reason_code, ReasonCode::MalformedInstanceId);
        let err = handle(&table(), serde_json::json!({"managed": [], "attempt": 0}))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT);
    }
}
