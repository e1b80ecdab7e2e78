//! The event shapes the backup function accepts, and nothing else.
//!
//! | Shape | Recognised by |
//! |---|---|
//! | SQS batch of work items | `Records[*].eventSource == "aws:sqs"` (every record) |
//! | EventBridge Scheduler input | `{"action":"backup", …}` without an envelope |
//! | Legacy scheduled rule | `source: aws.events`, `detail-type: Scheduled Event` |
//! | ECR image action | `source: aws.ecr`, `detail-type: ECR Image Action` |
//!
//! aws_lambda_events' SQS types make every field optional, so an S3 notification (also a
//! `Records` array) would parse as an SQS event: the event source is checked explicitly.
//! Anything else is refused with a description of what arrived. What the fields mean, and
//! their validation, is the engine's: [`ecr_vault_engine::trigger`].

use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::sqs::SqsEvent;
use ecr_vault_engine::shown;
use ecr_vault_engine::trigger::{Delivery, EcrImageActionDetail};
use serde_json::Value;

/// A recognised event.
#[derive(Debug)]
pub enum Incoming {
    Sqs(Vec<Delivery>),
    /// A full scheduled run; `shape` names which of the two schedule shapes it came in.
    Schedule {
        shape: &'static str,
        time: Option<String>,
    },
    EcrImageAction(Box<EventBridgeEvent<EcrImageActionDetail>>),
}

/// An event the function does not handle, with the shape it saw.
#[derive(Debug)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unsupported event: {}. The backup function accepts an SQS batch of work items \
             (eventSource aws:sqs), the EventBridge Scheduler input {{\"action\":\"backup\"}}, \
             a \"Scheduled Event\" from aws.events, or an \"ECR Image Action\" from aws.ecr; \
             nothing was written",
            self.0
        )
    }
}

impl std::error::Error for Unsupported {}

