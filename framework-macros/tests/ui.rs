//! Compile errors: one mistake per file in `tests/ui`, with the expected message in the `.stderr`
//! next to it. Refresh with `TRYBUILD=overwrite cargo test -p cohort-macros --test ui`, then read
//! the diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
