//! `unmanaged`: the instances the ledger records as unmanaged or skipped, with the reason.

use anyhow::Result;
use fleet_core::model::LedgerState;
use serde::Serialize;

use crate::args::since;
use crate::cli::UnmanagedArgs;
use crate::context::{Context, Report};
use crate::ledger::{query_by_state, LedgerRecord};
use crate::table::{section, Table};

pub const STATES: [LedgerState; 2] = [LedgerState::Unmanaged, LedgerState::Skipped];

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnmanagedReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    pub instances: Vec<LedgerRecord>,
}

impl Report for UnmanagedReport {
    fn to_table(&self) -> String {
        let mut t = Table::new(&[
            "INSTANCE",
            "STATE",
            "REASON CODE",
            "PLATFORM",
            "SINCE",
            "UPDATED",
            "REASON",
        ]);
        for r in &self.instances {
            t.row([
                r.instance_id.clone(),
                crate::ledger::state_label(r).to_string(),
                r.reason_code.clone().unwrap_or_default(),
                r.platform.clone().unwrap_or_default(),
                r.created_at.clone().unwrap_or_default(),
                r.updated_at.clone().unwrap_or_default(),
                r.reason.clone().unwrap_or_default(),
            ]);
        }
        let since = match &self.since {
            Some(s) => format!(" (changed since {s})"),
            None => String::new(),
        };
        let title = if t.is_empty() {
            format!("Unmanaged and skipped instances{since}")
        } else {
            format!("Unmanaged and skipped instances{since}: {}", t.len())
        };
        section(&title, &t, "none")
    }
}

pub async fn run(ctx: &Context, args: &UnmanagedArgs) -> Result<UnmanagedReport> {
    let since = args.since.as_deref().map(since).transpose()?;
    let outputs = ctx.outputs().await?;
    ctx.progress.update("reading the ledger");
    let r = unmanaged(&ctx.dynamodb(), outputs.ledger_table()?, since.as_deref()).await;
    ctx.progress.clear();
    r
}

pub async fn unmanaged(db: &aws_sdk_dynamodb::Client, table: &str, since: Option<&str>) -> Result<UnmanagedReport> {
    let mut instances = Vec::new();
    for state in STATES {
        instances.extend(query_by_state(db, table, state, since).await?);
    }
    Ok(UnmanagedReport {
        since: since.map(str::to_string),
        instances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::attr;
    use crate::ledger::tests::item;
    use aws_sdk_dynamodb::operation::query::QueryOutput;
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    fn with_reason(mut i: crate::ledger::Item, code: &str, reason: &str) -> crate::ledger::Item {
        i.insert(attr::REASON_CODE.into(), AttributeValue::S(code.into()));
        i.insert(attr::REASON.into(), AttributeValue::S(reason.into()));
        i.insert(attr::PLATFORM.into(), AttributeValue::S("Linux/UNIX".into()));
        i
    }

    #[tokio::test]
    async fn follows_every_page_of_both_states() {
        let since = "2026-11-25T00:00:00.000Z";
        let is = |state: &'static str| {
            move |r: &aws_sdk_dynamodb::operation::query::QueryInput| {
                r.index_name() == Some("byState")
                    && r.table_name() == Some("ledger")
                    && r.expression_attribute_values()
                        .is_some_and(|v| v.get(":s") == Some(&AttributeValue::S(state.into())))
                    && r.key_condition_expression() == Some("#s = :s AND #u >= :since")
                    && r.expression_attribute_values()
                        .is_some_and(|v| v.get(":since") == Some(&AttributeValue::S(since.into())))
            }
        };
        let unmanaged_pages = mock!(aws_sdk_dynamodb::Client::query)
            .match_requests(is("unmanaged"))
            .sequence()
            .output(|| {
                QueryOutput::builder()
                    .items(with_reason(
                        item("i-0000000000000000a", "unmanaged", "2026-11-25T01:00:00.000Z"),
                        "NoInstanceProfile",
                        "no IAM instance profile",
                    ))
                    .last_evaluated_key(
                        crate::ledger::attr::INSTANCE_ID,
                        AttributeValue::S("i-0000000000000000a".into()),
                    )
                    .build()
            })
            .output(|| {
                QueryOutput::builder()
                    .items(item("batch#abc", "unmanaged", "2026-11-25T02:00:00.000Z"))
                    .items(item("rollout#r1#w0#c0", "unmanaged", "2026-11-25T02:00:00.000Z"))
                    .items(with_reason(
                        item("i-0000000000000000b", "unmanaged", "2026-11-25T02:00:00.000Z"),
                        "AgentNotReporting",
                        "SSM agent never registered\nafter 900s",
                    ))
                    .last_evaluated_key(
                        crate::ledger::attr::INSTANCE_ID,
                        AttributeValue::S("i-0000000000000000b".into()),
                    )
                    .build()
            })
            .output(|| QueryOutput::builder().build())
            .build();
        let skipped_pages = mock!(aws_sdk_dynamodb::Client::query)
            .match_requests(is("skipped"))
            .then_output(|| {
                QueryOutput::builder()
                    .items(with_reason(
                        item("i-0000000000000000c", "skipped", "2026-11-25T03:00:00.000Z"),
                        "OptedOut",
                        "opted out by tag fleet-install:opt-out",
                    ))
                    .build()
            });
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&unmanaged_pages, &skipped_pages]);
        let r = unmanaged(&db, "ledger", Some(since)).await.unwrap();
        assert_eq!(unmanaged_pages.num_calls(), 3);
        assert_eq!(skipped_pages.num_calls(), 1);
        let ids: Vec<&str> = r.instances.iter().map(|i| i.instance_id.as_str()).collect();
        assert_eq!(
            ids,
            vec!["i-0000000000000000a", "i-0000000000000000b", "i-0000000000000000c"]
        );
        let text = r.to_table();
        println!("{text}");
        assert!(text.starts_with("Unmanaged and skipped instances (changed since 2026-11-25T00:00:00.000Z): 3\n"));
        assert!(text.contains("i-0000000000000000b  unmanaged  AgentNotReporting  Linux/UNIX  2026-11-25T10:00:00.000Z  2026-11-25T02:00:00.000Z  SSM agent never registered after 900s"), "{text}");
    }

    #[tokio::test]
    async fn no_since_means_no_range_condition() {
        let q = mock!(aws_sdk_dynamodb::Client::query)
            .match_requests(|r| r.key_condition_expression() == Some("#s = :s"))
            .then_output(|| QueryOutput::builder().build());
        let db = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&q]);
        let r = unmanaged(&db, "ledger", None).await.unwrap();
        assert!(r.instances.is_empty());
        assert_eq!(q.num_calls(), 2);
        assert_eq!(r.to_table(), "Unmanaged and skipped instances: none\n");
    }
}