fn describe_keys(map: &serde_json::Map<String, Value>) -> String {
    let keys: Vec<String> = map.keys().take(12).map(|k| shown(k)).collect();
    let more = if map.len() > 12 { ", …" } else { "" };
    format!("top-level keys [{}{more}]", keys.join(", "))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Recognises the shape of `v`.
pub fn classify(v: Value) -> Result<Incoming, Unsupported> {
    let Value::Object(map) = &v else {
        return Err(Unsupported(format!(
            "expected a JSON object, got {}",
            type_name(&v)
        )));
    };

    if let Some(records) = map.get("Records") {
        return classify_records(&v, records, map);
    }

    let source = map.get("source").and_then(Value::as_str);
    let detail_type = map.get("detail-type").and_then(Value::as_str);
    match (source, detail_type) {
        (Some("aws.events"), Some("Scheduled Event")) => {
            return Ok(Incoming::Schedule {
                shape: "eventbridge-scheduled-event",
                time: map.get("time").and_then(Value::as_str).map(str::to_owned),
            });
        }
        (Some("aws.ecr"), Some("ECR Image Action")) => {
            return serde_json::from_value::<EventBridgeEvent<EcrImageActionDetail>>(v.clone())
                .map(|e| Incoming::EcrImageAction(Box::new(e)))
                .map_err(|e| {
                    Unsupported(format!(
                        "an \"ECR Image Action\" event that does not parse: {e}"
                    ))
                });
        }
        (Some(s), Some(d)) => {
            return Err(Unsupported(format!(
                "an EventBridge event with source {} and detail-type {}",
                shown(s),
                shown(d)
            )));
        }
        _ => {}
    }

    if let Some(action) = map.get("action") {
        return match action.as_str() {
            Some("backup") => Ok(Incoming::Schedule {
                shape: "scheduler-input",
                time: map
                    .get("scheduledTime")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            }),
            Some(a) => Err(Unsupported(format!(
                "an input with action {} ({})",
                shown(a),
                describe_keys(map)
            ))),
            None => Err(Unsupported(format!(
                "an input whose action is {} ({})",
                type_name(action),
                describe_keys(map)
            ))),
        };
    }

    Err(Unsupported(format!(
        "an object with {}{}",
        describe_keys(map),
        source
            .map(|s| format!(", source {}", shown(s)))
            .unwrap_or_default()
    )))
}

fn classify_records(
    v: &Value,
    records: &Value,
    map: &serde_json::Map<String, Value>,
) -> Result<Incoming, Unsupported> {
    let Some(list) = records.as_array() else {
        return Err(Unsupported(format!(
            "an object whose Records is {} ({})",
            type_name(records),
            describe_keys(map)
        )));
    };
    if list.is_empty() {
        return Err(Unsupported("a Records array that is empty".into()));
    }
    let sources: Vec<Option<&str>> = list
        .iter()
        .map(|r| {
            r.get("eventSource")
                .or_else(|| r.get("EventSource"))
                .and_then(Value::as_str)
        })
        .collect();
    if sources.iter().any(|s| *s != Some("aws:sqs")) {
        let mut seen: Vec<String> = sources
            .iter()
            .map(|s| s.map_or_else(|| "none".to_owned(), shown))
            .collect();
        seen.sort();
        seen.dedup();
        return Err(Unsupported(format!(
            "a Records array with eventSource {} (only \"aws:sqs\" is accepted)",
            seen.join(", ")
        )));
    }
    let event: SqsEvent = serde_json::from_value(v.clone())
        .map_err(|e| Unsupported(format!("an SQS batch that does not parse: {e}")))?;
    let mut out = Vec::with_capacity(event.records.len());
    for (i, r) in event.records.into_iter().enumerate() {
        let Some(id) = r.message_id.filter(|m| !m.is_empty()) else {
            return Err(Unsupported(format!(
                "an SQS batch whose record {i} has no messageId"
            )));
        };
        let receives = r
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        out.push(Delivery {
            message_id: id,
            receives,
            body: r.body,
        });
    }
    Ok(Incoming::Sqs(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Value {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn recognises_every_sample_event() {
        match classify(sample("sqs-batch.json")).unwrap() {
            Incoming::Sqs(r) => {
                assert_eq!(r.len(), 2);
                assert_eq!(r[0].message_id, "059f36b4-87a3-44ab-83d2-661975830a7d");
                assert_eq!(r[0].receives, 1);
                let body = r[1].body.as_deref().unwrap();
                let item = ecr_vault_engine::fanout::item::decode(body).unwrap();
                assert_eq!(item.repository.as_str(), "team/app/worker");
                assert_eq!(item.tags.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(sample("schedule-scheduler.json")).unwrap(),
            Incoming::Schedule {
                shape: "scheduler-input",
                ..
            }
        ));
        assert!(matches!(
            classify(sample("schedule-eventbridge.json")).unwrap(),
            Incoming::Schedule {
                shape: "eventbridge-scheduled-event",
                ..
            }
        ));
        for (name, action) in [("push.json", "PUSH"), ("delete.json", "DELETE")] {
            match classify(sample(name)).unwrap() {
                Incoming::EcrImageAction(e) => {
                    assert_eq!(e.detail.action_type.as_deref(), Some(action));
                    let a = e.detail.image().unwrap();
                    assert_eq!(a.repository.as_str(), "team/app/api");
                    assert_eq!(a.tag.unwrap().as_str(), "v1");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn refuses_other_shapes_and_names_what_it_saw() {
        let e = classify(sample("unknown.json")).unwrap_err().to_string();
        assert!(e.contains("\"aws:s3\""), "{e}");
        assert!(e.contains("nothing was written"), "{e}");
        let e = classify(sample("restore.json")).unwrap_err().to_string();
        assert!(
            e.contains("\"snapshot\"") && e.contains("\"target\""),
            "{e}"
        );
        let e = classify(serde_json::json!({"source": "aws.s3", "detail-type": "Object Created"}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"aws.s3\"") && e.contains("\"Object Created\""),
            "{e}"
        );
        let e = classify(serde_json::json!({"action": "restore"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"restore\""), "{e}");
        let e = classify(serde_json::json!([1, 2])).unwrap_err().to_string();
        assert!(e.contains("an array"), "{e}");
        // A mixed batch is not an SQS batch.
        let mut mixed = sample("sqs-batch.json");
        mixed["Records"][1]["eventSource"] = "aws:s3".into();
        assert!(classify(mixed).is_err());
    }
}
