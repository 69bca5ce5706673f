//! Argument parsing and validation that clap cannot express: tags, wave sizes, execution
//! names, timestamps.

use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use fleet_core::rollout::WaveSize;
use serde::{Deserialize, Serialize};

/// One `--tag KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagPair {
    pub key: String,
    pub value: String,
}

/// Parse `KEY=VALUE` (split at the first `=`; the value may contain `=`; `*` and `?` are EC2
/// filter wildcards).
pub fn parse_tag(s: &str) -> Result<TagPair, String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(format!("expected KEY=VALUE, got {s:?}"));
    };
    if key.trim().is_empty() {
        return Err(format!("the tag key is empty in {s:?}"));
    }
    if value.is_empty() {
        return Err(format!(
            "the tag value is empty in {s:?} (use {key}=* to match any value)"
        ));
    }
    if key.chars().count() > 128 || value.chars().count() > 256 {
        return Err("EC2 tag keys are at most 128 characters and values at most 256".to_string());
    }
    Ok(TagPair {
        key: key.to_string(),
        value: value.to_string(),
    })
}

/// A tag filter as the rollout workflow takes it: instances match when they carry the key with
/// any of the values; all filters must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagFilter {
    pub key: String,
    pub values: Vec<String>,
}

/// Group repeated keys into one filter (values ORed), keeping the order in which keys and
/// values were first given and dropping duplicate values.
pub fn group_tags(tags: &[TagPair]) -> Vec<TagFilter> {
    let mut out: Vec<TagFilter> = Vec::new();
    for t in tags {
        match out.iter_mut().find(|f| f.key == t.key) {
            Some(f) => {
                if !f.values.contains(&t.value) {
                    f.values.push(t.value.clone());
                }
            }
            None => out.push(TagFilter {
                key: t.key.clone(),
                values: vec![t.value.clone()],
            }),
        }
    }
    out
}

