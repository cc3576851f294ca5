//! The project lifecycle as a state machine: which events move a project from which status
//! to which, what each does to its quota reservation, and which job it starts. Use cases and
//! jobs ask [`transition`] instead of comparing statuses themselves; the store's guarded
//! update takes its allowed sources from [`Event::sources`].
//!
//! | from | event | to | starts |
//! | --- | --- | --- | --- |
//! | (a new project) | create | provisioning | provisioning |
//! | (a new project that needs approval) | create | pending_approval | |
//! | pending_approval | approve | provisioning | provisioning |
//! | pending_approval | reject, approval expired | rejected (reservation released) | |
//! | pending_approval | delete (the request withdrawn) | deleted (reservation released) | |
//! | provisioning, degraded | delivered | active | |
//! | provisioning, degraded | provisioning failed | failed | |
//! | active, failed, degraded | resize | provisioning | provisioning |
//! | failed | retry | provisioning | provisioning |
//! | active | drift found | degraded | provisioning |
//! | active, failed, degraded | delete, with a grace period | deletion_scheduled | |
//! | deletion_scheduled | restore | provisioning | provisioning |
//! | deletion_scheduled | grace period over | deleting | deprovisioning |
//! | active, failed, degraded, deleting | delete, without a grace period | deleting | deprovisioning |
//! | deleting | removed | deleted | |
//! | deleting | deprovisioning failed | failed | |
//! | provisioning, degraded, deleting | force fail (center admin) | failed | |
//! | provisioning, degraded, failed | force retry (center admin) | provisioning | provisioning |
//! | deleting | force retry (center admin) | deleting | deprovisioning |
//! | provisioning, degraded, deleting | restart (the reconciler, its job gone) | the same | its work |
//!
//! Every move into `provisioning`, `degraded` or `deleting` starts the job that moves the
//! project on, and every job that ends without success settles its project
//! ([`failure_event`]), so a project is never left waiting on nothing.
//!
//! A project holds its quota from the request until it is deleted or rejected
//! ([`ProjectStatus::holds_quota`]): the database sums the reservations of the projects in
//! those statuses (per department and site, kept in step by a trigger), so the release of a
//! reservation is the move to `deleted` or `rejected`, and a resize replaces it under the
//! quota check. A request waiting for approval holds its quota too, so approving it can never
//! overcommit the department.

use super::project::ProjectStatus;

/// Something that happens to a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A person asks for another SLA type or tier.
    Resize,
    /// A person asks for the project to go, at once (no grace period configured, a failed
    /// deletion asked again, or a request withdrawn before approval).
    Delete,
    /// A person asks for the project to go after the grace period (`deletion.grace_secs`), or
    /// its time to live ran out.
    ScheduleDeletion,
    /// A person cancels a scheduled deletion: the project is provisioned again, so what is
    /// delivered is its desired state whatever happened meanwhile.
    Restore,
    /// The grace period of a scheduled deletion is over.
    DeletionDue,
    /// A person runs a failed provisioning again.
    Retry,
    /// Delivery (and, where Argo CD watches, its sync) finished: the namespace is there.
    Delivered,
    /// Provisioning failed for good.
    ProvisioningFailed,
    /// The reconciler found the delivered state differing from the desired one.
    DriftFound,
    /// The namespace is gone.
    Removed,
    /// Deprovisioning failed for good: the project is failed, with the reason; deleting it
    /// again retries.
    DeprovisioningFailed,
    /// A center admin ends a stuck change: the project is failed, with the admin's reason.
    ForceFail,
    /// A center admin runs the work of the project's status again (or, when it failed,
    /// provisioning).
    ForceRetry,
    /// The reconciler found the project waiting on a job that is no longer live, and starts
    /// that work again.
    Restart,
    /// A field admin (or a center admin) approves a request that needs approval.
    Approve,
    /// A field admin (or a center admin) rejects a request that needs approval, with a reason.
    Reject,
    /// Nobody decided a request that needs approval in time.
    ApprovalExpired,
}

