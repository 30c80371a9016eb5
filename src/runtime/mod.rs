//! The app's runtime. For now: finding the Compose command (v2 or v1).

pub mod compose;
