use fleet_core::model::Summary;
use fleet_core::rollout::{exceeds_budget, wave_result, WavePlan, WaveResult};
use fleet_core::FleetError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkOutcome {
    #[serde(default)]
    pub summary: Summary,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub wave: WavePlan,
    pub outcomes: Vec<ChunkOutcome>,
    pub max_failure_ratio: f64,
    /// Results of the waves before this one.
    #[serde(default)]
    pub results: Vec<WaveResult>,
    pub waves_total: usize,
    /// The ad-hoc run's specification (`null` for an install rollout): only the message's words change.
    #[serde(default)]
    pub run: Option<Value>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub result: WaveResult,
    pub results: Vec<WaveResult>,
    pub budget_exceeded: bool,
    pub more_waves: bool,
    pub message: String,
}

pub async fn handle(payload: Value) -> Result<Response, FleetError> {
    let req: Request = serde_json::from_value(payload).map_err(|e| {
        FleetError::invalid_input(format!(
            "evaluate-wave expects {{wave, outcomes, maxFailureRatio, wavesTotal}}: {e}"
        ))
    })?;
    if !(0.0..=1.0).contains(&req.max_failure_ratio) {
        return Err(FleetError::invalid_input("maxFailureRatio must be between 0 and 1"));
    }
    let summaries: Vec<Summary> = req.outcomes.into_iter().map(|o| o.summary).collect();
    let result = wave_result(req.wave.wave, &req.wave.label, &summaries);
    let budget_exceeded = exceeds_budget(&result, req.max_failure_ratio);
    let more_waves = !budget_exceeded && req.wave.wave + 1 < req.waves_total;
    let (done, unreached) = match req.run.as_ref().filter(|r| !r.is_null()) {
        Some(_) => ("succeeded", "unreachable"),
        None => ("installed", "unmanaged"),
    };
    let message = format!(
        "{}: {} {done}, {} failed, {} {unreached}, {} skipped; failure ratio {:.3} {} budget {:.3}",
        result.label,
        result.installed,
        result.failed,
        result.unmanaged,
        result.skipped,
        result.failure_ratio,
        if budget_exceeded { "exceeds" } else { "within" },
        req.max_failure_ratio
    );
    tracing::info!(message, "wave evaluated");
    let mut results = req.results;
    results.push(result.clone());
    Ok(Response {
        result,
        results,
        budget_exceeded,
        more_waves,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_run_wave_counts_succeeded_and_unreachable_and_stops_over_budget() {
        let out = handle(serde_json::json!({
            "wave": {"wave": 0, "label": "canary", "instances": 4, "chunks": []},
            "outcomes": [{"summary": {"byState": {"succeeded": 1, "failed": 2, "unreachable": 1}}}],
            "maxFailureRatio": 0.5, "wavesTotal": 3, "run": {"documents": []}}))
        .await
        .unwrap();
        assert_eq!(
            (out.result.installed, out.result.failed, out.result.unmanaged),
            (1, 2, 1)
        );
        assert!(
            out.message.contains("1 succeeded, 2 failed, 1 unreachable"),
            "{}",
            out.message
        );
        assert!(out.budget_exceeded);
        assert!(!out.more_waves);
    }

    fn outcome(installed: u64, failed: u64) -> Value {
        serde_json::json!({"summary": {"byState": {"installed": installed, "failed": failed}}})
    }

    fn wave(n: usize) -> Value {
        serde_json::json!({"wave": n, "label": if n == 0 { "canary".to_string() } else { format!("wave {n}") }, "instances": 10, "chunks": []})
    }

    #[tokio::test]
    async fn a_canary_over_budget_stops_the_rollout() {
        let r = handle(
            serde_json::json!({"wave": wave(0), "outcomes": [outcome(7, 3)], "maxFailureRatio": 0.1, "wavesTotal": 4}),
        )
        .await
        .unwrap();
        assert!(r.budget_exceeded);
        assert!(!r.more_waves);
        assert!(r.message.contains("exceeds"), "{}", r.message);
    }

    #[tokio::test]
    async fn a_good_wave_continues_until_the_last() {
        let r = handle(serde_json::json!({"wave": wave(1), "outcomes": [outcome(50, 1), outcome(49, 0)], "maxFailureRatio": 0.05, "wavesTotal": 3, "results": [{"wave": 0, "label": "canary", "instances": 10, "installed": 10, "failed": 0, "unmanaged": 0, "skipped": 0, "duplicate": 0, "failureRatio": 0.0}]}))
            .await
            .unwrap();
        assert!(!r.budget_exceeded);
        assert!(r.more_waves);
        assert_eq!(r.result.installed, 99);
        assert_eq!(r.results.len(), 2);
        let last = handle(
            serde_json::json!({"wave": wave(2), "outcomes": [outcome(5, 0)], "maxFailureRatio": 0.05, "wavesTotal": 3}),
        )
        .await
        .unwrap();
        assert!(!last.more_waves);
    }

    #[tokio::test]
    async fn bad_input() {
        let err = handle(serde_json::json!({"wave": wave(0), "outcomes": [], "maxFailureRatio": 2.0, "wavesTotal": 1}))
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT);
        let err = handle(serde_json::json!({})).await.unwrap_err();
        assert_eq!(err.error_type(), fleet_core::error::INVALID_INPUT);
    }
}
