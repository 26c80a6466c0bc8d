//! Token amounts: exact decimal text ⇄ raw on-chain integers.
//!
//! A payment's amount is given as decimal text ("12.5") in the token's units and kept as the
//! raw integer the chain uses (`12500000` for a 6-decimal token), a U256, so no amount the
//! chain can carry overflows (10^30 and beyond work). The conversion is done on the digits
//! themselves: `rust_decimal`'s 96-bit mantissa stops near 7.9 × 10^28 raw units, which an
//! 18-decimal token passes at 79 billion coins, so it is not used for amounts.

use alloy::primitives::U256;

/// Amount text that cannot be a payment amount; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("`{0}` is not a decimal amount like \"12.5\"")]
    NotDecimal(String),
    #[error("`{text}` has more than {decimals} decimal places, the token's precision")]
    TooPrecise { text: String, decimals: u8 },
    #[error("`{0}` does not fit in 256 bits of raw units")]
    TooLarge(String),
    #[error("the amount must be greater than zero")]
    Zero,
}

/// Parses `text` (digits, optionally one `.` and more digits) into raw units of a token with
/// `decimals` decimals.
pub fn parse(text: &str, decimals: u8) -> Result<U256, AmountError> {
    let not_decimal = || AmountError::NotDecimal(text.chars().take(80).collect());
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (text, ""),
    };
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || text.ends_with('.') {
        return Err(not_decimal());
    }
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > usize::from(decimals) {
        return Err(AmountError::TooPrecise {
            text: text.to_owned(),
            decimals,
        });
    }
    let padding = "0".repeat(usize::from(decimals) - fraction.len());
    let raw = format!("{whole}{fraction}{padding}");
    let value =
        U256::from_str_radix(&raw, 10).map_err(|_| AmountError::TooLarge(text.to_owned()))?;
    if value.is_zero() {
        return Err(AmountError::Zero);
    }
    Ok(value)
}

/// Formats raw units as decimal text with no trailing zeros (`12500000`, 6 → `"12.5"`).
pub fn format(raw: U256, decimals: u8) -> String {
    let digits = raw.to_string();
    let decimals = usize::from(decimals);
    if decimals == 0 {
        return digits;
    }
    let padded = format!("{digits:0>width$}", width = decimals + 1);
    let (whole, fraction) = padded.split_at(padded.len() - decimals);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        whole.to_owned()
    } else {
        format!("{whole}.{fraction}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_text_becomes_raw_units_exactly() {
        assert_eq!(parse("12.5", 6).unwrap(), U256::from(12_500_000u64));
        assert_eq!(parse("0.000001", 6).unwrap(), U256::from(1u64));
        assert_eq!(parse("3", 0).unwrap(), U256::from(3u64));
        assert_eq!(parse("1.50", 1).unwrap(), U256::from(15u64));
        assert_eq!(
            parse("1", 18).unwrap(),
            U256::from(1_000_000_000_000_000_000u64)
        );
    }

    #[test]
    fn amounts_past_64_and_96_bits_keep_every_digit() {
        let huge = "1000000000000000000000000000000"; // 10^30 coins
        let raw = parse(huge, 18).unwrap();
        assert_eq!(raw.to_string(), format!("{huge}{}", "0".repeat(18)));
        assert_eq!(format(raw, 18), huge);
        let odd = "123456789012345678901234567890.123456789012345678";
        assert_eq!(format(parse(odd, 18).unwrap(), 18), odd);
    }

    #[test]
    fn raw_units_format_without_trailing_zeros() {
        assert_eq!(format(U256::from(12_500_000u64), 6), "12.5");
        assert_eq!(format(U256::from(1u64), 6), "0.000001");
        assert_eq!(format(U256::from(5_000_000u64), 6), "5");
        assert_eq!(format(U256::ZERO, 6), "0");
        assert_eq!(format(U256::from(42u64), 0), "42");
    }

    #[test]
    fn malformed_or_imprecise_amounts_are_refused_with_a_reason() {
        for bad in ["", ".5", "5.", "1e3", "-1", "1,5", " 1", "0x10", "1.2.3"] {
            assert!(
                matches!(parse(bad, 6), Err(AmountError::NotDecimal(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse("0.0000001", 6),
            Err(AmountError::TooPrecise { .. })
        ));
        assert_eq!(parse("0.000", 6), Err(AmountError::Zero));
        let too_big = "1".repeat(80);
        assert!(matches!(parse(&too_big, 0), Err(AmountError::TooLarge(_))));
    }
}
