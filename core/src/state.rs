//! The state a request is evaluated against: policies and cluster view, as one immutable
//! snapshot. The server swaps the `Arc` on change; requests never take a lock.

use crate::admission::{self, ReviewError};
use crate::cluster::ClusterView;
use crate::engine::{self, Mode, Outcome, World};
use crate::policy::PolicySet;

#[derive(Debug, Default)]
pub struct Snapshot {
    pub policies: PolicySet,
    pub view: ClusterView,
}

/// The answer to one review body.
pub struct Answer {
    pub request: admission::Request,
    pub outcome: Outcome,
    /// The AdmissionReview response, serialized.
    pub body: Vec<u8>,
}

impl Snapshot {
    /// The one code path from review bytes to response bytes, shared by `serve` and `review`.
    pub fn review(&self, mode: Mode, body: &[u8]) -> Result<Answer, ReviewError> {
        let request = admission::parse_review(body)?;
        Ok(self.answer(mode, request, None))
    }

    /// As [`Snapshot::review`], offline: the view is the whole world (`fluxadmit check`), so
    /// what it lacks is judged missing for good.
    pub fn review_offline(&self, mode: Mode, body: &[u8]) -> Result<Answer, ReviewError> {
        let request = admission::parse_review(body)?;
        Ok(self.answer_in(mode, request, None, World::Whole))
    }

    /// Evaluates a parsed request; `extra` holds objects confirmed by a live read.
    pub fn answer(
        &self,
        mode: Mode,
        request: admission::Request,
        extra: Option<&ClusterView>,
    ) -> Answer {
        self.answer_in(mode, request, extra, World::Live)
    }

    fn answer_in(
        &self,
        mode: Mode,
        mut request: admission::Request,
        extra: Option<&ClusterView>,
        world: World,
    ) -> Answer {
        let mut outcome =
            engine::evaluate_in(mode, &mut request, &self.policies, &self.view, extra, world);
        if mode == Mode::Validate {
            // The validating webhook never returns a patch.
            outcome.verdict.patch = None;
        }
        let body = admission::answer_json(&request, &outcome.verdict);
        Answer {
            request,
            outcome,
            body,
        }
    }
}
