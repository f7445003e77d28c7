//! The cluster scheduler: resource manager, node managers and job coordinator,
//! talking HTTP/JSON. The wire types will live in one module of this crate.
//!
//! Not built yet: the cluster scheduler issue fills this crate.