/// What a transition does to the quota the project holds in its department.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The reservation stays as it is.
    Keep,
    /// The old size is given back and the new one reserved, checked against the quota.
    Replace,
    /// The reservation is given back.
    Release,
}

/// The job a transition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Provision,
    Deprovision,
}

/// An allowed move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub to: ProjectStatus,
    pub reservation: Reservation,
    pub starts: Option<Work>,
}

/// Why an event does not apply in the project's status: a stable code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

/// What `event` means for a project in `status` that failed in `failed_from`, and the move it
/// makes. A retry (a person's or a forced one) of a project that failed while it was being
/// deleted deletes it again: its owner deleted it, and a retry must not bring it back. Deleting
/// it again does so at once: its grace period was over already.
pub fn decide(
    status: ProjectStatus,
    failed_from: Option<&str>,
    event: Event,
) -> Result<(Event, Transition), Refusal> {
    let failed_deleting =
        status == ProjectStatus::Failed && failed_from == Some(ProjectStatus::Deleting.as_str());
    let event = match event {
        Event::Retry | Event::ForceRetry | Event::ScheduleDeletion if failed_deleting => {
            Event::Delete
        }
        other => other,
    };
    Ok((event, transition(status, event)?))
}

/// How a person's deletion of a project in `status` (failed in `failed_from`) goes: after the
/// grace period when there is one and the project has a namespace to keep meanwhile; at once
/// otherwise (no grace period, a request withdrawn before approval, a deletion asked again).
pub fn deletion(status: ProjectStatus, failed_from: Option<&str>, grace: bool) -> Event {
    let scheduled = decide(status, failed_from, Event::ScheduleDeletion);
    match scheduled {
        Ok((Event::ScheduleDeletion, _)) if grace => Event::ScheduleDeletion,
        // Refusals of a scheduled deletion say why better (already scheduled, say).
        Err(_) if status == ProjectStatus::DeletionScheduled => Event::ScheduleDeletion,
        _ => Event::Delete,
    }
}

/// The status a new project starts in, its quota reserved either way: provisioning, or
/// waiting for approval when its request needs one.
pub fn initial(needs_approval: bool) -> ProjectStatus {
    if needs_approval { ProjectStatus::PendingApproval } else { ProjectStatus::Provisioning }
}

