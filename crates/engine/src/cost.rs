//! Storage cost: an estimate of what the vault costs per month and what a run's requests cost.
//!
//! Backups are written often and read rarely, so the storage class of blobs decides most of
//! the bill. [`estimate`] is a pure function over stored bytes by class and request counts,
//! so the backup report, `ecr-vault gc` and `ecr-vault plan` all price the same way.
//!
//! # Price table
//! Amazon S3 list prices for **us-east-1**, first storage tier (up to 50 TB/month), as
//! published on the Amazon S3 pricing page in 2025 and not re-checked since: **estimates, not
//! a bill**. Taxes, data transfer, retrieval fees, minimum storage durations (30 days for
//! STANDARD_IA, 90 for GLACIER_IR) and volume discounts are left out.
//!
//! | Class | Storage $/GB-month | PUT, COPY, POST, LIST $/1,000 | GET, HEAD $/1,000 | Minimum billable object |
//! |---|---|---|---|---|
//! | STANDARD | 0.023 | 0.005 | 0.0004 | none |
//! | STANDARD_IA | 0.0125 | 0.01 | 0.001 | 128 KiB |
//! | INTELLIGENT_TIERING | 0.0125 (Infrequent Access tier) | 0.005 | 0.0004 | none (objects under 128 KiB are not monitored and bill at 0.023) |
//! | GLACIER_IR | 0.004 | 0.02 | 0.01 | 128 KiB |
//!
//! - INTELLIGENT_TIERING also charges monitoring: $0.0025 per 1,000 objects of 128 KiB or more
//!   per month. Vault blobs are read only by restores and deep verifies, so the estimate uses
//!   the Infrequent Access tier they reach after 30 days without access (after 90 days they
//!   drop to the Archive Instant Access tier, $0.004).
//! - Lock changes (PutObjectRetention) are billed as PUT-class requests; DELETE is free.
//! - GB means 2^30 bytes, as S3 bills.

use std::collections::BTreeMap;
use std::fmt;

use ecr_vault_vault::Counts;
use serde::{Deserialize, Serialize};

/// The date and source of the price figures in this module (listed in its documentation).
pub const PRICES_SOURCE: &str =
    "Amazon S3 list prices, us-east-1, first tier, as published in 2025 (estimates)";

/// Objects smaller than this bill as this size in STANDARD_IA and GLACIER_IR, and are not
/// monitored in INTELLIGENT_TIERING.
pub const MIN_BILLABLE_OBJECT: u64 = 128 * 1024;

const GIB: f64 = (1u64 << 30) as f64;

/// The storage classes a blob may use: the ones a restore reads without a thaw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StorageClass {
    Standard,
    StandardIa,
    IntelligentTiering,
    GlacierIr,
}

impl StorageClass {
    pub const ALL: [StorageClass; 4] = [
        StorageClass::Standard,
        StorageClass::StandardIa,
        StorageClass::IntelligentTiering,
        StorageClass::GlacierIr,
    ];

    /// S3's name (`STANDARD_IA`, ...); case-insensitive. `None` for classes that need a thaw.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "" | "STANDARD" => Some(StorageClass::Standard),
            "STANDARD_IA" => Some(StorageClass::StandardIa),
            "INTELLIGENT_TIERING" => Some(StorageClass::IntelligentTiering),
            "GLACIER_IR" => Some(StorageClass::GlacierIr),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StorageClass::Standard => "STANDARD",
            StorageClass::StandardIa => "STANDARD_IA",
            StorageClass::IntelligentTiering => "INTELLIGENT_TIERING",
            StorageClass::GlacierIr => "GLACIER_IR",
        }
    }

    /// The class of a vault handle's blobs (STANDARD when none is set).
    pub fn of_blobs(vault: &ecr_vault_vault::Vault) -> Self {
        vault
            .options()
            .blob_storage_class
            .as_ref()
            .and_then(|c| StorageClass::parse(c.as_str()))
            .unwrap_or(StorageClass::Standard)
    }
}

