//! Collision-free Kubernetes names derived from tailnet identities.
//!
//! Upstream truncated login names at `@` and used them unsanitised, so `alice@corp.com` and
//! `alice@gmail.com` shared one ServiceAccount, and `Alice_B@x` failed with a 500. Here every name carries a
//! hash of the *exact* login name, so two different identities can never map to the same object, and the
//! readable part is sanitised to DNS-1123.
//!
//! The hash has 130 bits (26 base32 characters): a colliding login name cannot be computed. (An earlier
//! version used 40 bits; with tagged nodes, whose login name is a node name the attacker picks, a collision
//! was a brute-force search away, and `replace` or `logout?all=true` by the collider would have ended the
//! victim's sessions.) The readable part is cut to 22 characters so the key stays ≤ 49 and the TkaSignin
//! name ≤ 60, usable as a label value.

use data_encoding::BASE32_NOPAD;
use sha2::{Digest, Sha256};

/// Readable part of a subject key: at most this many characters.
const SANITIZED_MAX: usize = 22;
/// Hash characters of a subject key: 26 × 5 = 130 bits.
const SUBJECT_HASH_LEN: usize = 26;

/// Lowercase, `[a-z0-9-]` only, no leading/trailing/double dashes, at most 22 characters, never empty.
pub fn sanitize(login: &str) -> String {
    let mut out = String::with_capacity(login.len());
    for c in login.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_matches('-');
    let cut: String = trimmed.chars().take(SANITIZED_MAX).collect();
    let cut = cut.trim_matches('-');
    if cut.is_empty() {
        "user".to_string()
    } else {
        cut.to_string()
    }
}

/// First `n` characters of lowercase unpadded base32 of SHA-256(`x`).
pub fn hash(x: &str, n: usize) -> String {
    let digest = Sha256::digest(x.as_bytes());
    let mut s = BASE32_NOPAD.encode(&digest).to_ascii_lowercase();
    s.truncate(n);
    s
}

/// The subject key `UK` of a login name: `sanitize(login)-h(login, 26)`, at most 49 characters.
pub fn subject_key(login: &str) -> String {
    format!("{}-{}", sanitize(login), hash(login, SUBJECT_HASH_LEN))
}

/// Whether `key` is the subject key this version computes for `login`. Sessions recorded with another key
/// (the 40-bit keys of earlier versions) are ended rather than served under two naming schemes.
pub fn is_current_subject_key(key: &str, login: &str) -> bool {
    key == subject_key(login)
}

/// The node key `NK` of a node's stable ID.
pub fn node_key(node_stable_id: &str) -> String {
    hash(node_stable_id, 6)
}

/// `tka-<UK>-<NK>`: one TkaSignin per user and node (≤ 60 characters, also a valid label value).
pub fn signin_name(subject_key: &str, node_key: &str) -> String {
    format!("tka-{subject_key}-{node_key}")
}

/// `tka-user-<UK>`: the per-user ServiceAccount and its (Cluster)RoleBindings.
pub fn user_object_name(subject_key: &str) -> String {
    format!("tka-user-{subject_key}")
}

/// `tka-user-<UK>-<instance>`: the user's ClusterRoleBinding and RoleBindings. Bindings live outside the
/// instance's namespace (cluster-scoped, or in the granted namespaces), so two tka instances in one cluster
/// would otherwise fight over one object per user and clean up each other's grants. `instance` is the
/// instance's namespace (a DNS label); the name stays far below the 253 characters allowed, and since the
/// key's hash part never contains `-`, different (key, instance) pairs never give the same name.
pub fn binding_name(subject_key: &str, instance: &str) -> String {
    format!("tka-user-{subject_key}-{instance}")
}