/// The state machine: where `event` takes a project in `from`, or why it does not apply.
pub fn transition(from: ProjectStatus, event: Event) -> Result<Transition, Refusal> {
    use Event::*;
    use ProjectStatus::*;
    let to = |to, reservation, starts| Ok(Transition { to, reservation, starts });
    match (event, from) {
        (Resize, Active | Failed | Degraded) => {
            to(Provisioning, Reservation::Replace, Some(Work::Provision))
        }
        (Delete, Active | Failed | Degraded | Deleting) => {
            to(Deleting, Reservation::Keep, Some(Work::Deprovision))
        }
        (ScheduleDeletion, Active | Failed | Degraded) => {
            to(DeletionScheduled, Reservation::Keep, None)
        }
        (Restore, DeletionScheduled) => to(Provisioning, Reservation::Keep, Some(Work::Provision)),
        (DeletionDue, DeletionScheduled) => {
            to(Deleting, Reservation::Keep, Some(Work::Deprovision))
        }
        // Nothing was delivered yet: withdrawing the request ends it at once.
        (Delete, PendingApproval) => to(Deleted, Reservation::Release, None),
        (Approve, PendingApproval) => to(Provisioning, Reservation::Keep, Some(Work::Provision)),
        (Reject | ApprovalExpired, PendingApproval) => to(Rejected, Reservation::Release, None),
        (Retry, Failed) => to(Provisioning, Reservation::Keep, Some(Work::Provision)),
        (Delivered, Provisioning | Degraded) => to(Active, Reservation::Keep, None),
        (ProvisioningFailed, Provisioning | Degraded) => to(Failed, Reservation::Keep, None),
        (DriftFound, Active) => to(Degraded, Reservation::Keep, Some(Work::Provision)),
        (Removed, Deleting) => to(Deleted, Reservation::Release, None),
        (DeprovisioningFailed, Deleting) => to(Failed, Reservation::Keep, None),
        (ForceFail, Provisioning | Degraded | Deleting) => to(Failed, Reservation::Keep, None),
        (ForceRetry, Provisioning | Degraded | Failed) => {
            to(Provisioning, Reservation::Keep, Some(Work::Provision))
        }
        (ForceRetry, Deleting) => to(Deleting, Reservation::Keep, Some(Work::Deprovision)),
        (Restart, Provisioning | Degraded) => to(from, Reservation::Keep, Some(Work::Provision)),
        (Restart, Deleting) => to(Deleting, Reservation::Keep, Some(Work::Deprovision)),
        (Resize | Retry | Delete | ScheduleDeletion, DeletionScheduled) => Err(refuse(
            "deletion_scheduled",
            "the project is scheduled for deletion; restore it first".to_owned(),
        )),
        (Restore, _) => Err(refuse(
            "not_scheduled",
            format!("the project is {from}; only a scheduled deletion can be cancelled"),
        )),
        (ScheduleDeletion, PendingApproval) => Err(refuse(
            "pending_approval",
            "the project is waiting for approval; withdraw it (delete) instead".to_owned(),
        )),
        (Resize | Retry, PendingApproval) => Err(refuse(
            "pending_approval",
            "the project is waiting for approval; withdraw it (delete) and ask again, or wait for the decision"
                .to_owned(),
        )),
        (Approve | Reject | ApprovalExpired, _) => Err(refuse(
            "not_pending",
            format!("the project is {from}; only a request pending approval is approved or rejected"),
        )),
        (Resize, _) => {
            Err(refuse("project_busy", format!("the project is {from}; try again when it is not")))
        }
        (Delete | ScheduleDeletion, Provisioning) => Err(refuse(
            "project_busy",
            "the project is still provisioning; delete it once that is over".to_owned(),
        )),
        (ScheduleDeletion, Deleting) => Err(refuse(
            "project_busy",
            "the project is being deleted already".to_owned(),
        )),
        (Delete | ScheduleDeletion, _) => {
            Err(refuse("already_deleted", format!("the project is already {from}")))
        }
        (Retry, _) => Err(refuse(
            "not_failed",
            format!("the project is {from}; only failed projects are retried"),
        )),
        (ForceFail | ForceRetry, _) => Err(refuse(
            "not_stuck",
            format!(
                "the project is {from}; only a change in progress (or a failed one) can be forced"
            ),
        )),
        (_, _) => Err(refuse("stale", format!("the project is {from}"))),
    }
}

fn refuse(code: &'static str, message: String) -> Refusal {
    Refusal { code, message }
}

/// The event that settles a project whose latest job ended without success (failed for
/// good, lost on its last attempt, or cancelled), by the status the job left it in; `None`
/// when that status waits on no job.
pub fn failure_event(status: ProjectStatus) -> Option<Event> {
    match status {
        ProjectStatus::Provisioning | ProjectStatus::Degraded => Some(Event::ProvisioningFailed),
        ProjectStatus::Deleting => Some(Event::DeprovisioningFailed),
        _ => None,
    }
}

impl Event {
    /// Whether the event replaces the project's desired state, so that a delivery started
    /// before it must not write any more (a new generation): deletion and a forced failure;
    /// a resize does when it changes the sizing.
    pub fn supersedes_deliveries(self) -> bool {
        matches!(self, Event::Delete | Event::ScheduleDeletion | Event::ForceFail | Event::Resize)
    }