impl fmt::Display for StorageClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One class's prices.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Prices {
    pub storage_per_gb_month: f64,
    pub put_per_1000: f64,
    pub get_per_1000: f64,
    pub monitoring_per_1000_objects: f64,
    /// Rate for objects under [`MIN_BILLABLE_OBJECT`] in INTELLIGENT_TIERING (never tiered).
    pub small_object_per_gb_month: f64,
    /// Whether objects under [`MIN_BILLABLE_OBJECT`] bill as that size.
    pub min_object_size: bool,
}

/// The price table (see the module docs for the source).
pub fn prices(class: StorageClass) -> Prices {
    match class {
        StorageClass::Standard => Prices {
            storage_per_gb_month: 0.023,
            put_per_1000: 0.005,
            get_per_1000: 0.0004,
            monitoring_per_1000_objects: 0.0,
            small_object_per_gb_month: 0.023,
            min_object_size: false,
        },
        StorageClass::StandardIa => Prices {
            storage_per_gb_month: 0.0125,
            put_per_1000: 0.01,
            get_per_1000: 0.001,
            monitoring_per_1000_objects: 0.0,
            small_object_per_gb_month: 0.0125,
            min_object_size: true,
        },
        StorageClass::IntelligentTiering => Prices {
            storage_per_gb_month: 0.0125,
            put_per_1000: 0.005,
            get_per_1000: 0.0004,
            monitoring_per_1000_objects: 0.0025,
            small_object_per_gb_month: 0.023,
            min_object_size: false,
        },
        StorageClass::GlacierIr => Prices {
            storage_per_gb_month: 0.004,
            put_per_1000: 0.02,
            get_per_1000: 0.01,
            monitoring_per_1000_objects: 0.0,
            small_object_per_gb_month: 0.004,
            min_object_size: true,
        },
    }
}

/// Stored objects of one class. Objects under [`MIN_BILLABLE_OBJECT`] are counted apart
/// because IA and Glacier IR bill them as 128 KiB and Intelligent-Tiering never tiers them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub bytes: u64,
    pub objects: u64,
    pub small_objects: u64,
    pub small_bytes: u64,
}

impl Usage {
    /// Adds one object of `size` bytes.
    pub fn add(&mut self, size: u64) {
        self.bytes += size;
        self.objects += 1;
        if size < MIN_BILLABLE_OBJECT {
            self.small_objects += 1;
            self.small_bytes += size;
        }
    }

    /// Totals only, when object sizes are unknown (a run's counts): small-object minimums are
    /// then not charged.
    pub fn totals(bytes: u64, objects: u64) -> Self {
        Usage {
            bytes,
            objects,
            ..Usage::default()
        }
    }
}

/// Requests against objects of one class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Requests {
    /// PUT, COPY, POST, LIST (including multipart create, part and complete).
    pub put: u64,
    /// GET and HEAD.
    pub get: u64,
    /// PutObjectRetention (billed as PUT).
    pub retention: u64,
}

impl Requests {
    /// The requests a backup run made, derived from its counts (the vault does not count
    /// requests itself). Per image one manifest HEAD; per blob handled one HEAD; per blob
    /// written one PUT plus one more per `part_size` bytes beyond its first part (multipart
    /// create and complete are not counted); per copied image one manifest PUT; one retention
    /// call per lock extension; the snapshot PUT and the snapshot listing.
    pub fn from_counts(c: &Counts, part_size: u64) -> Self {
        let parts = if part_size == 0 {
            0
        } else {
            c.bytes_written.div_ceil(part_size)
        };
        Requests {
            put: c.blobs_written + parts.saturating_sub(c.blobs_written) + c.images_copied + 2,
            get: c.images + c.blobs_written + c.blobs_existing,
            retention: c.lock_extensions,
        }
    }
}

