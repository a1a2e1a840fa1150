//! (being written: placeholder so the rest of the crate compiles until the client lands)

use serde::{Deserialize, Serialize};

/// Engine counts of an analysis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Stats {
    pub malicious: u32,
    pub suspicious: u32,
    pub undetected: u32,
    pub harmless: u32,
    pub timeout: u32,
    #[serde(rename = "confirmed-timeout")]
    pub confirmed_timeout: u32,
    #[serde(rename = "type-unsupported")]
    pub type_unsupported: u32,
    pub failure: u32,
}

impl Stats {
    /// Engines that answered.
    pub fn engines(&self) -> u32 {
        self.malicious
            + self.suspicious
            + self.undetected
            + self.harmless
            + self.timeout
            + self.confirmed_timeout
            + self.type_unsupported
            + self.failure
    }
}