    /// The verb of the audit event a person's change records (`project.<verb>`).
    pub fn verb(self) -> &'static str {
        match self {
            Event::Resize => "resize",
            Event::Delete => "delete",
            Event::Retry => "retry",
            Event::Delivered => "delivered",
            Event::ProvisioningFailed => "provisioning_failed",
            Event::DriftFound => "drift",
            Event::Removed => "removed",
            Event::DeprovisioningFailed => "deprovisioning_failed",
            Event::ForceFail => "force_fail",
            Event::ForceRetry => "force_retry",
            Event::Restart => "restart",
            Event::Approve => "approve",
            Event::Reject => "reject",
            Event::ApprovalExpired => "approval_expired",
            Event::ScheduleDeletion => "schedule_deletion",
            Event::Restore => "restore",
            Event::DeletionDue => "deletion_due",
        }
    }

    /// The statuses this event applies in.
    pub fn sources(self) -> Vec<ProjectStatus> {
        ProjectStatus::ALL.into_iter().filter(|from| transition(*from, self).is_ok()).collect()
    }
}

impl ProjectStatus {
    /// Whether a project in this status holds its quota reservation: from the request until
    /// the namespace is gone (or the request is rejected).
    pub fn holds_quota(self) -> bool {
        !self.is_final()
    }

    /// Whether the project has ended (deleted, or rejected before anything was delivered):
    /// nothing moves it any more.
    pub fn is_final(self) -> bool {
        matches!(self, ProjectStatus::Deleted | ProjectStatus::Rejected)
    }