/// One class's share of an estimate.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassCost {
    pub class: StorageClass,
    pub bytes: u64,
    pub objects: u64,
    /// Bytes billed, after minimum object sizes.
    pub billable_bytes: u64,
    pub storage_usd_per_month: f64,
    pub monitoring_usd_per_month: f64,
    pub requests_usd: f64,
}

/// A cost estimate (US dollars). `monthly_usd` is storage plus monitoring for a month;
/// `requests_usd` is the one-off cost of the counted requests.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CostEstimate {
    pub monthly_usd: f64,
    pub requests_usd: f64,
    pub by_class: Vec<ClassCost>,
    pub prices: &'static str,
}

/// Prices stored bytes by class (monthly) and requests by class (one-off). Pure arithmetic.
pub fn estimate(
    storage: &BTreeMap<StorageClass, Usage>,
    requests: &BTreeMap<StorageClass, Requests>,
) -> CostEstimate {
    let mut by_class = Vec::new();
    for class in StorageClass::ALL {
        let u = storage.get(&class).copied().unwrap_or_default();
        let r = requests.get(&class).copied().unwrap_or_default();
        if u == Usage::default() && r == Requests::default() {
            continue;
        }
        let p = prices(class);
        let large_bytes = u.bytes.saturating_sub(u.small_bytes);
        let large_objects = u.objects.saturating_sub(u.small_objects);
        let small_billable = if p.min_object_size {
            u.small_objects * MIN_BILLABLE_OBJECT
        } else {
            u.small_bytes
        };
        let storage_usd = large_bytes as f64 / GIB * p.storage_per_gb_month
            + small_billable as f64 / GIB * p.small_object_per_gb_month;
        let monitoring = large_objects as f64 / 1000.0 * p.monitoring_per_1000_objects;
        let requests_usd = (r.put + r.retention) as f64 / 1000.0 * p.put_per_1000
            + r.get as f64 / 1000.0 * p.get_per_1000;
        by_class.push(ClassCost {
            class,
            bytes: u.bytes,
            objects: u.objects,
            billable_bytes: large_bytes + small_billable,
            storage_usd_per_month: storage_usd,
            monitoring_usd_per_month: monitoring,
            requests_usd,
        });
    }
    CostEstimate {
        monthly_usd: by_class
            .iter()
            .map(|c| c.storage_usd_per_month + c.monitoring_usd_per_month)
            .sum(),
        requests_usd: by_class.iter().map(|c| c.requests_usd).sum(),
        by_class,
        prices: PRICES_SOURCE,
    }
}

/// The estimate for a backup run: the storage it added (blobs in `blob_class`; manifests are
/// small and left in it too) and its requests, which S3 bills at the class of the object each
/// touches (approximated here by the blob class, the dearer side).
pub fn run_estimate(c: &Counts, blob_class: StorageClass, part_size: u64) -> CostEstimate {
    let storage = BTreeMap::from([(blob_class, Usage::totals(c.bytes_written, c.blobs_written))]);
    let requests = BTreeMap::from([(blob_class, Requests::from_counts(c, part_size))]);
    estimate(&storage, &requests)
}

/// What a plan would add: its expected bytes stored for a month, and its requests (one PUT
/// per part of the expected bytes and per new manifest, one HEAD per new image and per
/// unchanged image without a recorded lock, one retention call per extension due).
/// `None` when the plan does not know its bytes.
pub fn plan_estimate(
    plan: &crate::plan::Plan,
    blob_class: StorageClass,
    part_size: u64,
) -> Option<CostEstimate> {
    let bytes = plan.bytes_expected?;
    let new = plan.new.len() as u64;
    let parts = if part_size == 0 {
        0
    } else {
        bytes.div_ceil(part_size)
    };
    let storage = BTreeMap::from([(blob_class, Usage::totals(bytes, parts))]);
    let requests = BTreeMap::from([(
        blob_class,
        Requests {
            put: parts + new,
            get: new + plan.lock_unknown as u64,
            retention: plan.lock_extensions_due as u64,
        },
    )]);
    Some(estimate(&storage, &requests))
}

