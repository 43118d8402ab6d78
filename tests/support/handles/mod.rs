//! libws handles as the tests make them: the event recorder behind their
//! callbacks (`recorder`), one handle with its recorder and assertions on
//! its events (`client`), and the three ways a connection can be run, so
//! that one test body checks all of them (`mode`, `every_mode!`).
// Shared by test binaries that each use a part of it (tests/common/mod.rs
// lists the support modules): what one binary leaves unused is not dead.
#![allow(dead_code)]

pub mod client;
pub mod mode;
pub mod recorder;

// The same for the names re-exported here.
#[allow(unused_imports)]
pub use {client::*, mode::*, recorder::*};
