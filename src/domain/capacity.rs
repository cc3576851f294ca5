//! Capacity and quota arithmetic: the invariants of InfraHub as pure functions.
//!
//! capacity(field, site) = overcommit × the CPU and RAM of the field's active servers there;
//! the field's department quotas at a site must fit in it, and a department's projects in its
//! quota. The store calls these under row or advisory locks, so the sums it passes are exact.

use std::ops::{Add, Sub};

use serde::Serialize;

/// CPU cores and RAM in GB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Resources {
    pub cpu: i64,
    pub ram_gb: i64,
}

impl Resources {
    pub const ZERO: Resources = Resources { cpu: 0, ram_gb: 0 };

    pub fn new(cpu: i64, ram_gb: i64) -> Self {
        Self { cpu, ram_gb }
    }

    /// Whether `self` fits in `limit` on both resources.
    pub fn fits_in(self, limit: Resources) -> bool {
        self.cpu <= limit.cpu && self.ram_gb <= limit.ram_gb
    }

    /// What exceeds zero on each resource, e.g. the deficit of `allocated - capacity`.
    pub fn positive_part(self) -> Resources {
        Resources { cpu: self.cpu.max(0), ram_gb: self.ram_gb.max(0) }
    }
}

impl Add for Resources {
    type Output = Resources;
    fn add(self, other: Resources) -> Resources {
        Resources {
            cpu: self.cpu.saturating_add(other.cpu),
            ram_gb: self.ram_gb.saturating_add(other.ram_gb),
        }
    }
}

impl Sub for Resources {
    type Output = Resources;
    fn sub(self, other: Resources) -> Resources {
        Resources {
            cpu: self.cpu.saturating_sub(other.cpu),
            ram_gb: self.ram_gb.saturating_sub(other.ram_gb),
        }
    }
}

impl std::iter::Sum for Resources {
    fn sum<I: Iterator<Item = Resources>>(iter: I) -> Resources {
        iter.fold(Resources::ZERO, Add::add)
    }
}

/// Overcommit factors per resource (1.0: none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overcommit {
    pub cpu: f64,
    pub ram: f64,
}

impl Default for Overcommit {
    fn default() -> Self {
        Self { cpu: 1.0, ram: 1.0 }
    }
}

/// What the servers can be promised: their total, times the overcommit, rounded down.
pub fn capacity(servers: Resources, overcommit: Overcommit) -> Resources {
    let scale = |value: i64, factor: f64| (value as f64 * factor).floor() as i64;
    Resources {
        cpu: scale(servers.cpu, overcommit.cpu),
        ram_gb: scale(servers.ram_gb, overcommit.ram),
    }
}

/// Why a department quota cannot be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error(
        "the field's free capacity at the site is {free_cpu} CPU and {free_ram_gb} GB RAM; \
         {requested_cpu} CPU and {requested_ram_gb} GB RAM do not fit"
    )]
    OverCapacity { requested_cpu: i64, requested_ram_gb: i64, free_cpu: i64, free_ram_gb: i64 },
    #[error(
        "the department's projects at the site already use {used_cpu} CPU and {used_ram_gb} GB \
         RAM; the quota cannot go below that"
    )]
    BelowUsage { used_cpu: i64, used_ram_gb: i64 },
}

/// Checks a new quota for one department at one site: it must fit in the capacity left by
/// the other departments' quotas, and hold what the department's projects already use.
pub fn check_quota(
    capacity: Resources,
    other_quotas: Resources,
    used_by_projects: Resources,
    requested: Resources,
) -> Result<(), QuotaError> {
    let free = (capacity - other_quotas).positive_part();
    if !requested.fits_in(free) {
        return Err(QuotaError::OverCapacity {
            requested_cpu: requested.cpu,
            requested_ram_gb: requested.ram_gb,
            free_cpu: free.cpu,
            free_ram_gb: free.ram_gb,
        });
    }
    if !used_by_projects.fits_in(requested) {
        return Err(QuotaError::BelowUsage {
            used_cpu: used_by_projects.cpu,
            used_ram_gb: used_by_projects.ram_gb,
        });
    }
    Ok(())
}

/// Whether the quotas still fit after the capacity drops to `capacity_after` (a server leaves
/// the field); `Err` carries the shortfall.
pub fn check_capacity_drop(capacity_after: Resources, quotas: Resources) -> Result<(), Resources> {
    if quotas.fits_in(capacity_after) {
        Ok(())
    } else {
        Err((quotas - capacity_after).positive_part())
    }
}

