//! `min-amount`: drops payment events whose amount is below a minimum, per token.
//!
//! Config: `{"default": "10", "tokens": {"usdc": "25", "native": "0.01"}}`. The rule is picked
//! by the event's `data.token_id` (`native` when it is null: the chain's own coin), falling
//! back to `default`; with no rule the event is kept. Amounts are compared as exact decimals,
//! never as floats. Events without an amount (e.g. `payment.expired`) are kept.

use std::collections::HashMap;
use std::str::FromStr;

use hookgate_plugin::{Event, Plugin, export_plugin};
use rust_decimal::Decimal;
use serde::Deserialize;

/// The key that stands for the chain's native coin (`token_id` null).
pub const NATIVE: &str = "native";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub tokens: HashMap<String, String>,
}

struct MinAmount;

impl Plugin for MinAmount {
    fn filter(event: &Event, config: &str) -> Result<bool, String> {
        let config: Config = hookgate_plugin::config(config)?;
        let data = event.data_json()?;
        keep(&config, &data)
    }
}

export_plugin!(MinAmount);

/// Whether the event's amount reaches the minimum configured for its token.
pub fn keep(config: &Config, data: &serde_json::Value) -> Result<bool, String> {
    let amount = match &data["amount"] {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Number(number) => number.to_string(),
        serde_json::Value::Null => return Ok(true),
        other => return Err(format!("data.amount must be a decimal string, got {other}")),
    };
    let token = data["token_id"].as_str().unwrap_or(NATIVE);
    let Some(minimum) = config.tokens.get(token).or(config.default.as_ref()) else {
        return Ok(true);
    };
    let amount = parse(&amount, "data.amount")?;
    let minimum = parse(minimum, &format!("the minimum for `{token}`"))?;
    Ok(amount >= minimum)
}

fn parse(text: &str, what: &str) -> Result<Decimal, String> {
    Decimal::from_str(text.trim())
        .or_else(|_| Decimal::from_scientific(text.trim()))
        .map_err(|_| format!("{what} `{text}` is not a decimal number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(text: &str) -> Config {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn amounts_below_the_token_minimum_are_dropped() {
        let config = config(r#"{"default":"10","tokens":{"usdc":"25"}}"#);
        assert!(!keep(&config, &json!({"amount":"24.99","token_id":"usdc"})).unwrap());
        assert!(keep(&config, &json!({"amount":"25","token_id":"usdc"})).unwrap());
    }

    #[test]
    fn the_default_applies_to_tokens_without_a_rule() {
        let config = config(r#"{"default":"10","tokens":{"usdc":"25"}}"#);
        assert!(!keep(&config, &json!({"amount":"9.5","token_id":"dai"})).unwrap());
        assert!(keep(&config, &json!({"amount":"10.0","token_id":"dai"})).unwrap());
    }

    #[test]
    fn a_null_token_is_the_native_coin() {
        let config = config(r#"{"tokens":{"native":"0.01"}}"#);
        assert!(!keep(&config, &json!({"amount":"0.009","token_id":null})).unwrap());
        assert!(
            keep(
                &config,
                &json!({"amount":"0.010000000000000001","token_id":null})
            )
            .unwrap()
        );
    }

    #[test]
    fn comparison_is_exact_where_floats_would_round() {
        let config = config(r#"{"default":"0.3"}"#);
        // 0.1 + 0.2 style trouble: 0.29999999999999999 < 0.3 exactly.
        assert!(!keep(&config, &json!({"amount":"0.29999999999999999"})).unwrap());
    }

    #[test]
    fn events_without_an_amount_or_a_rule_are_kept() {
        assert!(keep(&config(r#"{"default":"10"}"#), &json!({"status":"expired"})).unwrap());
        assert!(keep(&Config::default(), &json!({"amount":"1"})).unwrap());
    }

    #[test]
    fn a_malformed_amount_is_an_error_not_a_silent_drop() {
        let err = keep(&config(r#"{"default":"10"}"#), &json!({"amount":"ten"})).unwrap_err();
        assert!(err.contains("not a decimal"), "{err}");
    }
}
