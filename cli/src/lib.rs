//! `samza-run`'s home: the one binary outside a job that needs every
//! built-in system type (for its tools and the checks before a submission),
//! so it lives above the facade, `samza`, which knows them, and the
//! scheduler needs no system crate. The commands themselves are in
//! `samza_scheduler::cli` (cluster side) and `samza_container` (local runs,
//! tools).