/// What each quota keeps backed when the capacity under a field's quotas at a site drops to
/// `capacity`: all of it while the quotas fit; otherwise each quota is backed in proportion
/// (capacity / sum of the quotas, per resource), rounded so that the backed parts add up to
/// exactly the capacity (largest remainders first, then the earlier quota): the departments'
/// shortfalls add up to the field's.
pub fn backed_quotas(capacity: Resources, quotas: &[Resources]) -> Vec<Resources> {
    let cpu: Vec<i64> = quotas.iter().map(|q| q.cpu).collect();
    let ram: Vec<i64> = quotas.iter().map(|q| q.ram_gb).collect();
    let (cpu, ram) = (share_out(capacity.cpu, &cpu), share_out(capacity.ram_gb, &ram));
    cpu.into_iter().zip(ram).map(|(cpu, ram_gb)| Resources { cpu, ram_gb }).collect()
}

/// One resource of [`backed_quotas`].
fn share_out(capacity: i64, quotas: &[i64]) -> Vec<i64> {
    let total: i128 = quotas.iter().map(|q| i128::from((*q).max(0))).sum();
    let capacity = i128::from(capacity.max(0));
    if total <= capacity {
        return quotas.to_vec();
    }
    // i128: quota × capacity overflows i64 long before either does.
    let exact: Vec<(i128, i128)> = quotas
        .iter()
        .map(|q| {
            let scaled = i128::from((*q).max(0)) * capacity;
            (scaled / total, scaled % total)
        })
        .collect();
    let mut backed: Vec<i128> = exact.iter().map(|(whole, _)| *whole).collect();
    let left = capacity - backed.iter().sum::<i128>();
    let mut order: Vec<usize> = (0..quotas.len()).collect();
    order.sort_by(|a, b| exact[*b].1.cmp(&exact[*a].1).then(a.cmp(b)));
    for i in order.into_iter().take(usize::try_from(left).unwrap_or(0)) {
        backed[i] += 1;
    }
    backed.into_iter().map(|b| i64::try_from(b).unwrap_or(i64::MAX)).collect()
}

/// Whether a project asking for `wanted` fits in what its department's quota leaves beside
/// `used`, what the department's projects reserve (the check of a project's reservation).
pub fn reservation_fits(quota: Resources, used: Resources, wanted: Resources) -> bool {
    wanted.fits_in((quota - used).positive_part())
}

