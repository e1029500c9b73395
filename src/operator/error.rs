//! The operator layer's error. A Kubernetes failure names the step it happened in (what the log and the
//! `reconcile` span show), and every error has a static category, used as the metric label.

use kube::runtime::finalizer;

/// The step of a reconcile (or sweep) that talks to the apiserver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    ReleaseFinalizer,
    GetRole,
    ApplyServiceAccount,
    CreateSessionSecret,
    GetSessionSecret,
    ApplyBinding,
    DeleteBinding,
    WriteStatus,
    ExpireSignin,
    Revoke,
    DeleteUserObjects,
    ListSignins,
    ListManaged,
    RemoveLegacy,
}

/// The variant name, which is what people grep logs for.
impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{step}: kubernetes API request failed: {source}")]
    Kube {
        step: Step,
        #[source]
        source: kube::Error,
    },
    #[error("TkaSignin {name} is invalid: {reason}")]
    InvalidSpec { name: String, reason: String },
    #[error("finalizer handling failed: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// Stable, bounded metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube {
                source: kube::Error::Api(s),
                ..
            } => match s.code {
                409 => "conflict",
                403 => "forbidden",
                _ => "api_error",
            },
            Error::Kube { .. } => "api_unreachable",
            Error::InvalidSpec { .. } => "invalid_spec",
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.category()
                }
                _ => "finalizer",
            },
        }
    }

    /// Did the apiserver say it is away or busy (unreachable, 5xx, 429, a write conflict)? Such errors are
    /// retried soon; the others back off slowly.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kube {
                source: kube::Error::Api(s),
                ..
            } => s.code >= 500 || s.code == 429 || s.code == 409,
            Error::Kube { .. } => true,
            Error::InvalidSpec { .. } => false,
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.is_transient()
                }
                _ => true,
            },
        }
    }

    /// The failed step, when it was an apiserver call.
    pub fn step(&self) -> Option<Step> {
        match self {
            Error::Kube { step, .. } => Some(*step),
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.step(),
                _ => None,
            },
            Error::InvalidSpec { .. } => None,
        }
    }
}

/// Names the step of a failed apiserver call: `api.get(..).await.at(Step::GetRole)?`.
pub trait At<T> {
    fn at(self, step: Step) -> Result<T, Error>;
}

impl<T> At<T> for Result<T, kube::Error> {
    fn at(self, step: Step) -> Result<T, Error> {
        self.map_err(|source| Error::Kube { step, source })
    }
}

/// Deletes and gets answer NotFound when someone else (or an earlier attempt) already finished the job:
/// that is success, never a reason to retry forever.
pub fn ignore_not_found<T>(r: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// True for an apiserver answer with this HTTP status.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}
