//! Hardware-in-the-loop tooling: device simulators, fault injection and community scenarios.
//!
//! Development tooling only; real actors never depend on it. Filled by the drivers and
//! gateway issues; empty until then.
