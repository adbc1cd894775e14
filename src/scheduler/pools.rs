//! Pool keys: one pool of instances per function version. LATEST's pool is the function's name,
//! a published version's is `name@<id>`, so LATEST and its versions never share instances, and
//! retiring one pool (LATEST updated, a version deleted) leaves the others alone.

/// The pool of a function's LATEST (`name`) or of one of its versions (`name@<id>`). `@` cannot
/// occur in a function name, so keys of different functions never collide.
pub fn pool_key(function: &str, version: Option<u64>) -> String {
    match version {
        None => function.to_string(),
        Some(v) => format!("{function}@{v}"),
    }
}

/// The function name and version of a pool key.
pub(super) fn split_pool_key(key: &str) -> (&str, Option<u64>) {
    match key.split_once('@') {
        Some((name, v)) => (name, v.parse().ok()),
        None => (key, None),
    }
}

#[cfg(test)]
mod tests {
    use super::{pool_key, split_pool_key};

    #[test]
    fn latest_and_versions_have_pools_of_their_own() {
        assert_eq!(pool_key("f", None), "f");
        assert_eq!(pool_key("f", Some(12)), "f@12");
        assert_eq!(split_pool_key("f@12"), ("f", Some(12)));
        assert_eq!(split_pool_key("f"), ("f", None));
        // A function named like another's version pool cannot exist ('@' is not a name character).
        assert!(crate::model::FunctionName::parse("f@1").is_err());
    }
}
