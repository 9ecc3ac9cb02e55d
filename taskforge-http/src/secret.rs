//! API token secrets: `tf_`, 32 bytes from the OS's random number
//! generator in base62 (43 characters), and a 6-character base62 checksum
//! (the first 4 bytes of the SHA-256 of what precedes it). The checksum
//! lets a mistyped or truncated token be refused without a store lookup,
//! and lets secret scanners recognise a token with few false positives.

use std::fmt;

use sha2::{Digest, Sha256};
use taskforge_core::store::TokenDigest;

/// What every token starts with.
pub const TOKEN_PREFIX: &str = "tf_";

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BODY_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
/// How many characters of a token are kept as its public prefix (with `tf_`).
const SHOWN: usize = TOKEN_PREFIX.len() + 8;

/// A token's secret, as shown once to whoever made it. `Debug` and
/// `Display` do not print it; [`TokenSecret::expose`] does.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

/// Why a string is not a well-formed token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedToken {
    /// It does not start with `tf_`.
    Prefix,
    /// It has the wrong length or characters outside base62.
    Shape,
    /// Its checksum does not match: mistyped or truncated.
    Checksum,
}

impl fmt::Display for MalformedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Prefix => "token does not start with tf_",
            Self::Shape => "token has the wrong length or characters",
            Self::Checksum => "token checksum does not match (mistyped or truncated?)",
        })
    }
}

impl std::error::Error for MalformedToken {}

impl TokenSecret {
    /// A new secret from the operating system's random number generator.
    ///
    /// # Errors
    /// If the OS has no randomness to give (then no token can be made).
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self::from_random(bytes))
    }

    fn from_random(bytes: [u8; 32]) -> Self {
        let body = base62(&bytes, BODY_LEN);
        let checksum = checksum(&body);
        Self(format!("{TOKEN_PREFIX}{body}{checksum}"))
    }

    /// Checks the shape and checksum of `text`, without any lookup.
    ///
    /// # Errors
    /// A [`MalformedToken`] saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, MalformedToken> {
        let rest = text
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(MalformedToken::Prefix)?;
        if rest.len() != BODY_LEN + CHECKSUM_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(MalformedToken::Shape);
        }
        let (body, sum) = rest.split_at(BODY_LEN);
        if checksum(body) != sum {
            return Err(MalformedToken::Checksum);
        }
        Ok(Self(text.to_owned()))
    }

    /// The secret itself: show it once, never log it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What a store keeps instead of it.
    #[must_use]
    pub fn digest(&self) -> TokenDigest {
        TokenDigest::of(&self.0)
    }

    /// Its public prefix: `tf_` and 8 characters, enough to tell tokens
    /// apart in a listing, far too few to guess the rest.
    #[must_use]
    pub fn prefix(&self) -> String {
        self.0[..SHOWN].to_owned()
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSecret({}…)", self.prefix())
    }
}

/// `bytes` as a big-endian number in base62, left-padded to `width` digits.
fn base62(bytes: &[u8], width: usize) -> String {
    let mut number = bytes.to_vec();
    let mut digits = Vec::with_capacity(width);
    for _ in 0..width {
        let mut remainder = 0u32;
        for byte in &mut number {
            let value = (remainder << 8) | u32::from(*byte);
            *byte = (value / 62) as u8;
            remainder = value % 62;
        }
        digits.push(ALPHABET[remainder as usize]);
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

fn checksum(body: &str) -> String {
    let hash = Sha256::digest(body.as_bytes());
    base62(&hash[..4], CHECKSUM_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_typos_do_not() {
        let secret = TokenSecret::generate().expect("os randomness");
        let text = secret.expose();
        assert_eq!(text.len(), 3 + BODY_LEN + CHECKSUM_LEN);
        assert_eq!(TokenSecret::parse(text).as_ref(), Ok(&secret));
        assert_eq!(
            TokenSecret::parse(&text[..text.len() - 1]),
            Err(MalformedToken::Shape)
        );
        let mut typo = text.as_bytes().to_vec();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).expect("ascii");
        assert_eq!(TokenSecret::parse(&typo), Err(MalformedToken::Checksum));
        assert_eq!(TokenSecret::parse("ghp_x"), Err(MalformedToken::Prefix));
        assert!(!format!("{secret:?}").contains(&text[SHOWN..]));
    }

    #[test]
    fn base62_is_fixed_width() {
        assert_eq!(base62(&[0; 32], BODY_LEN), "0".repeat(BODY_LEN));
        assert_eq!(base62(&[0xff; 32], BODY_LEN).len(), BODY_LEN);
        assert_eq!(base62(&[0, 61], 2), "0z");
        assert_eq!(base62(&[0, 62], 2), "10");
        let a = TokenSecret::from_random([7; 32]);
        let b = TokenSecret::from_random([8; 32]);
        assert_ne!(a, b);
    }
}
