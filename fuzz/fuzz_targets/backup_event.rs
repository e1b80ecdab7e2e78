//! Every event the backup function can be invoked with: the shape classifier, SQS work items
//! and ECR image actions. Refuse with a message, never panic.
#![no_main]

use ecr_vault_backup_fn::event::{Incoming, classify};
use ecr_vault_engine::trigger::decode_body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // The raw string as an SQS body.
    if let Ok(item) = decode_body(Some(s)) {
        assert!(!item.repository.as_str().contains(".."));
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(s) else {
        return;
    };
    match classify(v) {
        Ok(Incoming::Sqs(records)) => {
            for r in &records {
                assert!(!r.message_id.is_empty());
                let _ = decode_body(r.body.as_deref());
            }
        }
        Ok(Incoming::EcrImageAction(e)) => {
            let _ = e.detail.action();
            if let Ok(a) = e.detail.image() {
                assert!(!a.repository.as_str().contains(".."));
            }
        }
        Ok(Incoming::Schedule { .. }) => {}
        Err(e) => assert!(e.to_string().contains("nothing was written")),
    }
});
