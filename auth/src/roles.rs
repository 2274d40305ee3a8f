//! Roles and role expansion.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::AuthError;
use crate::scopes::{normalize_scopes, valid_scope, validate_scopes};

/// The text that `assume:` scopes start with.
const ASSUME: &str = "assume:";
/// The parameter placeholder in the scopes of a role whose id ends in `*`.
const PARAM: &str = "<..>";
/// How many distinct expansions [`RoleResolver::expand`] remembers before starting afresh.
const CACHE_LIMIT: usize = 4096;

/// A role: holding `assume:<role_id>` grants `scopes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    /// The role id. A final `*` makes it match every id with that prefix, and `<..>` in its
    /// scopes is then replaced by the matched remainder.
    pub role_id: String,
    /// The scopes the role grants.
    #[serde(default)]
    pub scopes: Vec<String>,
}

impl Role {
    /// A role with the given id and scopes.
    pub fn new<I, S>(role_id: impl Into<String>, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Role {
            role_id: role_id.into(),
            scopes: scopes.into_iter().map(Into::into).collect(),
        }
    }
}

/// A role prepared for matching.
#[derive(Debug)]
struct Rule {
    /// The role id, for error messages.
    role_id: String,
    /// `assume:` + role id, without its final `*` for prefix roles.
    pattern: String,
    /// Whether the role id ends in `*`.
    prefix: bool,
    /// Scopes granted as they are.
    plain: Vec<String>,
    /// Scopes containing `<..>` (prefix roles only), granted after substitution.
    paramed: Vec<String>,
}

impl Rule {
    /// If the held scope `held` grants this role, the parameter it grants it with: `Some("")`
    /// for roles without a parameter, `Some(suffix)` otherwise. A suffix ending in `*` means
    /// "every suffix starting with this".
    fn granted_by<'a>(&self, held: &'a str) -> Option<&'a str> {
        let star_base = held.strip_suffix('*');
        if self.prefix {
            if let Some(rest) = held.strip_prefix(self.pattern.as_str()) {
                return Some(rest);
            }
            match star_base {
                Some(base) if self.pattern.starts_with(base) => Some("*"),
                _ => None,
            }
        } else if held == self.pattern {
            Some("")
        } else {
            match star_base {
                Some(base) if self.pattern.starts_with(base) => Some(""),
                _ => None,
            }
        }
    }

    /// The scopes this role grants with parameter `param`, appended to `out`.
    fn grant(&self, param: &str, out: &mut Vec<String>) {
        out.extend(self.plain.iter().cloned());
        for scope in &self.paramed {
            out.push(substitute(scope, param));
        }
    }
}

/// Replace the first `<..>` in `scope` with `param`. When `param` ends in `*` it already
/// covers everything after the placeholder, so the rest of the scope is dropped.
fn substitute(scope: &str, param: &str) -> String {
    match scope.find(PARAM) {
        Some(i) if param.ends_with('*') => format!("{}{}", &scope[..i], param),
        Some(i) => format!("{}{}{}", &scope[..i], param, &scope[i + PARAM.len()..]),
        None => scope.to_owned(),
    }
}

/// Whether `scope` could grant any role: it starts with `assume:`, or it is a star scope that
/// satisfies some `assume:` scope (such as `*`, `as*` or `assume:*`).
fn may_assume(scope: &str) -> bool {
    scope.starts_with(ASSUME)
        || scope
            .strip_suffix('*')
            .is_some_and(|base| ASSUME.starts_with(base))
}

/// Expands scope sets through a fixed set of roles, the way the TaskCluster auth service does.
///
/// `assume:X` grants every role whose id is `X`, or whose id ends in `*` with `X` starting
/// with the part before it (then `<..>` in the role's scopes is replaced by the rest of `X`).
/// A held scope ending in `*` (such as `assume:proj-*`, `assume:*` or `*`) grants every role
/// whose `assume:<roleId>` it satisfies. Expansion repeats until nothing new is granted and the
/// result is normalised (see [`normalize_scopes`]). Roles must not form cycles, which is
/// checked when the resolver is built.
///
/// Results are cached by the `assume`-like part of the input, so repeated expansions of the
/// same roles are cheap. A resolver is `Send + Sync` and meant to be shared.
#[derive(Debug)]
pub struct RoleResolver {
    rules: Vec<Rule>,
    cache: RwLock<HashMap<Vec<String>, Arc<Vec<String>>>>,
}

