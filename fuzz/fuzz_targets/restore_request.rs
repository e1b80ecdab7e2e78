//! Restore requests, as the restore function receives them: parse, then build the engine
//! request (filters, digests, snapshot selection, mappings). Refuse with a message, never panic.
#![no_main]

use ecr_vault_engine::restore_request::RestorePayload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    match RestorePayload::parse(v) {
        Ok(r) => {
            let _ = r.engine_request();
        }
        Err(e) => assert!(e.starts_with("invalid restore request")),
    }
});
