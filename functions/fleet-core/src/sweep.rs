//! The sweep's decisions: what a running instance needs, given its ledger record. Pure logic.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::compliance::RunningInstance;
use crate::model::LedgerState;
use crate::record::LedgerRecord;

/// How the sweep treats installed and failed instances.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// An installed instance is verified again (the drift check) when its last verification is
    /// at least this old. Zero: at every sweep.
    pub verify_interval: Duration,
    /// Verify every installed instance, whatever its last verification (`fleet-install sweep --verify-all`).
    pub verify_all: bool,
    /// A failed instance's first sweep retry is followed by this wait, doubled at every further one...
    pub retry_base: Duration,
    /// ... up to this.
    pub retry_max: Duration,
    /// An `installing` item not updated for this long belongs to a run that died: installed again.
    pub stale_installing: Duration,
}

/// What a running instance needs from this sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Work {
    /// No ledger item: its event was lost, its message ended in the DLQ, or it ran before the stack.
    NeverSeen,
    /// Unmanaged or pending registration: classified again (installed if it is managed now).
    Reclassify,
    /// Failed, and its retry time has come.
    Retry,
    /// Skipped when its event came (stopped, opted out since cleared, ...), running now.
    Resume,
    /// An `installing` item nobody has updated for long.
    Stale,
    /// Installed: verified (the install document's "already installed and running" path, which
    /// puts a removed or stopped agent back).
    Verify,
}

impl Work {
    pub fn as_str(&self) -> &'static str {
        match self {
            Work::NeverSeen => "neverSeen",
            Work::Reclassify => "reclassify",
            Work::Retry => "retry",
            Work::Resume => "resume",
            Work::Stale => "stale",
            Work::Verify => "verify",
        }
    }
}

/// What the sweep does with one running instance; None: nothing (compliant and verified
/// recently, opted out, in progress, waiting for its retry time, or without a document).
pub fn decide(inst: &RunningInstance, record: Option<&LedgerRecord>, now: DateTime<Utc>, s: &Settings) -> Option<Work> {
    if inst.opted_out {
        return None;
    }
    let Some(r) = record else {
        return Some(Work::NeverSeen);
    };
    match r.state {
        None | Some(LedgerState::Gone) => Some(Work::NeverSeen),
        Some(LedgerState::Installed) => {
            let last = r.verified().or_else(|| r.updated());
            let due = s.verify_all || last.is_none_or(|t| now - t >= s.verify_interval);
            due.then_some(Work::Verify)
        }
        Some(LedgerState::Unmanaged) | Some(LedgerState::PendingRegistration) => Some(Work::Reclassify),
        Some(LedgerState::Failed) => r.retry_after_time().is_none_or(|t| t <= now).then_some(Work::Retry),
        Some(LedgerState::Skipped) => (r.reason_code.as_deref() != Some("NoRoute")).then_some(Work::Resume),
        Some(LedgerState::Installing) => r
            .updated()
            .is_none_or(|t| now - t >= s.stale_installing)
            .then_some(Work::Stale),
    }
}

