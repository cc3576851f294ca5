//! The catalog: what a project of one SLA type and performance tier gets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ValidationError;
use super::capacity::Resources;
use super::name::Label;

/// What a project of one SLA type and performance tier gets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub cpu: u32,
    pub ram_gb: u32,
    /// Further ResourceQuota `hard` entries, e.g. `pods = "100"`, `"requests.storage" = "500Gi"`.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
    /// Further namespace labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Projects of this entry wait for a field admin's approval before anything is delivered.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requires_approval: bool,
}

impl CatalogEntry {
    /// The quota a project of this entry reserves.
    pub fn resources(&self) -> Resources {
        Resources::new(self.cpu.into(), self.ram_gb.into())
    }

    /// Why a project of this entry (`sla_type`/`tier`) needs approval, if it does: the entry
    /// says so, or it asks for more than `cpu_above` CPU (the configured threshold).
    pub fn approval_reason(
        &self,
        sla_type: &str,
        tier: &str,
        cpu_above: Option<u32>,
    ) -> Option<String> {
        if self.requires_approval {
            return Some(format!("the catalog entry {sla_type}/{tier} requires approval"));
        }
        match cpu_above {
            Some(limit) if self.cpu > limit => Some(format!(
                "{} CPU is above the {limit} CPU a project gets without approval",
                self.cpu
            )),
            _ => None,
        }
    }
}

/// The largest CPU or RAM a catalog entry may give (a project row holds them as 32-bit
/// numbers, and no namespace needs more).
pub const MAX_SIZE: u32 = 1_000_000;

/// SLA type -> performance tier -> entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Catalog(pub BTreeMap<String, BTreeMap<String, CatalogEntry>>);

impl Default for Catalog {
    /// Bronze, silver and gold, each regular or high.
    fn default() -> Self {
        let entry = |cpu, ram_gb, pods: &str, storage: Option<&str>, backup: &str| {
            let mut extra = BTreeMap::from([("pods".to_owned(), pods.to_owned())]);
            if let Some(storage) = storage {
                extra.insert("requests.storage".to_owned(), storage.to_owned());
            }
            let labels = BTreeMap::from([("infrahub.io/backup".to_owned(), backup.to_owned())]);
            CatalogEntry { cpu, ram_gb, extra, labels, requires_approval: false }
        };
        let mut catalog = BTreeMap::new();
        for (sla, scale, pods, storage, backup) in [
            ("bronze", 1, "50", None, "none"),
            ("silver", 2, "100", Some("200Gi"), "daily"),
            ("gold", 4, "200", Some("1Ti"), "hourly"),
        ] {
            let tiers = BTreeMap::from([
                ("regular".to_owned(), entry(2 * scale, 8 * scale, pods, storage, backup)),
                ("high".to_owned(), entry(4 * scale, 16 * scale, pods, storage, backup)),
            ]);
            catalog.insert(sla.to_owned(), tiers);
        }
        Catalog(catalog)
    }
}

impl Catalog {
    /// The entry a request names, or which of its two values is unknown.
    pub fn entry(&self, sla_type: &str, tier: &str) -> Result<&CatalogEntry, ValidationError> {
        let tiers = self.0.get(sla_type).ok_or_else(|| {
            let known: Vec<&String> = self.0.keys().collect();
            ValidationError::new("sla_type", format!("must be one of {known:?}"))
        })?;
        tiers.get(tier).ok_or_else(|| {
            let known: Vec<&String> = tiers.keys().collect();
            ValidationError::new("performance_tier", format!("must be one of {known:?}"))
        })
    }

    /// At least one SLA type with one tier; names are DNS-1123 labels; sizes are positive.
    pub fn check(&self) -> Result<(), String> {
        if self.0.is_empty() || self.0.values().any(BTreeMap::is_empty) {
            return Err("needs at least one SLA type with one tier".to_owned());
        }
        for (sla, tiers) in &self.0 {
            for (tier, entry) in tiers {
                if Label::parse("catalog", sla).and(Label::parse("catalog", tier)).is_err() {
                    return Err(format!("{sla}.{tier}: names must be DNS-1123 labels"));
                }
                if entry.cpu == 0 || entry.ram_gb == 0 {
                    return Err(format!("{sla}.{tier}: cpu and ram_gb must be at least 1"));
                }
                if entry.cpu > MAX_SIZE || entry.ram_gb > MAX_SIZE {
                    return Err(format!("{sla}.{tier}: cpu and ram_gb must be at most {MAX_SIZE}"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_catalog_scales_with_sla_and_tier() {
        let catalog = Catalog::default();
        assert_eq!(catalog.check(), Ok(()));
        assert_eq!(catalog.entry("silver", "regular").unwrap().resources(), Resources::new(4, 16));
        assert_eq!(catalog.entry("gold", "high").unwrap().resources(), Resources::new(16, 64));
        assert_eq!(catalog.entry("bronze", "regular").unwrap().extra["pods"], "50");
    }

    #[test]
    fn unknown_names_say_which_field_is_wrong() {
        let catalog = Catalog::default();
        let err = catalog.entry("platinum", "regular").unwrap_err();
        assert_eq!(err.field, "sla_type");
        assert!(err.message.contains("bronze"), "{err}");
        assert_eq!(catalog.entry("gold", "turbo").unwrap_err().field, "performance_tier");
    }

    #[test]
    fn approval_is_needed_by_the_entry_or_above_the_threshold() {
        let mut entry = Catalog::default().entry("gold", "high").unwrap().clone();
        assert_eq!(entry.approval_reason("gold", "high", None), None);
        assert_eq!(entry.approval_reason("gold", "high", Some(16)), None);
        let above = entry.approval_reason("gold", "high", Some(15)).unwrap();
        assert!(above.contains("16 CPU") && above.contains("15"), "{above}");
        entry.requires_approval = true;
        let flagged = entry.approval_reason("gold", "high", None).unwrap();
        assert!(flagged.contains("gold/high"), "{flagged}");
    }

    #[test]
    fn bad_catalogs_are_refused() {
        assert!(Catalog(BTreeMap::new()).check().is_err());
        let mut zero = Catalog::default();
        zero.0.get_mut("gold").unwrap().get_mut("high").unwrap().cpu = 0;
        assert!(zero.check().unwrap_err().contains("gold.high"));
        let mut huge = Catalog::default();
        huge.0.get_mut("gold").unwrap().get_mut("high").unwrap().ram_gb = u32::MAX;
        assert!(huge.check().unwrap_err().contains("at most"));
        let mut named = Catalog::default();
        let tiers = named.0.remove("gold").unwrap();
        named.0.insert("Gold".to_owned(), tiers);
        assert!(named.check().unwrap_err().contains("DNS-1123"));
    }
}
