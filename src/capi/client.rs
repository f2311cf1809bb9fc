//! C ABI of client (filled in by its issue).

#![allow(unused_imports)]
use super::guard;
