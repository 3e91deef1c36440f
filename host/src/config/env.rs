//! `${VAR}` substitution, so that secrets come from the environment and never sit in the file.

/// Replaces `${NAME}` and `${NAME:-default}` with values from `lookup`; `$${` stays a literal
/// `${`. An unset variable without a default is an error naming it and its line.
pub fn substitute_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            continue;
        }
        let Some(body) = tail.strip_prefix("${") else {
            out.push('$');
            rest = &tail[1..];
            continue;
        };
        let line = text[..text.len() - tail.len()].matches('\n').count() + 1;
        let Some(end) = body.find('}') else {
            return Err(format!("line {line}: `${{` is never closed with `}}`"));
        };
        let expression = &body[..end];
        let (name, default) = match expression.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (expression, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "line {line}: `${{{expression}}}` is not a variable reference; names use letters, digits and `_`"
            ));
        }
        match (lookup(name), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "line {line}: environment variable `{name}` is not set; export it, or write `${{{name}:-default}}`"
                ));
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        (name == "PG_PASSWORD").then(|| "s3cret".to_owned())
    }

    #[test]
    fn substitutes_set_variables_and_defaults() {
        let out = substitute_env("a=${PG_PASSWORD} b=${MISSING:-x} c=$HOME d=$${LIT}", lookup);
        assert_eq!(out.unwrap(), "a=s3cret b=x c=$HOME d=${LIT}");
    }

    #[test]
    fn unset_variable_names_it_and_its_line() {
        let err = substitute_env("x = 1\ny = \"${NOPE}\"", lookup).unwrap_err();
        assert!(err.contains("line 2") && err.contains("`NOPE`"), "{err}");
    }

    #[test]
    fn unclosed_reference_is_an_error() {
        assert!(substitute_env("${OPEN", lookup).is_err());
        assert!(substitute_env("${a b}", lookup).is_err());
    }
}