impl fmt::Display for CostEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "~${:.2}/month storage, ~${:.4} requests",
            self.monthly_usd, self.requests_usd
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TB: u64 = 1 << 40;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    fn one(class: StorageClass, u: Usage, r: Requests) -> CostEstimate {
        estimate(&BTreeMap::from([(class, u)]), &BTreeMap::from([(class, r)]))
    }

    #[test]
    fn one_tib_in_standard_costs_1024_gb_at_the_list_price() {
        let e = one(
            StorageClass::Standard,
            Usage::totals(TB, 10_000),
            Requests::default(),
        );
        assert!(close(e.monthly_usd, 1024.0 * 0.023), "{}", e.monthly_usd);
        assert_eq!(e.requests_usd, 0.0);
    }

    #[test]
    fn small_objects_bill_as_128_kib_in_ia_and_glacier_ir_only() {
        let mut u = Usage::default();
        u.add(1024); // a config blob
        u.add(MIN_BILLABLE_OBJECT); // exactly the minimum: not small
        for (class, billable) in [
            (StorageClass::Standard, 1024 + MIN_BILLABLE_OBJECT),
            (StorageClass::StandardIa, 2 * MIN_BILLABLE_OBJECT),
            (StorageClass::GlacierIr, 2 * MIN_BILLABLE_OBJECT),
            (StorageClass::IntelligentTiering, 1024 + MIN_BILLABLE_OBJECT),
        ] {
            let e = one(class, u, Requests::default());
            assert_eq!(e.by_class[0].billable_bytes, billable, "{class}");
        }
        let gir = one(StorageClass::GlacierIr, u, Requests::default());
        assert!(close(
            gir.monthly_usd,
            (2 * MIN_BILLABLE_OBJECT) as f64 / GIB * 0.004
        ));
    }

    #[test]
    fn intelligent_tiering_charges_monitoring_for_large_objects_and_standard_rate_for_small() {
        let mut u = Usage::default();
        for _ in 0..2000 {
            u.add(1 << 20);
        }
        u.add(100);
        let e = one(StorageClass::IntelligentTiering, u, Requests::default());
        let c = &e.by_class[0];
        assert!(close(c.monitoring_usd_per_month, 2.0 * 0.0025));
        let expected = (2000u64 << 20) as f64 / GIB * 0.0125 + 100.0 / GIB * 0.023;
        assert!(close(c.storage_usd_per_month, expected));
        assert!(close(e.monthly_usd, expected + 0.005));
    }

    #[test]
    fn requests_are_priced_per_class_with_retention_as_put() {
        let r = Requests {
            put: 1000,
            get: 10_000,
            retention: 1000,
        };
        let std = one(StorageClass::Standard, Usage::default(), r);
        assert!(close(std.requests_usd, 2.0 * 0.005 + 10.0 * 0.0004));
        let gir = one(StorageClass::GlacierIr, Usage::default(), r);
        assert!(close(gir.requests_usd, 2.0 * 0.02 + 10.0 * 0.01));
        assert_eq!(gir.monthly_usd, 0.0);
    }

    #[test]
    fn classes_add_up_and_empty_classes_are_left_out() {
        let storage = BTreeMap::from([
            (StorageClass::Standard, Usage::totals(1 << 30, 1)),
            (StorageClass::GlacierIr, Usage::totals(10 << 30, 10)),
        ]);
        let e = estimate(&storage, &BTreeMap::new());
        assert_eq!(e.by_class.len(), 2);
        assert!(close(e.monthly_usd, 0.023 + 10.0 * 0.004));
    }

    #[test]
    fn an_unchanged_nightly_run_costs_one_head_per_image() {
        let c = Counts {
            images: 20_000,
            images_unchanged: 20_000,
            ..Counts::default()
        };
        let r = Requests::from_counts(&c, 16 << 20);
        assert_eq!(r.get, 20_000);
        assert_eq!(r.retention, 0);
        let e = run_estimate(&c, StorageClass::Standard, 16 << 20);
        // 20,000 HEADs at $0.0004 per 1,000, plus the snapshot PUT and listing.
        assert!(close(e.requests_usd, 20.0 * 0.0004 + 2.0 / 1000.0 * 0.005));
        assert_eq!(e.monthly_usd, 0.0);
    }

    #[test]
    fn multipart_blobs_count_their_parts() {
        let c = Counts {
            images: 1,
            images_copied: 1,
            blobs_written: 1,
            bytes_written: 64 << 20,
            ..Counts::default()
        };
        // Four parts, the manifest, the snapshot and its listing.
        let r = Requests::from_counts(&c, 16 << 20);
        assert_eq!(r.put, 4 + 1 + 2);
        assert_eq!(r.get, 2);
    }

    /// The README's worked example: 614.4 GiB deduplicated in 50,000 layers, 20,000 configs
    /// of 8 KiB, 20,000 manifests of 4 KiB (always STANDARD); weekly lock extensions.
    #[test]
    fn readme_worked_example() {
        let kib = 1024u64;
        let dedup = (614.4 * GIB) as u64;
        let configs = 20_000u64;
        let blobs = Usage {
            bytes: dedup,
            objects: 50_000 + configs,
            small_objects: configs,
            small_bytes: configs * 8 * kib,
        };
        let manifests = Usage {
            bytes: 20_000 * 4 * kib,
            objects: 20_000,
            small_objects: 20_000,
            small_bytes: 20_000 * 4 * kib,
        };
        let mut got = Vec::new();
        for class in StorageClass::ALL {
            let mut storage = BTreeMap::from([(class, blobs)]);
            let m = storage.entry(StorageClass::Standard).or_default();
            m.bytes += manifests.bytes;
            m.objects += manifests.objects;
            m.small_objects += manifests.small_objects;
            m.small_bytes += manifests.small_bytes;
            let monthly = estimate(&storage, &BTreeMap::new()).monthly_usd;
            // Each blob extended once a week, manifests too (at STANDARD prices).
            let extensions = BTreeMap::from([(
                class,
                Requests {
                    retention: (50_000 + configs) * 30 / 7,
                    ..Requests::default()
                },
            )]);
            let mut ext = estimate(&BTreeMap::new(), &extensions).requests_usd;
            ext += 20_000.0 * 30.0 / 7.0 / 1000.0 * 0.005;
            got.push((
                class,
                (monthly * 100.0).round() / 100.0,
                (ext * 100.0).round() / 100.0,
            ));
        }
        assert_eq!(
            got,
            vec![
                (StorageClass::Standard, 14.13, 1.93),
                (StorageClass::StandardIa, 7.71, 3.43),
                (StorageClass::IntelligentTiering, 7.81, 1.93),
                (StorageClass::GlacierIr, 2.47, 6.43),
            ]
        );
        // A nightly run over the unchanged registry: 20,000 HEADs.
        let night = estimate(
            &BTreeMap::new(),
            &BTreeMap::from([(
                StorageClass::Standard,
                Requests {
                    get: 20_000,
                    ..Requests::default()
                },
            )]),
        );
        assert!(close(night.requests_usd, 0.008));
    }

    #[test]
    fn storage_class_names_parse_like_s3_spells_them() {
        for c in StorageClass::ALL {
            assert_eq!(StorageClass::parse(c.as_str()), Some(c));
            assert_eq!(StorageClass::parse(&c.as_str().to_lowercase()), Some(c));
        }
        assert_eq!(StorageClass::parse("GLACIER"), None);
        assert_eq!(StorageClass::parse("DEEP_ARCHIVE"), None);
    }
}