/// `key=v1|v2, key2=v3`: for messages and tables.
pub fn describe_tags(filters: &[TagFilter]) -> String {
    filters
        .iter()
        .map(|f| format!("{}={}", f.key, f.values.join("|")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The default when neither `--wave-size` nor `--wave-percent` is given.
pub const DEFAULT_WAVE_PERCENT: f64 = 10.0;

/// `--wave-size N` or `--wave-percent P` (clap makes them exclusive), validated.
pub fn wave_size(size: Option<usize>, percent: Option<f64>) -> Result<WaveSize> {
    match (size, percent) {
        (Some(_), Some(_)) => bail!("give either --wave-size or --wave-percent, not both"),
        (Some(0), None) => bail!("--wave-size must be at least 1"),
        (Some(n), None) => Ok(WaveSize::Count(n)),
        (None, Some(p)) if p.is_finite() && p > 0.0 && p <= 100.0 => Ok(WaveSize::Percent(p)),
        (None, Some(p)) => bail!("--wave-percent must be greater than 0 and at most 100, got {p}"),
        (None, None) => Ok(WaveSize::Percent(DEFAULT_WAVE_PERCENT)),
    }
}

/// `--max-failure-ratio`: a ratio of failed to attempted installs, 0 to 1.
pub fn failure_ratio(f: f64) -> Result<f64> {
    if f.is_finite() && (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        bail!("--max-failure-ratio must be between 0 and 1 (0.05 = 5%), got {f}")
    }
}

/// A whole number of at least `min`. clap lets negative-looking values (`-1`) reach the numeric
/// options' parsers (`allow_negative_numbers`), so that the answer says what the option takes
/// rather than "unexpected argument '-1' found". clap prefixes the message with the option and
/// the value, and exits with 2.
fn whole_number(s: &str, min: u64, what: &str) -> Result<u64, String> {
    let t = s.trim();
    let at_least = if min == 0 {
        "0 or more".to_string()
    } else {
        format!("at least {min}")
    };
    match t.parse::<i128>() {
        Ok(n) if n < i128::from(min) => Err(format!("must be {at_least} ({what}), got {t}")),
        Ok(n) => u64::try_from(n).map_err(|_| format!("{t} is too large ({what})")),
        Err(_) => Err(format!("must be a whole number, {at_least} ({what}), got {t:?}")),
    }
}

fn number(s: &str, what: &str) -> Result<f64, String> {
    let t = s.trim();
    match t.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(f),
        _ => Err(format!("must be a number ({what}), got {t:?}")),
    }
}

/// `--canary N`: 0 or more instances (0: no canary).
pub fn parse_canary(s: &str) -> Result<usize, String> {
    let n = whole_number(s, 0, "instances in the canary wave; 0: no canary")?;
    usize::try_from(n).map_err(|_| format!("{n} is too large"))
}

/// `--wave-size N`: at least 1 instance per wave.
pub fn parse_wave_size(s: &str) -> Result<usize, String> {
    let n = whole_number(s, 1, "instances per wave")?;
    usize::try_from(n).map_err(|_| format!("{n} is too large"))
}

/// `--wave-percent P`: more than 0 and at most 100.
pub fn parse_wave_percent(s: &str) -> Result<f64, String> {
    const WHAT: &str = "percent of the targets per wave";
    let p = number(s, WHAT)?;
    if p > 0.0 && p <= 100.0 {
        Ok(p)
    } else {
        Err(format!("must be greater than 0 and at most 100 ({WHAT}), got {p}"))
    }
}

/// `--max-failure-ratio F`: 0 to 1.
pub fn parse_failure_ratio(s: &str) -> Result<f64, String> {
    const WHAT: &str = "failed / (installed + failed); 0.05 = 5%";
    let f = number(s, WHAT)?;
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err(format!("must be between 0 and 1 ({WHAT}), got {f}"))
    }
}

/// `--pause SECONDS`: 0 or more.
/// `--execution-timeout`: 1 to 172800 seconds (48 hours, the longest SSM's run documents allow).
pub fn parse_execution_timeout(s: &str) -> Result<u64, String> {
    let max = fleet_core::run::MAX_EXECUTION_TIMEOUT_SECONDS;
    match s.trim().parse::<i64>() {
        Ok(n) if (1..=max as i64).contains(&n) => Ok(n as u64),
        Ok(n) => Err(format!("{n} must be between 1 and {max} seconds (48 hours)")),
        Err(_) => Err(format!("{s:?} must be a whole number of seconds, 1 to {max}")),
    }
}

pub fn parse_pause(s: &str) -> Result<u32, String> {
    let n = whole_number(s, 0, "seconds between waves")?;
    u32::try_from(n).map_err(|_| format!("must be at most {} seconds, got {n}", u32::MAX))
}

/// Step Functions execution names have at most this many characters (Unicode code points, not
/// bytes).
pub const MAX_EXECUTION_NAME: usize = 80;

/// Step Functions execution names: 1-80 characters, no whitespace, none of `<>{}[]?*"#%\^|~`$&,;:/`
/// and no control characters. A name the operator gives is checked, never cut.
pub fn execution_name(name: &str) -> Result<String> {
    const FORBIDDEN: &str = "<>{}[]?*\"#%\\^|~`$&,;:/";
    if name.is_empty() || name.chars().count() > MAX_EXECUTION_NAME {
        bail!(
            "an execution name has 1 to {MAX_EXECUTION_NAME} characters, {name:?} has {}",
            name.chars().count()
        );
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || FORBIDDEN.contains(*c))
    {
        bail!("an execution name cannot contain {c:?}: {name:?}");
    }
    Ok(name.to_string())
}

/// A generated execution name: `base` then `suffix` (which tells executions apart and is kept
/// whole), `base` cut at a character boundary so that the name has at most 80 characters. Never
/// slices bytes, so multibyte characters are never split.
pub fn cut_name(base: &str, suffix: &str) -> String {
    let suffix_chars = suffix.chars().count();
    if suffix_chars >= MAX_EXECUTION_NAME {
        return suffix.chars().skip(suffix_chars - MAX_EXECUTION_NAME).collect();
    }
    let mut name: String = base.chars().take(MAX_EXECUTION_NAME - suffix_chars).collect();
    name.push_str(suffix);
    name
}

/// The UTC timestamp used in generated names: yyyymmddThhmmss.
pub fn name_timestamp(now: DateTime<Utc>) -> String {
    now.format("%Y%m%dT%H%M%S").to_string()
}

/// A generated execution name that no other call makes: `<prefix>-<UTC yyyymmddThhmmss>-<suffix>`
/// (the suffix: [`unique_suffix`], 8 random hex digits), so that two runs started within the same
/// second get different names. Step Functions refuses a name twice, or (an execution of that name
/// still running, with the same input) returns the running one instead of starting a new one.
/// `sweep`, `replay` and `rollout` (without `--name`) name their executions with it.
pub fn unique_name(prefix: &str, now: DateTime<Utc>, suffix: &str) -> String {
    cut_name(&format!("{prefix}-{}", name_timestamp(now)), &format!("-{suffix}"))
}

/// Eight hex digits that differ from one call (and one process) to the next: std's RandomState is
/// seeded randomly per process and per instance, and the clock's nanoseconds and the process id go
/// in too. Two names made within the same second get different suffixes (1 chance in 4 billion
/// of a clash).
pub fn unique_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    format!("{:08x}", h.finish() as u32)
}

