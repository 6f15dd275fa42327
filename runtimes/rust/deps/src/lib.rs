//! Empty: this crate exists only so cargo builds its dependencies' rlibs.
