//! AMQP topic-exchange pattern matching, with RabbitMQ's semantics.

/// Splits a routing key or pattern into words the way RabbitMQ does: the
/// empty string has no words, and every `.` separates two (possibly empty)
/// words, so `"a..b"` is `["a", "", "b"]`.
fn words(key: &str) -> Vec<&str> {
    if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    }
}

/// Whether the AMQP topic `pattern` matches `routing_key`.
///
/// Words are separated by `.`; in the pattern `*` matches exactly one word
/// (which may be empty, as in `a..b`) and `#` matches zero or more words.
/// Any other pattern word must equal the routing-key word. This is the rule a
/// RabbitMQ topic exchange applies to its bindings.
///
/// ```
/// use bbb_pulse::topic_matches;
/// assert!(topic_matches("primary.*.*.*.*.*.*.*.G.#", "primary.T.0.wg.w.p.wt.s.G._"));
/// assert!(topic_matches("route.#", "route.index.a.b"));
/// assert!(!topic_matches("a.*", "a"));
/// ```
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    let pattern = words(pattern);
    let key = words(routing_key);
    // reachable[j]: the pattern prefix processed so far can consume exactly
    // the first j words of the key.
    let mut reachable = vec![false; key.len() + 1];
    reachable[0] = true;
    for word in pattern {
        let mut next = vec![false; key.len() + 1];
        match word {
            "#" => {
                let mut any = false;
                for j in 0..=key.len() {
                    any |= reachable[j];
                    next[j] = any;
                }
            }
            "*" => {
                next[1..].copy_from_slice(&reachable[..key.len()]);
            }
            literal => {
                for j in 0..key.len() {
                    next[j + 1] = reachable[j] && key[j] == literal;
                }
            }
        }
        reachable = next;
    }
    reachable[key.len()]
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    #[test]
    fn literal_words_must_match_exactly() {
        assert!(topic_matches("a.b.c", "a.b.c"));
        assert!(!topic_matches("a.b.c", "a.b"));
        assert!(!topic_matches("a.b", "a.b.c"));
        assert!(!topic_matches("a.b.c", "a.b.x"));
        assert!(!topic_matches("a.b", "a.bb"));
    }

    #[test]
    fn star_matches_exactly_one_word() {
        assert!(topic_matches("a.*.c", "a.b.c"));
        assert!(topic_matches("*", "a"));
        assert!(!topic_matches("*", ""));
        assert!(!topic_matches("a.*", "a"));
        assert!(!topic_matches("a.*.c", "a.c"));
        assert!(!topic_matches("a.*.c", "a.b.b.c"));
        assert!(topic_matches("*.*", "a.b"));
        assert!(!topic_matches("*.*", "a.b.c"));
    }

    #[test]
    fn hash_at_start() {
        assert!(topic_matches("#.c", "c"));
        assert!(topic_matches("#.c", "a.b.c"));
        assert!(!topic_matches("#.c", "a.b.c.d"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("#", "a.b.c"));
    }

    #[test]
    fn hash_in_middle() {
        assert!(topic_matches("a.#.c", "a.c"));
        assert!(topic_matches("a.#.c", "a.b.c"));
        assert!(topic_matches("a.#.c", "a.b.x.c"));
        assert!(!topic_matches("a.#.c", "a.b"));
        assert!(topic_matches("a.#.#.c", "a.c"));
        assert!(topic_matches("a.#.*.c", "a.b.c"));
        assert!(!topic_matches("a.#.*.c", "a.c"));
        assert!(topic_matches("#.b.#", "a.b.c"));
        assert!(topic_matches("#.b.#", "b"));
    }

    #[test]
    fn hash_at_end() {
        assert!(topic_matches("route.#", "route"));
        assert!(topic_matches("route.#", "route.index.a.b"));
        assert!(!topic_matches("route.#", "routes.index"));
        assert!(!topic_matches("route.#", "other.route"));
    }

    #[test]
    fn empty_words() {
        // "a..b" has an empty middle word, which `*` matches and `#` absorbs.
        assert!(topic_matches("a.*.b", "a..b"));
        assert!(topic_matches("a.#", "a..b"));
        assert!(!topic_matches("a.b", "a..b"));
        // A trailing dot makes an empty last word.
        assert!(topic_matches("a.*", "a."));
        assert!(!topic_matches("a", "a."));
        assert!(topic_matches("a.", "a."));
        // The empty key has no words at all.
        assert!(topic_matches("", ""));
        assert!(!topic_matches("", "a"));
        assert!(!topic_matches("a", ""));
    }

    #[test]
    fn upstream_pulse_patterns() {
        let key = "primary.fKQ6UR7lTLiGoZJ1wzeWTg.0.wg.wid.prov.wt.sched.GROUP._";
        assert!(topic_matches("primary.*.*.*.*.*.*.*.GROUP.#", key));
        assert!(!topic_matches("primary.*.*.*.*.*.*.*.OTHER.#", key));
        assert!(topic_matches("primary.fKQ6UR7lTLiGoZJ1wzeWTg.#", key));
        assert!(topic_matches(
            "route.index.#",
            "route.index.gecko.v2.latest"
        ));
        assert!(!topic_matches("route.index.#", "route.notify.email"));
    }
}