    /// Whether a job is on its way to move the project on.
    pub fn is_transient(self) -> bool {
        matches!(self, ProjectStatus::Provisioning | ProjectStatus::Deleting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Event::*;
    use ProjectStatus::*;

    const EVENTS: [Event; 17] = [
        Resize,
        Delete,
        Retry,
        Delivered,
        ProvisioningFailed,
        DriftFound,
        Removed,
        DeprovisioningFailed,
        ForceFail,
        ForceRetry,
        Restart,
        Approve,
        Reject,
        ApprovalExpired,
        ScheduleDeletion,
        Restore,
        DeletionDue,
    ];

    /// Every (status, event) pair, spelled out: the target, or the refusal's code.
    #[test]
    fn every_transition_of_every_status() {
        let expected = |from: ProjectStatus, event: Event| -> Result<ProjectStatus, &str> {
            match (from, event) {
                (Provisioning, Delivered) => Ok(Active),
                (Provisioning, ProvisioningFailed) => Ok(Failed),
                (Provisioning, Resize | Delete) => Err("project_busy"),
                (Provisioning, Retry) => Err("not_failed"),
                (Provisioning | Degraded | Deleting, ForceFail) => Ok(Failed),
                (Provisioning | Degraded | Failed, ForceRetry) => Ok(Provisioning),
                (Deleting, ForceRetry) => Ok(Deleting),
                (Provisioning, Restart) => Ok(Provisioning),
                (Degraded, Restart) => Ok(Degraded),
                (Deleting, Restart) => Ok(Deleting),
                (Active | Failed | Deleted, ForceFail) => Err("not_stuck"),
                (Active | Deleted, ForceRetry) => Err("not_stuck"),
                (Active, Resize) => Ok(Provisioning),
                (Active, Delete) => Ok(Deleting),
                (Active, DriftFound) => Ok(Degraded),
                (Active, Retry) => Err("not_failed"),
                (Degraded, Resize) => Ok(Provisioning),
                (Degraded, Delete) => Ok(Deleting),
                (Degraded, Delivered) => Ok(Active),
                (Degraded, ProvisioningFailed) => Ok(Failed),
                (Degraded, Retry) => Err("not_failed"),
                (Failed, Resize | Retry) => Ok(Provisioning),
                (Failed, Delete) => Ok(Deleting),
                (Deleting, Delete) => Ok(Deleting),
                (Deleting, DeprovisioningFailed) => Ok(Failed),
                (Deleting, Removed) => Ok(Deleted),
                (Deleting, Resize) => Err("project_busy"),
                (Deleting, Retry) => Err("not_failed"),
                (Deleted, Resize) => Err("project_busy"),
                (Deleted, Delete) => Err("already_deleted"),
                (Deleted, Retry) => Err("not_failed"),
                (PendingApproval, Approve) => Ok(Provisioning),
                (PendingApproval, Reject | ApprovalExpired) => Ok(Rejected),
                (PendingApproval, Delete) => Ok(Deleted),
                (PendingApproval, Resize | Retry) => Err("pending_approval"),
                (PendingApproval, ForceFail | ForceRetry) => Err("not_stuck"),
                (_, Approve | Reject | ApprovalExpired) => Err("not_pending"),
                (Rejected, Resize) => Err("project_busy"),
                (Rejected, Delete) => Err("already_deleted"),
                (Rejected, Retry) => Err("not_failed"),
                (Rejected, ForceFail | ForceRetry) => Err("not_stuck"),
                (Active | Failed | Degraded, ScheduleDeletion) => Ok(DeletionScheduled),
                (DeletionScheduled, Restore) => Ok(Provisioning),
                (DeletionScheduled, DeletionDue) => Ok(Deleting),
                (DeletionScheduled, Resize | Retry | Delete | ScheduleDeletion) => {
                    Err("deletion_scheduled")
                }
                (DeletionScheduled, ForceFail | ForceRetry) => Err("not_stuck"),
                (_, Restore) => Err("not_scheduled"),
                (PendingApproval, ScheduleDeletion) => Err("pending_approval"),
                (Provisioning | Deleting, ScheduleDeletion) => Err("project_busy"),
                (Deleted | Rejected, ScheduleDeletion) => Err("already_deleted"),
                _ => Err("stale"),
            }
        };
        for from in ProjectStatus::ALL {
            for event in EVENTS {
                let got = transition(from, event).map(|t| t.to).map_err(|r| r.code);
                assert_eq!(got, expected(from, event), "{from} on {event:?}");
            }
        }
    }

    #[test]
    fn reservations_are_replaced_on_resize_and_released_only_when_gone() {
        for from in ProjectStatus::ALL {
            for event in EVENTS {
                let Ok(t) = transition(from, event) else { continue };
                let want = match (event, from) {
                    (Resize, _) => Reservation::Replace,
                    (Removed | Reject | ApprovalExpired, _) => Reservation::Release,
                    (Delete, PendingApproval) => Reservation::Release,
                    _ => Reservation::Keep,
                };
                assert_eq!(t.reservation, want, "{from} on {event:?}");
                assert_eq!(t.to.holds_quota(), t.reservation != Reservation::Release);
            }
        }
        assert!(initial(false).holds_quota() && initial(true).holds_quota());
        let released: Vec<ProjectStatus> =
            ProjectStatus::ALL.into_iter().filter(|s| !s.holds_quota()).collect();
        assert_eq!(released, vec![Deleted, Rejected]);
    }

    /// Every move into a status that waits on a job starts that job, from whatever status;
    /// every move out of one ends the job's work.
    #[test]
    fn waiting_statuses_always_have_work_on_the_way() {
        for from in ProjectStatus::ALL {
            for event in EVENTS {
                let Ok(t) = transition(from, event) else { continue };
                let waits = failure_event(t.to).is_some();
                assert_eq!(t.starts.is_some(), waits, "{from} on {event:?} -> {}", t.to);
                if let Some(work) = t.starts {
                    let expected =
                        if t.to == Deleting { Work::Deprovision } else { Work::Provision };
                    assert_eq!(work, expected, "{from} on {event:?}");
                }
            }
        }
        assert!(initial(false).is_transient() && failure_event(initial(false)).is_some());
        // A request waiting for approval waits on a person, not a job; its expiry ends it.
        assert!(!initial(true).is_transient() && failure_event(initial(true)).is_none());
        assert_eq!(transition(initial(true), ApprovalExpired).map(|t| t.to), Ok(Rejected));
    }

    /// A job that ends without success always has an event that takes its project out of
    /// the status it was waiting in.
    #[test]
    fn every_waiting_status_can_be_settled_by_a_failure() {
        for status in ProjectStatus::ALL {
            match failure_event(status) {
                Some(event) => {
                    let t = transition(status, event).unwrap();
                    assert_eq!((t.to, t.starts), (Failed, None), "{status}");
                }
                None => assert!(!status.is_transient() && status != Degraded, "{status}"),
            }
        }
    }

    #[test]
    fn sources_are_derived_from_the_table() {
        assert_eq!(Delivered.sources(), vec![Provisioning, Degraded]);
        assert_eq!(Retry.sources(), vec![Failed]);
        assert_eq!(Removed.sources(), vec![Deleting]);
        assert_eq!(ForceRetry.sources(), vec![Provisioning, Degraded, Failed, Deleting]);
        let waiting: Vec<ProjectStatus> =
            ProjectStatus::ALL.into_iter().filter(|s| failure_event(*s).is_some()).collect();
        assert_eq!(Restart.sources(), waiting, "the reconciler restarts every waiting status");
        for end in [Deleted, Rejected] {
            assert!(end.is_final());
            assert!(EVENTS.iter().all(|e| !e.sources().contains(&end)), "{end} is final");
        }
        assert_eq!(Approve.sources(), vec![PendingApproval]);
        assert_eq!(Reject.sources(), vec![PendingApproval]);
        assert_eq!(Delete.sources(), vec![PendingApproval, Active, Degraded, Failed, Deleting]);
        assert_eq!(ScheduleDeletion.sources(), vec![Active, Degraded, Failed]);
        assert_eq!(Restore.sources(), vec![DeletionScheduled]);
        assert_eq!(DeletionDue.sources(), vec![DeletionScheduled]);
    }

    #[test]
    fn deletions_wait_for_the_grace_period_when_there_is_something_to_keep() {
        for from in [Active, Failed, Degraded] {
            assert_eq!(deletion(from, None, true), ScheduleDeletion, "{from}");
            assert_eq!(deletion(from, None, false), Delete, "{from}");
        }
        assert_eq!(deletion(Failed, Some("deleting"), true), Delete, "asked again: at once");
        assert_eq!(deletion(PendingApproval, None, true), Delete, "withdrawn at once");
        assert_eq!(deletion(Deleting, None, true), Delete, "a deletion under way goes on");
        let again = deletion(DeletionScheduled, None, true);
        assert_eq!(transition(DeletionScheduled, again).unwrap_err().code, "deletion_scheduled");
        let again = deletion(DeletionScheduled, None, false);
        assert_eq!(transition(DeletionScheduled, again).unwrap_err().code, "deletion_scheduled");
        assert_eq!(
            transition(Provisioning, deletion(Provisioning, None, true)).unwrap_err().code,
            "project_busy"
        );
    }

    #[test]
    fn retrying_a_failed_deletion_deletes_again() {
        let event = |status, from, event| decide(status, from, event).map(|(e, step)| (e, step.to));
        for retry in [Event::Retry, Event::ForceRetry] {
            assert_eq!(event(Failed, Some("deleting"), retry), Ok((Event::Delete, Deleting)));
            assert_eq!(event(Failed, Some("provisioning"), retry), Ok((retry, Provisioning)));
            assert_eq!(event(Failed, None, retry), Ok((retry, Provisioning)));
        }
        assert_eq!(event(Failed, Some("deleting"), Resize), Ok((Resize, Provisioning)));
        let scheduled = event(Failed, Some("deleting"), ScheduleDeletion);
        assert_eq!(scheduled, Ok((Event::Delete, Deleting)), "its grace period was over already");
        assert!(event(Deleting, None, Retry).is_err());
    }
}
