//! Checks of a configuration's table for its tests (the `testing` feature):
//! every variable sets its field, and bad values are refused by name.

use crate::Var;

/// A value for one variable, and the check that it set its field.
pub type Sample<C> = (&'static str, &'static str, fn(&C) -> bool);

/// Checks that `samples` names every variable of `vars`, in the table's
/// order, and that applying each sample alone to `C::default()` sets its
/// field (which the default does not already hold).
pub fn assert_each_variable_sets_its_field<C: Default>(vars: &[Var<C>], samples: &[Sample<C>]) {
    let names: Vec<&str> = vars.iter().map(|v| v.name).collect();
    let sampled: Vec<&str> = samples.iter().map(|(name, _, _)| *name).collect();
    assert_eq!(
        names, sampled,
        "one sample per variable, in the table's order"
    );
    for (name, value, is_set) in samples {
        let mut config = C::default();
        assert!(
            !is_set(&config),
            "{name}: the default already holds the sample"
        );
        crate::apply(vars, &mut config, |n| {
            (n == *name).then(|| (*value).to_owned())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(is_set(&config), "{name}={value:?} did not set its field");
    }
}

/// Checks that applying each `(name, value)` of `bad` alone to
/// `C::default()` is refused with an error naming the variable and its
/// value.
pub fn assert_bad_values_are_refused<C: Default>(vars: &[Var<C>], bad: &[(&str, &str)]) {
    for (name, value) in bad {
        let error = crate::apply(vars, &mut C::default(), |n| {
            (n == *name).then(|| (*value).to_owned())
        })
        .expect_err(name);
        assert_eq!(error.name, *name);
        assert!(
            error
                .to_string()
                .starts_with(&format!("{name}={value:?}: ")),
            "{error}"
        );
    }
}
