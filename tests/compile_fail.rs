//! Compile errors of `#[derive(Persistent)]` and thread confinement of
//! handles and connections: each file in tests/ui must fail to compile
//! with exactly the error in its `.stderr` beside it.
//!
//! After a deliberate change of a message (or of rustc's wording), run
//! `TRYBUILD=overwrite cargo test --test compile_fail` and review the diff.

#[test]
fn derive_misuse_and_thread_confinement_do_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
