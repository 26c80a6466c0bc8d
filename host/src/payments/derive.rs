//! Watch-only payment addresses: BIP-32 public derivation from an extended public key.
//!
//! The operator configures the `xpub` of an account (for Ethereum wallets, the key of
//! `m/44'/60'/0'/0`); child `i` of it is the address of payment number `i`. Only public
//! derivation is possible from an `xpub`, so the gateway can hand out fresh addresses without
//! ever holding a key that could spend from them; the merchant's wallet, which has the private
//! key, sees the same addresses at `…/0/i`.

use alloy::primitives::{Address, keccak256};
use hmac::{Hmac, Mac};
use k256::elliptic_curve::sec1::ToEncodedPoint as _;
use sha2::Sha512;

/// Version bytes of a mainnet `xpub`.
const XPUB_VERSION: [u8; 4] = [0x04, 0x88, 0xb2, 0x1e];

/// An `xpub` that cannot be used; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XpubError {
    #[error("is not Base58Check text (a typo, or not an xpub): {0}")]
    Encoding(String),
    #[error("is {0} bytes long; an extended key is 78")]
    Length(usize),
    #[error("is not an `xpub` (its version bytes say it is a private or non-mainnet key)")]
    Version,
    #[error("holds an invalid public key")]
    Key,
}

/// A BIP-32 extended public key: the parent of every payment address.
#[derive(Clone)]
pub struct ExtendedPublicKey {
    key: k256::PublicKey,
    chain_code: [u8; 32],
}

impl std::fmt::Debug for ExtendedPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExtendedPublicKey(..)")
    }
}

impl ExtendedPublicKey {
    /// Parses the standard Base58Check `xpub…` text.
    pub fn parse(text: &str) -> Result<Self, XpubError> {
        let bytes = bs58::decode(text.trim())
            .with_check(None)
            .into_vec()
            .map_err(|err| XpubError::Encoding(err.to_string()))?;
        if bytes.len() != 78 {
            return Err(XpubError::Length(bytes.len()));
        }
        if bytes[..4] != XPUB_VERSION {
            return Err(XpubError::Version);
        }
        let mut chain_code = [0; 32];
        chain_code.copy_from_slice(&bytes[13..45]);
        let key = k256::PublicKey::from_sec1_bytes(&bytes[45..78]).map_err(|_| XpubError::Key)?;
        Ok(Self { key, chain_code })
    }

    /// The Ethereum address of non-hardened child `index`; `None` for the astronomically rare
    /// index BIP-32 declares invalid (skip to the next one).
    pub fn address(&self, index: u32) -> Option<Address> {
        assert!(
            index < 0x8000_0000,
            "public derivation has no hardened children"
        );
        let mut mac = Hmac::<Sha512>::new_from_slice(&self.chain_code)
            .expect("HMAC takes a key of any length");
        mac.update(self.key.to_encoded_point(true).as_bytes());
        mac.update(&index.to_be_bytes());
        let digest = mac.finalize().into_bytes();
        let tweak = k256::SecretKey::from_slice(&digest[..32]).ok()?;
        let child = tweak.public_key().to_projective() + self.key.to_projective();
        let child = k256::PublicKey::from_affine(child.into()).ok()?;
        let uncompressed = child.to_encoded_point(false);
        let hash = keccak256(&uncompressed.as_bytes()[1..]);
        Some(Address::from_slice(&hash[12..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `xpub` of m/44'/60'/0'/0 for anvil's default mnemonic (`test test … junk`): its
    /// children are anvil's well-known accounts.
    const ANVIL_XPUB: &str = "xpub6DyUKdwoLWmUJ4Tn9Bbsdtx7B5Ws18mEN19e5HT52ikE53FiUheSQXrZUNPovqfyKmw4579A1Mm3GXXKM39N64uooBfJ4tNAzFsEbodRTx4";

    #[test]
    fn children_of_the_anvil_account_key_are_anvils_accounts() {
        let xpub = ExtendedPublicKey::parse(ANVIL_XPUB).unwrap();
        let expected = [
            (0, "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
            (1, "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            (2, "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"),
            (5, "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"),
            (19, "0x8626f6940E2eb28930eFb4CeF49B2d1F2C9C1199"),
        ];
        for (index, address) in expected {
            assert_eq!(
                xpub.address(index).unwrap(),
                address.parse::<Address>().unwrap(),
                "child {index}"
            );
        }
    }

    #[test]
    fn private_keys_typos_and_garbage_are_refused() {
        let mut typo = ANVIL_XPUB.to_owned();
        typo.replace_range(20..21, "z");
        assert!(matches!(
            ExtendedPublicKey::parse(&typo),
            Err(XpubError::Encoding(_))
        ));
        assert!(ExtendedPublicKey::parse("hello").is_err());
        // The same payload with private-key (xprv) version bytes.
        let mut bytes = bs58::decode(ANVIL_XPUB)
            .with_check(None)
            .into_vec()
            .unwrap();
        bytes[..4].copy_from_slice(&[0x04, 0x88, 0xad, 0xe4]);
        let xprv_like = bs58::encode(bytes).with_check().into_string();
        assert_eq!(
            ExtendedPublicKey::parse(&xprv_like).unwrap_err(),
            XpubError::Version
        );
    }
}