impl RoleResolver {
    /// Build a resolver, validating the roles: role ids and scopes must be printable ASCII,
    /// scopes must not end in `**`, role ids must be unique, parameterised scopes may contain
    /// `<..>` only once and not right after a `*`, and roles must not depend on themselves
    /// (directly or indirectly, with every parameter taken as `*`).
    pub fn new(roles: Vec<Role>) -> Result<Self, AuthError> {
        let mut seen = HashSet::new();
        let mut rules = Vec::with_capacity(roles.len());
        for role in roles {
            if !valid_scope(&role.role_id) {
                return Err(AuthError::InvalidRole {
                    role_id: role.role_id,
                    reason: "role ids may only contain printable ASCII characters".into(),
                });
            }
            if !seen.insert(role.role_id.clone()) {
                return Err(AuthError::InvalidRole {
                    role_id: role.role_id,
                    reason: "defined more than once".into(),
                });
            }
            validate_scopes(&role.scopes)?;
            let (base, prefix) = match role.role_id.strip_suffix('*') {
                Some(base) => (base, true),
                None => (role.role_id.as_str(), false),
            };
            let pattern = format!("{ASSUME}{base}");
            let (paramed, plain): (Vec<String>, Vec<String>) = role
                .scopes
                .iter()
                .cloned()
                .partition(|s| prefix && s.contains(PARAM));
            for scope in &paramed {
                if scope.matches(PARAM).count() > 1 {
                    return Err(AuthError::InvalidScope {
                        scope: scope.clone(),
                        reason: format!("parameterized scope contains more than one `{PARAM}`"),
                    });
                }
                if scope.contains(&format!("*{PARAM}")) {
                    return Err(AuthError::InvalidScope {
                        scope: scope.clone(),
                        reason: format!("`*{PARAM}` is ambiguous and not allowed"),
                    });
                }
            }
            rules.push(Rule {
                role_id: role.role_id.clone(),
                pattern,
                prefix,
                plain: normalize_scopes(plain),
                paramed: normalize_scopes(paramed),
            });
        }
        check_acyclic(&rules)?;
        Ok(RoleResolver {
            rules,
            cache: RwLock::new(HashMap::new()),
        })
    }

    /// The role ids this resolver knows.
    pub fn role_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.role_id.as_str())
    }

    /// Expand `scopes` through the roles (recursively) and normalise the result.
    pub fn expand(&self, scopes: &[String]) -> Vec<String> {
        let input = normalize_scopes(scopes.to_vec());
        let key: Vec<String> = input.iter().filter(|s| may_assume(s)).cloned().collect();
        if key.is_empty() {
            return input;
        }
        let cached = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let granted = match cached {
            Some(granted) => granted,
            None => {
                let granted = Arc::new(self.expand_uncached(&key));
                let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= CACHE_LIMIT {
                    cache.clear();
                }
                cache.insert(key, Arc::clone(&granted));
                granted
            }
        };
        let mut all = input;
        all.extend(granted.iter().cloned());
        normalize_scopes(all)
    }

    /// Everything granted (directly or not) by `seed`, including `seed` itself, normalised.
    fn expand_uncached(&self, seed: &[String]) -> Vec<String> {
        let mut seen: HashSet<String> = seed.iter().cloned().collect();
        let mut work: Vec<String> = seed.to_vec();
        let mut granted = Vec::new();
        while let Some(scope) = work.pop() {
            if !may_assume(&scope) {
                continue;
            }
            granted.clear();
            for rule in &self.rules {
                if let Some(param) = rule.granted_by(&scope) {
                    rule.grant(param, &mut granted);
                }
            }
            for s in granted.drain(..) {
                if !seen.contains(&s) {
                    seen.insert(s.clone());
                    work.push(s);
                }
            }
        }
        normalize_scopes(seen.into_iter().collect())
    }
}

