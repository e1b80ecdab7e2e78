//! Every event the backup function can be invoked with: the shape classifier, SQS work items
//! and ECR image actions. Refuse with a message, never panic.
#![no_main]

use ecr_vault_backup_fn::event::{Incoming, classify, image_action, parse_work_item};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // The raw string as an SQS body.
    if let Ok(item) = parse_work_item(Some(s)) {
        assert!(!item.repository.as_str().contains(".."));
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(s) else {
        return;
    };
    match classify(v) {
        Ok(Incoming::Sqs(records)) => {
            for r in &records {
                assert!(!r.message_id.is_empty());
                let _ = parse_work_item(r.body.as_deref());
            }
        }
        Ok(Incoming::EcrImageAction(e)) => {
            if let Ok(a) = image_action(&e.detail) {
                assert!(!a.repository.as_str().contains(".."));
            }
        }
        Ok(Incoming::Schedule { .. }) => {}
        Err(e) => assert!(e.to_string().contains("nothing was written")),
    }
});
