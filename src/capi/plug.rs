//! C ABI of plug (filled in by its issue).

#![allow(unused_imports)]
use super::guard;
