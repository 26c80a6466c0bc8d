//! `slack`: turns a payment event into a Slack incoming-webhook message.
//!
//! Body: `{"text": "...", "blocks": [...]}` — a plain-text fallback plus a section with the
//! summary and a fields grid (amount, chain, address, payment id) and, when configured, a
//! link to the transaction. Config (optional): `{"explorer_url": "https://etherscan.io/tx/"}`
//! (the tx hash is appended) and `{"title": "Shop payments"}`.

use hookgate_plugin::{Event, Outgoing, Plugin, export_plugin};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub explorer_url: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
}

struct Slack;

impl Plugin for Slack {
    fn transform(event: &Event, config: &str) -> Result<Outgoing, String> {
        let config: Config = hookgate_plugin::config(config)?;
        Outgoing::json(&message(&config, &event.event_type, &event.data_json()?))
    }
}

export_plugin!(Slack);

/// The Slack message for an event.
pub fn message(config: &Config, event_type: &str, data: &Value) -> Value {
    let text_of = |name: &str| match &data[name] {
        Value::String(text) => text.clone(),
        Value::Null => "—".to_owned(),
        other => other.to_string(),
    };
    let token = match &data["token_id"] {
        Value::String(token) => token.to_uppercase(),
        _ => "native coin".to_owned(),
    };
    let headline = headline(event_type);
    let amount = format!("{} {token}", text_of("amount"));
    let text = format!("{headline}: {amount} on {}", text_of("chain"));
    let title = config.title.as_deref().unwrap_or("Hookgate");
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*{headline}* ({title})\n{amount} on {}", text_of("chain"))}}),
        json!({"type": "section", "fields": [
            {"type": "mrkdwn", "text": format!("*Amount*\n{amount}")},
            {"type": "mrkdwn", "text": format!("*Status*\n{}", text_of("status"))},
            {"type": "mrkdwn", "text": format!("*Address*\n`{}`", text_of("address"))},
            {"type": "mrkdwn", "text": format!("*Payment*\n`{}`", text_of("payment_id"))},
        ]}),
    ];
    if let (Some(explorer), Some(tx)) = (&config.explorer_url, data["tx_hash"].as_str()) {
        blocks.push(json!({"type": "context", "elements": [
            {"type": "mrkdwn", "text": format!("<{explorer}{tx}|View transaction>")}
        ]}));
    }
    json!({"text": text, "blocks": blocks})
}

/// A human headline for an event type: `payment.confirmed` → `Payment confirmed`.
fn headline(event_type: &str) -> String {
    let words = event_type.replace(['.', '_'], " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => "Event".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Value {
        json!({"payment_id":"p1","status":"confirmed","address":"0xabc","amount":"12.5",
               "chain":"ethereum","token_id":"usdc","tx_hash":"0xfeed"})
    }

    #[test]
    fn the_message_has_fallback_text_and_blocks() {
        let message = message(&Config::default(), "payment.confirmed", &data());
        assert_eq!(message["text"], "Payment confirmed: 12.5 USDC on ethereum");
        let blocks = message["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 2);
        assert!(
            blocks[1]["fields"][3]["text"]
                .as_str()
                .unwrap()
                .contains("p1")
        );
    }

    #[test]
    fn an_explorer_url_adds_a_transaction_link() {
        let config = Config {
            explorer_url: Some("https://etherscan.io/tx/".into()),
            title: None,
        };
        let message = message(&config, "payment.confirmed", &data());
        let link = message["blocks"][2]["elements"][0]["text"]
            .as_str()
            .unwrap();
        assert_eq!(link, "<https://etherscan.io/tx/0xfeed|View transaction>");
    }

    #[test]
    fn native_payments_say_so() {
        let mut data = data();
        data["token_id"] = Value::Null;
        let message = message(&Config::default(), "payment.detected", &data);
        assert_eq!(
            message["text"],
            "Payment detected: 12.5 native coin on ethereum"
        );
    }
}
