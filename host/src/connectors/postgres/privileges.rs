//! What a statement needs of the connecting role, so that a privilege PostgreSQL refuses
//! (SQLSTATE 42501) is reported as the GRANT that gives it, addressed to the role in the
//! connector's `url`: a least-privilege role is how these connectors run in production, and the
//! server's own words name only the object it refused.

use crate::secret::Secret;

use super::client::parse_url;

/// A statement as its errors name it: what it does, and what to do when the server refuses the
/// role a privilege it needs.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// What the statement does, as its error starts: `cannot read the committed position`.
    pub what: &'a str,
    /// The fix for a refused privilege, usually the GRANT to run (`` run `GRANT SELECT ON "t" TO "r"` ``).
    pub grant: Option<&'a str>,
}

impl<'a> Step<'a> {
    /// A statement whose refused privilege is fixed by `grant`.
    pub fn needing(what: &'a str, grant: &'a str) -> Self {
        Step {
            what,
            grant: Some(grant),
        }
    }
}

impl<'a> From<&'a str> for Step<'a> {
    fn from(what: &'a str) -> Self {
        Step { what, grant: None }
    }
}

/// The role a connector logs in as, quoted for the GRANT statements its errors suggest.
#[derive(Debug, Clone)]
pub struct Grantee(String);

impl Grantee {
    /// The user of `url`; a url without one logs in as the operating-system user, which the
    /// suggestions then call `<role>`.
    pub fn of(url: &Secret) -> Self {
        let user = parse_url(url)
            .ok()
            .and_then(|config| config.get_user().map(str::to_owned));
        Grantee(user.map_or_else(|| "<role>".into(), |user| quoted(&user)))
    }

    /// `GRANT {privileges} ON {object} TO "role"`, the object as SQL names it (`"t"`,
    /// `SEQUENCE "t_id_seq"`, `SCHEMA "s"`).
    pub fn grant(&self, privileges: &str, object: &str) -> String {
        format!("GRANT {privileges} ON {object} TO {}", self.0)
    }
}

/// An identifier quoted for SQL, its own quotes doubled.
fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_names_the_urls_role_quoted_in_every_url_form() {
        for (url, role) in [
            (
                "postgres://weir_least:secret@127.0.0.1/weir",
                "\"weir_least\"",
            ),
            (
                "host=127.0.0.1 user='Odd\"Name' password=secret",
                "\"Odd\"\"Name\"",
            ),
            ("postgres://127.0.0.1/weir", "<role>"),
        ] {
            let grant = Grantee::of(&Secret::new(url)).grant("SELECT", "\"t\"");
            assert_eq!(grant, format!("GRANT SELECT ON \"t\" TO {role}"), "{url}");
            assert!(!grant.contains("secret"), "{grant}");
        }
    }
}
