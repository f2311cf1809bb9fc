//! C ABI of nal (filled in by its issue).

#![allow(unused_imports)]
use super::guard;
