//! The whole local stack: registry (with auth), SeaweedFS S3 and moto, started concurrently.

use anyhow::Result;
use tokio::sync::OnceCell;

use crate::moto::Moto;
use crate::registry::{Registry, random_token};
use crate::s3::S3;

/// Registry + S3 + moto. Dropping it stops all three.
#[derive(Debug)]
pub struct Stack {
    pub registry: Registry,
    pub s3: S3,
    pub moto: Moto,
}

static SHARED: OnceCell<Stack> = OnceCell::const_new();

impl Stack {
    /// Starts the three servers concurrently (a few seconds, dominated by moto's imports).
    pub async fn start() -> Result<Self> {
        let (registry, s3, moto) = tokio::try_join!(Registry::start(), S3::start(), Moto::start())?;
        Ok(Stack { registry, s3, moto })
    }

    /// One stack per test binary, started by the first test that asks. Safe across
    /// `#[tokio::test]` runtimes (the harness keeps no pooled connections and builds AWS
    /// clients per call). A `static` is never dropped: the per-server watchdogs stop the
    /// servers and remove their data when the test binary exits. Isolate tests by unique
    /// bucket and repository names ([`unique_name`]).
    pub async fn shared() -> Result<&'static Stack> {
        SHARED.get_or_try_init(Stack::start).await
    }

    /// Environment for child processes (the CLI, scripts): AWS endpoints for ECR (moto) and
    /// S3 (SeaweedFS), the SeaweedFS credentials (moto accepts any), region, and the registry
    /// as `ECR_VAULT_TEST_REGISTRY_{URL,HOST,USER,PASSWORD}`.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, v: String| {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v));
        };
        for (k, v) in self.moto.env().into_iter().chain(self.s3.env()) {
            set(&k, v);
        }
        set("AWS_DEFAULT_REGION", self.s3.region.clone());
        set("AWS_EC2_METADATA_DISABLED", "true".into());
        set("ECR_VAULT_TEST_REGISTRY_URL", self.registry.url());
        set("ECR_VAULT_TEST_REGISTRY_HOST", self.registry.host());
        set("ECR_VAULT_TEST_REGISTRY_USER", self.registry.user.clone());
        set(
            "ECR_VAULT_TEST_REGISTRY_PASSWORD",
            self.registry.password.clone(),
        );
        set("ECR_VAULT_TEST_S3_ENDPOINT", self.s3.endpoint());
        set("ECR_VAULT_TEST_MOTO_ENDPOINT", self.moto.endpoint());
        env
    }
}

/// `<prefix>-<10 random chars>`, lower-case: valid as a bucket name and a repository path
/// component, unique across tests sharing a stack.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", random_token(10))
}