/// Parse an RFC 3339 time and normalise it to the ledger's format (UTC, milliseconds, `Z`), so
/// that string comparison with `updatedAt` is time comparison.
pub fn since(s: &str) -> Result<String> {
    let t = DateTime::parse_from_rfc3339(s)
        .with_context(|| format!("{s:?} is not an RFC 3339 time (e.g. 2026-11-25T18:00:00Z)"))?;
    Ok(t.with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::Millis, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(k: &str, v: &str) -> TagPair {
        TagPair {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn tags_parse_at_the_first_equals_sign() {
        assert_eq!(parse_tag("env=prod").unwrap(), tag("env", "prod"));
        assert_eq!(parse_tag("query=a=b").unwrap(), tag("query", "a=b"));
        assert_eq!(
            parse_tag("aws:cloudformation:stack-name=web").unwrap().key,
            "aws:cloudformation:stack-name"
        );
        assert_eq!(parse_tag("team=*").unwrap().value, "*");
    }

    #[test]
    fn bad_tags_are_explained() {
        assert!(parse_tag("env").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_tag("=prod").unwrap_err().contains("key is empty"));
        assert!(parse_tag("env=").unwrap_err().contains("env=*"));
        assert!(parse_tag(&format!("{}=x", "k".repeat(129))).is_err());
    }

    #[test]
    fn repeated_keys_are_grouped_in_order() {
        let g = group_tags(&[
            tag("env", "prod"),
            tag("team", "web"),
            tag("env", "staging"),
            tag("env", "prod"),
        ]);
        assert_eq!(
            g,
            vec![
                TagFilter {
                    key: "env".into(),
                    values: vec!["prod".into(), "staging".into()]
                },
                TagFilter {
                    key: "team".into(),
                    values: vec!["web".into()]
                },
            ]
        );
        assert_eq!(describe_tags(&g), "env=prod|staging, team=web");
        assert_eq!(
            serde_json::to_value(&g[1]).unwrap(),
            serde_json::json!({"key": "team", "values": ["web"]})
        );
    }

    #[test]
    fn wave_size_arguments() {
        assert_eq!(wave_size(None, None).unwrap(), WaveSize::Percent(10.0));
        assert_eq!(wave_size(Some(50), None).unwrap(), WaveSize::Count(50));
        assert_eq!(wave_size(None, Some(25.0)).unwrap(), WaveSize::Percent(25.0));
        assert_eq!(wave_size(None, Some(100.0)).unwrap(), WaveSize::Percent(100.0));
        assert!(wave_size(Some(0), None).is_err());
        for p in [0.0, -1.0, 100.5, f64::NAN, f64::INFINITY] {
            assert!(wave_size(None, Some(p)).is_err(), "{p}");
        }
        assert!(wave_size(Some(1), Some(1.0)).is_err());
        assert!(failure_ratio(0.05).is_ok());
        assert!(failure_ratio(1.0).is_ok());
        assert!(failure_ratio(1.5).is_err());
        assert!(failure_ratio(-0.1).is_err());
    }

    #[test]
    fn generated_names_are_cut_at_character_boundaries() {
        // 100 characters of 1 to 4 bytes each: byte slicing at 80 would split a character.
        let base: String = "é漢🚀a".repeat(25);
        assert!(base.len() > 80 && base.chars().count() == 100);
        let n = cut_name(&base, "-12");
        assert_eq!(n.chars().count(), MAX_EXECUTION_NAME);
        assert!(n.ends_with("-12"));
        assert!(base.starts_with(n.trim_end_matches("-12")));
        assert!(execution_name(&n).is_ok());
        assert_eq!(cut_name(&base, "").chars().count(), 80);
        assert_eq!(cut_name("replay-20261125T180000", "-1"), "replay-20261125T180000-1");
        let long_suffix = "ü".repeat(90);
        assert_eq!(cut_name("base", &long_suffix), "ü".repeat(80));
        assert_eq!(cut_name("", ""), "");
    }

    #[test]
    fn unique_suffixes_differ() {
        let all: std::collections::HashSet<String> = (0..1000).map(|_| unique_suffix()).collect();
        assert_eq!(all.len(), 1000);
        assert!(all
            .iter()
            .all(|s| s.len() == 8 && s.chars().all(|c| c.is_ascii_hexdigit())));
    }

    #[test]
    fn execution_names_and_times() {
        assert!(execution_name("rollout-20261125T180000").is_ok());
        assert!(execution_name("").is_err());
        assert!(execution_name("has space").is_err());
        assert!(execution_name("a:b").is_err());
        assert!(execution_name(&"x".repeat(81)).is_err());
        // Characters, not bytes: 80 two-byte characters are a valid name, 81 are not.
        assert!(execution_name(&"é".repeat(80)).is_ok());
        assert!(execution_name(&"é".repeat(81))
            .unwrap_err()
            .to_string()
            .contains("has 81"));
        assert!(execution_name("déploiement-été-🚀").is_ok());
        let t = DateTime::parse_from_rfc3339("2026-11-25T18:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(name_timestamp(t), "20261125T180405");
        assert_eq!(since("2026-11-25T19:00:00+01:00").unwrap(), "2026-11-25T18:00:00.000Z");
        assert!(since("yesterday").unwrap_err().to_string().contains("RFC 3339"));
    }
}
