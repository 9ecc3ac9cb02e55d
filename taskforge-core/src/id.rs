//! Newtype identifiers. Every id is a UUID v7, so ids sort by creation time.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new id, ordered after every id made before it by this process.
            #[must_use]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID.
            #[must_use]
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside.
            #[must_use]
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }

            /// The 16 bytes of the UUID, big-endian, so byte order is time order.
            #[must_use]
            pub const fn to_bytes(&self) -> [u8; 16] {
                *self.0.as_bytes()
            }

            /// The id from its 16 bytes.
            #[must_use]
            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "_{}"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::from_str(s).map(Self)
            }
        }
    };
}

define_id!(
    /// Identifies a [`Workflow`](crate::Workflow).
    WorkflowId,
    "wf"
);
define_id!(
    /// Identifies a [`WorkflowVersion`](crate::WorkflowVersion).
    VersionId,
    "ver"
);
define_id!(
    /// Identifies a [`Trigger`](crate::Trigger).
    TriggerId,
    "trg"
);
define_id!(
    /// Identifies an [`Event`](crate::Event).
    EventId,
    "evt"
);
define_id!(
    /// Identifies a [`WorkflowRun`](crate::WorkflowRun).
    RunId,
    "run"
);
define_id!(
    /// Identifies an API token (`store::ApiToken`).
    TokenId,
    "tok"
);
define_id!(
    /// Identifies a [`StepRun`](crate::StepRun): one attempt of one step.
    StepRunId,
    "step"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation_and_round_trip() {
        let a = RunId::new();
        let b = RunId::new();
        assert!(a < b);
        assert!(a.to_bytes() < b.to_bytes());
        assert_eq!(RunId::from_bytes(a.to_bytes()), a);
        assert_eq!(a.to_string().parse::<RunId>().ok(), Some(a));
        let json = serde_json::to_string(&a).ok();
        assert_eq!(json, Some(format!("\"{a}\"")));
    }
}
