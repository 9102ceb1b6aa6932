//! 24-hex ids in the shape of a MongoDB ObjectId (4-byte seconds, 5 random bytes, 3-byte
//! counter), so ids look the same on both storage backends and sort roughly by time.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

static PROCESS: OnceLock<([u8; 5], AtomicU32)> = OnceLock::new();

/// A fresh id, unique across processes with overwhelming probability.
pub fn new_id(unix_secs: i64) -> String {
    let (random, counter) = PROCESS.get_or_init(|| (rand::random(), AtomicU32::new(rand::random())));
    let n = counter.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&(unix_secs as u32).to_be_bytes());
    bytes[4..9].copy_from_slice(random);
    bytes[9..].copy_from_slice(&n.to_be_bytes()[1..]);
    to_hex(&bytes)
}

/// A random 128-bit token as 32 hex characters (session ids, request ids, jti).
pub fn random_token() -> String {
    to_hex(&rand::random::<[u8; 16]>())
}

/// Whether `s` has the shape of an id: exactly 24 lowercase or uppercase hex digits.
pub fn is_id(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_24_hex_and_distinct() {
        let a = new_id(1_700_000_000);
        let b = new_id(1_700_000_000);
        assert!(is_id(&a) && is_id(&b));
        assert_ne!(a, b);
        assert!(a.starts_with("6553f100"));
        assert!(!is_id("xyz"));
        assert!(!is_id("6553f1000000000000000000g"));
        assert_eq!(random_token().len(), 32);
    }
}
