//! The operator properties samplers key their defaults on.
//!
//! TEMPORARY: until `genprior_inverse::Operator` exposes these itself (the operator-seam
//! change), they are read off the task name here, in this one place.

use genprior_inverse::Operator;

/// The task of the reference papers' configs (DPS, DPnP) an operator corresponds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceTask {
    SuperResolution,
    Inpainting,
    Deblur,
    PhaseRetrieval,
    OneBit,
}

pub fn reference_task(op: &dyn Operator) -> Option<ReferenceTask> {
    let n = op.name();
    if n.starts_with("sr") {
        Some(ReferenceTask::SuperResolution)
    } else if n.starts_with("inpaint") {
        Some(ReferenceTask::Inpainting)
    } else if n.starts_with("deblur") {
        Some(ReferenceTask::Deblur)
    } else if n == "phase-retrieval" {
        Some(ReferenceTask::PhaseRetrieval)
    } else if n == "one-bit" {
        Some(ReferenceTask::OneBit)
    } else {
        None
    }
}

/// Whether A(x) cannot tell x from −x (per channel), as |F(M x)| cannot.
pub fn sign_ambiguous(op: &dyn Operator) -> bool {
    op.name() == "phase-retrieval"
}

/// Whether the likelihood is Gaussian in A(x).
pub fn gaussian_likelihood(op: &dyn Operator) -> bool {
    op.name() != "one-bit"
}