/// Whether a use of a quota going from `before` to `after` passes 90 % of it (of its CPU or
/// its RAM): the moment to warn, once, rather than at every change above. The check of a
/// project's reservation at its commit (migration 24) states this rule and [`Resources::fits_in`]
/// and [`reservation_fits`] again in SQL; the test `projects::the_check_at_the_commit_agrees_with_the_domain_rule` keeps
/// the two in step.
pub fn crosses_90_percent(quota: Resources, before: Resources, after: Resources) -> bool {
    let crosses = |quota: i64, before: i64, after: i64| {
        quota > 0 && before * 10 <= quota * 9 && after * 10 > quota * 9
    };
    crosses(quota.cpu, before.cpu, after.cpu) || crosses(quota.ram_gb, before.ram_gb, after.ram_gb)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_90_percent_mark_is_crossed_once() {
        let quota = Resources::new(20, 100);
        let r = Resources::new;
        assert!(crosses_90_percent(quota, r(10, 10), r(19, 10)), "cpu 50% -> 95%");
        assert!(crosses_90_percent(quota, r(0, 90), r(0, 91)), "ram 90% -> 91%");
        assert!(!crosses_90_percent(quota, r(18, 10), r(18, 10)), "at 90%, not above");
        assert!(!crosses_90_percent(quota, r(19, 10), r(20, 10)), "above already");
        assert!(!crosses_90_percent(quota, r(10, 10), r(12, 20)), "well below");
        assert!(!crosses_90_percent(Resources::ZERO, r(0, 0), r(1, 1)), "no quota, no mark");
    }

    fn r(cpu: i64, ram_gb: i64) -> Resources {
        Resources::new(cpu, ram_gb)
    }

    #[test]
    fn capacity_applies_overcommit_rounding_down() {
        assert_eq!(capacity(r(10, 100), Overcommit::default()), r(10, 100));
        assert_eq!(capacity(r(10, 100), Overcommit { cpu: 1.5, ram: 1.0 }), r(15, 100));
        assert_eq!(capacity(r(3, 7), Overcommit { cpu: 1.5, ram: 1.5 }), r(4, 10));
    }

    #[test]
    fn quota_must_fit_the_free_capacity_and_hold_the_projects() {
        let cap = r(100, 1000);
        assert_eq!(check_quota(cap, r(60, 600), r(0, 0), r(40, 400)), Ok(()));
        let err = check_quota(cap, r(60, 600), r(0, 0), r(41, 400)).unwrap_err();
        assert_eq!(
            err,
            QuotaError::OverCapacity {
                requested_cpu: 41,
                requested_ram_gb: 400,
                free_cpu: 40,
                free_ram_gb: 400
            }
        );
        assert!(err.to_string().contains("40 CPU and 400 GB RAM"));
        assert!(matches!(
            check_quota(cap, r(0, 0), r(10, 50), r(9, 100)),
            Err(QuotaError::BelowUsage { used_cpu: 10, .. })
        ));
        // A deficit (quotas above capacity after a server went missing) leaves nothing free.
        assert!(check_quota(cap, r(120, 0), r(0, 0), r(1, 0)).is_err());
        assert_eq!(check_quota(cap, r(120, 0), r(0, 0), r(0, 0)), Ok(()));
    }

    #[test]
    fn capacity_drop_reports_the_shortfall() {
        assert_eq!(check_capacity_drop(r(50, 500), r(50, 400)), Ok(()));
        assert_eq!(check_capacity_drop(r(40, 500), r(50, 600)), Err(r(10, 100)));
    }

    proptest! {
        /// Granting quotas one by one through `check_quota` never over-allocates, in any order.
        #[test]
        fn granted_quotas_never_exceed_capacity(
            cap_cpu in 0i64..10_000, cap_ram in 0i64..100_000,
            requests in proptest::collection::vec((0i64..5_000, 0i64..50_000), 0..40),
        ) {
            let cap = r(cap_cpu, cap_ram);
            let mut granted = Resources::ZERO;
            for (cpu, ram) in requests {
                if check_quota(cap, granted, Resources::ZERO, r(cpu, ram)).is_ok() {
                    granted = granted + r(cpu, ram);
                }
                prop_assert!(granted.fits_in(cap));
            }
        }

        /// Whatever fits is accepted: the check refuses only what would over-allocate.
        #[test]
        fn fitting_requests_are_accepted(
            cap_cpu in 0i64..10_000, cap_ram in 0i64..100_000, other in 0i64..=100, share in 0i64..=100,
        ) {
            let cap = r(cap_cpu, cap_ram);
            let others = r(cap_cpu * other / 100, cap_ram * other / 100);
            let free = cap - others;
            let request = r(free.cpu * share / 100, free.ram_gb * share / 100);
            prop_assert!(check_quota(cap, others, Resources::ZERO, request).is_ok());
        }

        /// Overcommit never gives less than the servers themselves when the factor is >= 1.
        #[test]
        fn overcommit_at_least_one_never_shrinks(cpu in 0i64..1_000_000, ram in 0i64..1_000_000, f in 1.0f64..4.0) {
            let c = capacity(r(cpu, ram), Overcommit { cpu: f, ram: f });
            prop_assert!(r(cpu, ram).fits_in(c));
        }
    }

    #[test]
    fn quotas_that_fit_stay_backed_in_full() {
        let quotas = [Resources::new(10, 40), Resources::new(6, 20)];
        assert_eq!(backed_quotas(Resources::new(16, 60), &quotas), quotas);
    }

    #[test]
    fn a_shortfall_is_shared_in_proportion_to_the_quotas() {
        // 30 CPU for quotas of 20 + 10 + 10 (40): three quarters each; RAM still fits.
        // The last CPU left by rounding down (15 + 7 + 7) goes to the earlier of the two
        // equal remainders.
        let quotas = [Resources::new(20, 10), Resources::new(10, 10), Resources::new(10, 10)];
        let backed = backed_quotas(Resources::new(30, 100), &quotas);
        assert_eq!(backed, [Resources::new(15, 10), Resources::new(8, 10), Resources::new(7, 10)]);
        // 20 CPU for 24 + 12: 13.3 and 6.7, so 13 and 7.
        let quotas = [Resources::new(24, 200), Resources::new(12, 100)];
        let backed = backed_quotas(Resources::new(20, 200), &quotas);
        assert_eq!(backed, [Resources::new(13, 133), Resources::new(7, 67)]);
        assert_eq!(backed_quotas(Resources::ZERO, &quotas), [Resources::ZERO; 2]);
        assert_eq!(backed_quotas(Resources::new(5, 5), &[]), Vec::<Resources>::new());
    }

    proptest! {
        #[test]
        fn backed_quotas_never_exceed_their_quota_and_add_up_to_what_there_is(
            quotas in proptest::collection::vec((0i64..1_000_000, 0i64..4_000_000), 0..20),
            cpu in 0i64..2_000_000, ram in 0i64..8_000_000,
        ) {
            let quotas: Vec<Resources> = quotas.into_iter().map(|(c, r)| Resources::new(c, r)).collect();
            let capacity = Resources::new(cpu, ram);
            let backed = backed_quotas(capacity, &quotas);
            prop_assert_eq!(backed.len(), quotas.len());
            for (b, q) in backed.iter().zip(&quotas) {
                prop_assert!(b.fits_in(*q) && b.cpu >= 0 && b.ram_gb >= 0);
            }
            let total: Resources = quotas.iter().copied().sum();
            let sum: Resources = backed.iter().copied().sum();
            // Exactly what there is: the shortfalls add up to the field's.
            prop_assert_eq!(sum.cpu, total.cpu.min(capacity.cpu));
            prop_assert_eq!(sum.ram_gb, total.ram_gb.min(capacity.ram_gb));
            if total.fits_in(capacity) {
                prop_assert_eq!(backed, quotas);
            }
        }
    }
}
