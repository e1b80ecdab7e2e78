//! The work item: the SQS body the scheduled run sends for one image, and what a worker
//! accepts. Encoded and decoded here only, so sender and worker cannot drift apart.
//!
//! ```json
//! {"action":"backup-image","repository":"team/app","digest":"sha256:…","tags":["v1"],"run":"<snapshot id>"}
//! ```

use ecr_vault_registry::{Digest, RepoName, Tag};
use ecr_vault_vault::SnapshotId;
use serde::{Deserialize, Serialize};

use super::state::ExpectedImage;
use crate::shown;

/// The `action` of a work item body.
pub const WORK_ACTION: &str = "backup-image";

/// The body as it travels: plain strings, validated by [`decode`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    action: String,
    repository: String,
    digest: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    run: Option<String>,
}

/// A work item as a worker receives it, validated: one image to capture, the tags it is
/// captured under, and the run that asked. The run's side of the same image, with what the
/// listing knew, is [`ExpectedImage`]; one delivery of the message is
/// [`crate::trigger::Delivery`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkItem {
    pub repository: RepoName,
    pub digest: Digest,
    pub tags: Vec<Tag>,
    /// The snapshot id of the run that planned the item; `None` for an item sent by hand.
    pub run: Option<String>,
}

/// The body of the work item for `image` in `run`.
pub fn encode(run: &SnapshotId, image: &ExpectedImage) -> Result<String, serde_json::Error> {
    serde_json::to_string(&Body {
        action: WORK_ACTION.into(),
        repository: image.repository.to_string(),
        digest: image.digest.to_string(),
        tags: image.tags.iter().map(|t| t.as_str().to_owned()).collect(),
        run: Some(run.as_str().to_owned()),
    })
}

/// Parses and validates one body; the error says why the item is refused. Every name is
/// checked against the OCI grammar before it can become a key or a URL.
pub fn decode(body: &str) -> Result<WorkItem, String> {
    let raw: Body =
        serde_json::from_str(body).map_err(|e| format!("the body is not a work item: {e}"))?;
    if raw.action != WORK_ACTION {
        return Err(format!(
            "action is {}, expected \"{WORK_ACTION}\"",
            shown(&raw.action)
        ));
    }
    let repository = RepoName::parse(&raw.repository).map_err(|e| e.to_string())?;
    let digest = Digest::parse(&raw.digest).map_err(|e| e.to_string())?;
    let tags = raw
        .tags
        .iter()
        .map(|t| Tag::parse(t).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(run) = &raw.run
        && SnapshotId::parse(run).is_err()
    {
        return Err(format!(
            "run is {}, expected a snapshot id such as 20261124T020000000Z-a1b2c3",
            shown(run)
        ));
    }
    Ok(WorkItem {
        repository,
        digest,
        tags,
        run: raw.run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_encoded_decodes_to_the_same_image() {
        let image = ExpectedImage {
            repository: RepoName::parse("team/app").unwrap(),
            digest: Digest::of(b"x"),
            tags: vec![Tag::parse("v1").unwrap()],
            pushed_at: None,
            media_type: None,
        };
        let run = SnapshotId::parse("20261124T020000000Z-a1b2c3").unwrap();
        let item = decode(&encode(&run, &image).unwrap()).unwrap();
        assert_eq!(item.repository, image.repository);
        assert_eq!(item.digest, image.digest);
        assert_eq!(item.tags, image.tags);
        assert_eq!(item.run.as_deref(), Some(run.as_str()));
        let e = decode(r#"{"action":"x","repository":"a","digest":"d"}"#).unwrap_err();
        assert!(e.contains(r#""x""#) && e.contains(WORK_ACTION), "{e}");
    }

    #[test]
    fn work_items_are_validated() {
        let d = "sha256:cccebb337cb45e831493c358fe82df29dcdd355cba62de55c738ddb99aafe758";
        let ok = format!(
            r#"{{"action":"backup-image","repository":"a/b","digest":"{d}","tags":[],"run":"20261124T020000000Z-a1b2c3"}}"#
        );
        assert!(decode(&ok).is_ok());
        for bad in [
            "not json".to_owned(),
            ok.replace("backup-image", "delete-image"),
            ok.replace("a/b", "../etc"),
            ok.replace(d, "sha256:1234"),
            ok.replace("\"tags\":[]", "\"tags\":[\"a/b\"]"),
            ok.replace("20261124T020000000Z-a1b2c3", "yesterday"),
        ] {
            assert!(decode(&bad).is_err(), "{bad}");
        }
    }
}