/// Fail if some role grants, directly or through other roles, a scope that grants itself.
/// Parameters are taken as `*`, the most general value, as TaskCluster does.
fn check_acyclic(rules: &[Rule]) -> Result<(), AuthError> {
    let mut edges: Vec<Vec<usize>> = Vec::with_capacity(rules.len());
    let mut granted = Vec::new();
    for rule in rules {
        granted.clear();
        rule.grant("*", &mut granted);
        let mut deps: Vec<usize> = Vec::new();
        for scope in granted.iter().filter(|s| may_assume(s)) {
            for (j, other) in rules.iter().enumerate() {
                if other.granted_by(scope).is_some() && !deps.contains(&j) {
                    deps.push(j);
                }
            }
        }
        edges.push(deps);
    }

    // iterative depth-first search with colours: 0 unvisited, 1 on the stack, 2 done
    let mut colour = vec![0u8; rules.len()];
    for start in 0..rules.len() {
        if colour[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        colour[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&dep) = edges[node].get(*next) {
                *next += 1;
                match colour[dep] {
                    0 => {
                        colour[dep] = 1;
                        stack.push((dep, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[from..]
                            .iter()
                            .map(|&(n, _)| rules[n].role_id.clone())
                            .collect();
                        cycle.push(rules[dep].role_id.clone());
                        return Err(AuthError::RoleCycle(cycle));
                    }
                    _ => {}
                }
            } else {
                colour[node] = 2;
                stack.pop();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(scopes: &[&str]) -> Vec<String> {
        scopes.iter().map(|s| s.to_string()).collect()
    }

    fn resolver(roles: &[(&str, &[&str])]) -> RoleResolver {
        RoleResolver::new(
            roles
                .iter()
                .map(|(id, scopes)| Role::new(*id, scopes.iter().copied()))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn documented_example() {
        let r = resolver(&[
            (
                "group:admins",
                &["admin-scope-1", "admin-scope-2", "assume:group:devs"],
            ),
            ("group:devs", &["dev-scope"]),
        ]);
        assert_eq!(
            r.expand(&v(&["assume:group:admins", "my-scope"])),
            v(&[
                "admin-scope-1",
                "admin-scope-2",
                "assume:group:admins",
                "assume:group:devs",
                "dev-scope",
                "my-scope",
            ])
        );
        // unrelated scopes are only normalised
        assert_eq!(r.expand(&v(&["b", "a", "a"])), v(&["a", "b"]));
        assert_eq!(r.expand(&[]), Vec::<String>::new());
    }

    #[test]
    fn star_scope_grants_roles_it_covers() {
        let r = resolver(&[
            (
                "repo:github.com/taskcluster/taskcluster-auth",
                &["secrets:get:auth-tests"],
            ),
            ("repo:github.com/other/x", &["other"]),
        ]);
        let e = r.expand(&v(&["assume:repo:github.com/taskcluster/*"]));
        assert_eq!(
            e,
            v(&[
                "assume:repo:github.com/taskcluster/*",
                "secrets:get:auth-tests"
            ])
        );
        let all = r.expand(&v(&["*"]));
        assert_eq!(all, v(&["*"]));
        let assume_all = r.expand(&v(&["assume:*"]));
        assert_eq!(
            assume_all,
            v(&["assume:*", "other", "secrets:get:auth-tests"])
        );
        let a_star = r.expand(&v(&["a*"]));
        assert_eq!(a_star, v(&["a*", "other", "secrets:get:auth-tests"]));
    }

    #[test]
    fn star_role_applies_to_every_matching_id() {
        let r = resolver(&[(
            "hook-id:taskcluster/*",
            &["queue:create-task:aws-provisioner/taskcluster-hooks"],
        )]);
        let e = r.expand(&v(&["assume:hook-id:taskcluster/nightly-diagnostics"]));
        assert!(e.contains(&"queue:create-task:aws-provisioner/taskcluster-hooks".to_string()));
        assert_eq!(
            r.expand(&v(&["assume:hook-id:other/x"])),
            v(&["assume:hook-id:other/x"])
        );
    }

    #[test]
    fn parameterised_roles() {
        let r = resolver(&[(
            "project-admin:*",
            &[
                "auth:create-role:project-<..>/*",
                "secrets:get:project/<..>/*",
                "plain",
            ],
        )]);
        assert_eq!(
            r.expand(&v(&["assume:project-admin:zap"])),
            v(&[
                "assume:project-admin:zap",
                "auth:create-role:project-zap/*",
                "plain",
                "secrets:get:project/zap/*",
            ])
        );
        // a star in the parameter swallows everything after <..>
        assert_eq!(
            r.expand(&v(&["assume:project-admin:ops*"])),
            v(&[
                "assume:project-admin:ops*",
                "auth:create-role:project-ops*",
                "plain",
                "secrets:get:project/ops*",
            ])
        );
        // a shorter star scope covers the whole role: parameter `*`
        assert_eq!(
            r.expand(&v(&["assume:proj*"])),
            v(&[
                "assume:proj*",
                "auth:create-role:project-*",
                "plain",
                "secrets:get:project/*",
            ])
        );
        // empty suffix
        assert_eq!(
            r.expand(&v(&["assume:project-admin:"])),
            v(&[
                "assume:project-admin:",
                "auth:create-role:project-/*",
                "plain",
                "secrets:get:project//*",
            ])
        );
    }

    #[test]
    fn placeholder_in_non_star_role_is_literal() {
        let r = resolver(&[("fixed", &["x:<..>"])]);
        assert_eq!(
            r.expand(&v(&["assume:fixed"])),
            v(&["assume:fixed", "x:<..>"])
        );
    }

    #[test]
    fn recursive_and_parameterised_chain() {
        let r = resolver(&[
            (
                "worker-pool:*",
                &["assume:worker-type:<..>", "queue:claim-work:<..>"],
            ),
            ("worker-type:*", &["queue:worker-id:<..>/*"]),
            ("anonymous", &["queue:get-task:*"]),
        ]);
        assert_eq!(
            r.expand(&v(&["assume:worker-pool:p/w"])),
            v(&[
                "assume:worker-pool:p/w",
                "assume:worker-type:p/w",
                "queue:claim-work:p/w",
                "queue:worker-id:p/w/*",
            ])
        );
    }

    #[test]
    fn cycles_are_rejected() {
        let err = RoleResolver::new(vec![
            Role::new("a", ["assume:b"]),
            Role::new("b", ["assume:c"]),
            Role::new("c", ["assume:a"]),
        ])
        .unwrap_err();
        match err {
            AuthError::RoleCycle(c) => {
                assert_eq!(c.first(), c.last());
                assert_eq!(c.len(), 4);
            }
            other => panic!("unexpected {other:?}"),
        }
        // self-reference through a star
        assert!(matches!(
            RoleResolver::new(vec![Role::new("a", ["assume:a*"])]),
            Err(AuthError::RoleCycle(_))
        ));
        // parameterised growth: x* -> assume:x-<..> would never end
        assert!(matches!(
            RoleResolver::new(vec![Role::new("x*", ["assume:x-<..>"])]),
            Err(AuthError::RoleCycle(_))
        ));
        // a role granting `*` depends on itself
        assert!(matches!(
            RoleResolver::new(vec![Role::new("admin", ["*"])]),
            Err(AuthError::RoleCycle(_))
        ));
        // a chain is fine
        assert!(
            RoleResolver::new(vec![Role::new("a", ["assume:b"]), Role::new("b", ["x"])]).is_ok()
        );
    }

    #[test]
    fn invalid_roles_are_rejected() {
        assert!(matches!(
            RoleResolver::new(vec![Role::new("a", ["x**"])]),
            Err(AuthError::InvalidScope { .. })
        ));
        assert!(matches!(
            RoleResolver::new(vec![Role::new("a", ["x"]), Role::new("a", ["y"])]),
            Err(AuthError::InvalidRole { .. })
        ));
        assert!(matches!(
            RoleResolver::new(vec![Role::new("a*", ["x:<..>:<..>"])]),
            Err(AuthError::InvalidScope { .. })
        ));
        assert!(matches!(
            RoleResolver::new(vec![Role::new("a*", ["x*<..>"])]),
            Err(AuthError::InvalidScope { .. })
        ));
        assert!(matches!(
            RoleResolver::new(vec![Role::new("a\n", ["x"])]),
            Err(AuthError::InvalidRole { .. })
        ));
    }

    #[test]
    fn cached_results_match_fresh_ones() {
        let r = resolver(&[("a", &["x"]), ("b*", &["y:<..>"])]);
        let first = r.expand(&v(&["assume:a", "assume:b1", "z"]));
        let second = r.expand(&v(&["z", "assume:b1", "assume:a", "w"]));
        assert_eq!(first, v(&["assume:a", "assume:b1", "x", "y:1", "z"]));
        assert_eq!(second, v(&["assume:a", "assume:b1", "w", "x", "y:1", "z"]));
    }
}