/// The wait after a failed instance's `attempt`-th sweep retry (1-based): base, 2 x base, 4 x
/// base, ... capped at `max`.
pub fn backoff(attempt: u64, base: Duration, max: Duration) -> Duration {
    let doublings = attempt.saturating_sub(1).min(30) as i32;
    let wait = base * 2i32.pow(doublings.min(20) as u32);
    if wait > max {
        max
    } else {
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        crate::record::parse_time(s).unwrap()
    }

    fn settings() -> Settings {
        Settings {
            verify_interval: Duration::hours(24),
            verify_all: false,
            retry_base: Duration::hours(12),
            retry_max: Duration::days(7),
            stale_installing: Duration::hours(24),
        }
    }

    fn inst() -> RunningInstance {
        RunningInstance {
            instance_id: "i-1".into(),
            launch_time: None,
            opted_out: false,
            platform: None,
        }
    }

    fn rec(state: LedgerState) -> LedgerRecord {
        LedgerRecord {
            instance_id: "i-1".into(),
            state: Some(state),
            updated_at: Some("2026-12-01T00:00:00.000Z".into()),
            ..Default::default()
        }
    }

    #[test]
    fn decides_by_state() {
        let now = t("2026-12-01T06:00:00Z");
        let s = settings();
        let d = |r: Option<LedgerRecord>| decide(&inst(), r.as_ref(), now, &s);
        assert_eq!(d(None), Some(Work::NeverSeen));
        assert_eq!(d(Some(rec(LedgerState::Unmanaged))), Some(Work::Reclassify));
        assert_eq!(d(Some(rec(LedgerState::PendingRegistration))), Some(Work::Reclassify));
        assert_eq!(d(Some(rec(LedgerState::Failed))), Some(Work::Retry));
        assert_eq!(d(Some(rec(LedgerState::Installing))), None);
        assert_eq!(d(Some(rec(LedgerState::Gone))), Some(Work::NeverSeen));
        // verified 6 h ago, interval 24 h: nothing
        assert_eq!(d(Some(rec(LedgerState::Installed))), None);
        let mut skipped = rec(LedgerState::Skipped);
        skipped.reason_code = Some("Stopped".into());
        assert_eq!(d(Some(skipped.clone())), Some(Work::Resume));
        skipped.reason_code = Some("NoRoute".into());
        assert_eq!(d(Some(skipped)), None);
        let opted = RunningInstance {
            opted_out: true,
            ..inst()
        };
        assert_eq!(decide(&opted, None, now, &s), None);
    }

    #[test]
    fn verification_follows_the_interval_or_verify_all() {
        let s = settings();
        let mut r = rec(LedgerState::Installed);
        r.verified_at = Some("2026-11-30T00:00:00.000Z".into());
        assert_eq!(decide(&inst(), Some(&r), t("2026-11-30T23:00:00Z"), &s), None);
        assert_eq!(
            decide(&inst(), Some(&r), t("2026-12-01T00:00:00Z"), &s),
            Some(Work::Verify)
        );
        let all = Settings {
            verify_all: true,
            ..settings()
        };
        assert_eq!(
            decide(&inst(), Some(&r), t("2026-11-30T01:00:00Z"), &all),
            Some(Work::Verify)
        );
        let every = Settings {
            verify_interval: Duration::zero(),
            ..settings()
        };
        assert_eq!(
            decide(&inst(), Some(&r), t("2026-11-30T00:00:00Z"), &every),
            Some(Work::Verify)
        );
    }

    #[test]
    fn failed_instances_wait_for_their_retry_time() {
        let s = settings();
        let mut r = rec(LedgerState::Failed);
        r.retry_after = Some("2026-12-01T12:00:00.000Z".into());
        assert_eq!(decide(&inst(), Some(&r), t("2026-12-01T11:59:59Z"), &s), None);
        assert_eq!(
            decide(&inst(), Some(&r), t("2026-12-01T12:00:00Z"), &s),
            Some(Work::Retry)
        );
    }

    #[test]
    fn stale_installing_items_are_installed_again() {
        let s = settings();
        let r = rec(LedgerState::Installing);
        assert_eq!(
            decide(&inst(), Some(&r), t("2026-12-02T00:00:00Z"), &s),
            Some(Work::Stale)
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let (b, m) = (Duration::hours(12), Duration::days(7));
        assert_eq!(backoff(1, b, m), Duration::hours(12));
        assert_eq!(backoff(2, b, m), Duration::hours(24));
        assert_eq!(backoff(4, b, m), Duration::hours(96));
        assert_eq!(backoff(5, b, m), Duration::days(7));
        assert_eq!(backoff(1000, b, m), Duration::days(7));
        assert_eq!(backoff(0, b, m), Duration::hours(12));
    }
}
