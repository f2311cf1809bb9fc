//! C ABI of server (filled in by its issue).

#![allow(unused_imports)]
use super::guard;
