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
use serde_json::value::RawValue;

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
        keep(&config, &event.data)
    }
}

export_plugin!(MinAmount);

/// The fields the rule reads, with the amount kept as its JSON text: a JSON number is compared
/// digit for digit, never through a float.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    amount: Option<&'a RawValue>,
    #[serde(default)]
    token_id: Option<String>,
}

/// Whether the event's amount reaches the minimum configured for its token; `data` is the
/// event's data object as JSON text.
pub fn keep(config: &Config, data: &str) -> Result<bool, String> {
    let fields: Fields =
        serde_json::from_str(data).map_err(|err| format!("data is not a JSON object: {err}"))?;
    let amount = match fields.amount.map(RawValue::get) {
        None | Some("null") => return Ok(true),
        Some(text) if text.starts_with('"') => serde_json::from_str::<String>(text)
            .map_err(|err| format!("data.amount is not a string: {err}"))?,
        Some(text) if text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) => {
            text.to_owned()
        }
        Some(other) => return Err(format!("data.amount must be a decimal string, got {other}")),
    };
    let token = fields.token_id.as_deref().unwrap_or(NATIVE);
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

    fn keep(config: &Config, data: &serde_json::Value) -> Result<bool, String> {
        super::keep(config, &data.to_string())
    }

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
    fn json_number_amounts_are_compared_exactly_too() {
        let config = config(r#"{"default":"0.3"}"#);
        // As an f64 this number is 0.3; as written it is below the minimum.
        assert!(!super::keep(&config, r#"{"amount":0.29999999999999999}"#).unwrap());
        assert!(super::keep(&config, r#"{"amount":0.30000000000000001}"#).unwrap());
        assert!(super::keep(&config, r#"{"amount":1e3}"#).unwrap());
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