/// `<signin name>-<h(uid, 8)>`: the Secret of one TkaSignin object. Named after the object's UID, not
/// generated: a retry after a crash between creating the Secret and recording it in status finds the one the
/// earlier attempt created instead of leaving it behind (the chaos soak found such orphans), cleanup can
/// delete it by name without a LIST, and a new session under the same name (after logout or expiry) has a new
/// UID and so always gets a new Secret.
pub fn session_secret_name(signin_name: &str, signin_uid: &str) -> String {
    format!("{signin_name}-{}", hash(signin_uid, 8))
}

/// True when `s` is a DNS-1123 label (lowercase alphanumerics and `-`, alphanumeric at both ends, ≤ 63).
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sanitizes_like_the_spec() {
        assert_eq!(sanitize("alice@example.com"), "alice-example-com");
        assert_eq!(sanitize("Alice_B+ops@Corp.COM"), "alice-b-ops-corp-com");
        assert_eq!(sanitize("--x--"), "x");
        assert_eq!(sanitize("ü@ß"), "user");
        assert_eq!(sanitize(""), "user");
        // The cut at 22 must not leave a trailing dash.
        let long = format!("{}-b", "a".repeat(21));
        assert_eq!(sanitize(&long), "a".repeat(21));
        assert_eq!(sanitize(&"x".repeat(80)).len(), 22);
    }

    #[test]
    fn keys_have_the_documented_shape() {
        let uk = subject_key("alice@example.com");
        assert!(uk.starts_with("alice-example-com-"), "{uk}");
        // At least 128 bits of hash.
        assert_eq!(uk.len(), "alice-example-com-".len() + 26);
        assert!(is_current_subject_key(&uk, "alice@example.com"));
        // Known answer (also what tests/e2e/run.sh computes with openssl and base32).
        assert_eq!(uk, "alice-example-com-76gzqgp4byjl6djerexelgd6es");
        assert!(!is_current_subject_key(
            &uk[..uk.len() - 18],
            "alice@example.com"
        ));
        assert_eq!(node_key("nABC123CNTRL").len(), 6);
        // Known answer, so a change of hash or alphabet cannot go unnoticed.
        assert_eq!(hash("", 8), "4oymiquy");
    }

    #[test]
    fn logins_that_sanitize_alike_get_different_keys() {
        let names = [
            "alice@corp.com",
            "alice@gmail.com",
            "a.b@x",
            "a-b@x",
            "A.b@x",
            "Alice@x",
            "alice@x",
        ];
        let keys: std::collections::HashSet<_> = names.iter().map(|n| subject_key(n)).collect();
        assert_eq!(keys.len(), names.len());
    }

    proptest! {
        #[test]
        fn names_are_always_valid(login in "\\PC{0,80}", node in "[a-zA-Z0-9]{1,20}") {
            let uk = subject_key(&login);
            prop_assert!(uk.len() <= 49);
            prop_assert!(is_dns1123_label(&uk), "{}", uk);
            let name = signin_name(&uk, &node_key(&node));
            prop_assert!(name.len() <= 60);
            prop_assert!(is_dns1123_label(&name));
            prop_assert!(is_dns1123_label(&user_object_name(&uk)));
            let instance = "i".repeat(63);
            prop_assert!(binding_name(&uk, &instance).len() <= 253);
        }

        #[test]
        fn binding_names_differ_per_user_and_instance(
            a in "[a-z.@-]{1,30}", b in "[a-z.@-]{1,30}", i in "[a-z0-9-]{1,20}", j in "[a-z0-9-]{1,20}"
        ) {
            prop_assume!((a.as_str(), i.as_str()) != (b.as_str(), j.as_str()));
            prop_assert_ne!(binding_name(&subject_key(&a), &i), binding_name(&subject_key(&b), &j));
        }

        #[test]
        fn distinct_logins_never_share_a_key(a in "[a-zA-Z.@_+-]{1,12}", b in "[a-zA-Z.@_+-]{1,12}") {
            prop_assume!(a != b);
            prop_assert_ne!(subject_key(&a), subject_key(&b));
        }
    }
}
