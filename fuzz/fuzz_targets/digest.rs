//! Digests become S3 keys (`blobs/sha256/<hex>`) and URL segments: only `sha256:<64 hex>`
//! may parse, and it must round-trip exactly.
#![no_main]

use ecr_vault_registry::Digest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = Digest::parse(s) {
        assert_eq!(d.to_string(), s);
        assert_eq!(d.hex().len(), 64);
        assert!(
            d.hex()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(Digest::from_sha256(d.raw()), d);
        let json = serde_json::to_string(&d).expect("serialize");
        assert_eq!(
            serde_json::from_str::<Digest>(&json).expect("round trip"),
            d
        );
    }
});
