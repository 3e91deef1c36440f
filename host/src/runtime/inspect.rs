//! What a component holds before wasmtime instantiates it: how many core instances, memories and
//! tables (so a component over the pooling allocator's per-component limits is refused at load
//! with the limit named, not at its first instantiation), and which toolchain produced it (the
//! `producers` custom section), so `weir plugin list` can show each plugin's language.

use wasmparser::{Instance, KnownCustom, Name, Parser, Payload};

/// The shape of a component, summed over every nested module and component.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentShape {
    /// Core module instantiations (what the pooling allocator counts as core instances).
    pub core_instances: u32,
    /// Linear memories the core modules define (imported ones are counted where defined).
    pub memories: u32,
    /// Tables the core modules define.
    pub tables: u32,
    /// The source language named by the producers section: `Rust`, `Python`, `JavaScript`, ...
    pub language: Option<String>,
}

/// Walks the component's sections. Malformed bytes yield what was read so far: wasmtime's own
/// validation reports the real error.
pub fn inspect(bytes: &[u8]) -> ComponentShape {
    let mut shape = ComponentShape::default();
    let mut languages: Vec<String> = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else { break };
        match payload {
            Payload::InstanceSection(reader) => {
                for instance in reader.into_iter().flatten() {
                    if matches!(instance, Instance::Instantiate { .. }) {
                        shape.core_instances += 1;
                    }
                }
            }
            Payload::MemorySection(reader) => shape.memories += reader.count(),
            Payload::TableSection(reader) => shape.tables += reader.count(),
            Payload::CustomSection(reader) => {
                match reader.as_known() {
                    KnownCustom::Producers(producers) => {
                        for field in producers.into_iter().flatten() {
                            for value in field.values.into_iter().flatten() {
                                let language = match (field.name, value.name) {
                                    ("language", name) => name,
                                    // componentize-py names no language; its tool does.
                                    ("processed-by", "componentize-py") => "Python",
                                    ("processed-by", "ComponentizeJS") => "JavaScript",
                                    _ => continue,
                                };
                                if !languages.iter().any(|l| l == language) {
                                    languages.push(language.to_owned());
                                }
                            }
                        }
                    }
                    // componentize-py links CPython as a shared library named in the name
                    // section; that is the only trace of Python its output carries.
                    KnownCustom::Name(names) => {
                        let python = names.into_iter().flatten().any(|name| {
                            matches!(name, Name::Module { name, .. } if name.starts_with("libpython"))
                        });
                        if python && !languages.iter().any(|l| l == "Python") {
                            languages.push("Python".to_owned());
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    shape.language = main_language(&languages);
    shape
}

/// The language a plugin author wrote: componentize-py and componentize-js embed an
/// interpreter written in C/C++ (and adapters in Rust), so a scripting language wins over those.
fn main_language(languages: &[String]) -> Option<String> {
    const SCRIPTS: [&str; 3] = ["Python", "JavaScript", "TypeScript"];
    const SYSTEM: [&str; 3] = ["C", "C++", "C11"];
    languages
        .iter()
        .find(|l| SCRIPTS.iter().any(|s| l.eq_ignore_ascii_case(s)))
        .or_else(|| languages.iter().find(|l| l.as_str() == "Rust"))
        .or_else(|| languages.iter().find(|l| !SYSTEM.contains(&l.as_str())))
        .or_else(|| languages.first())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripting_languages_win_over_their_runtimes() {
        let langs = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            main_language(&langs(&["Rust", "C11", "Python"])).as_deref(),
            Some("Python")
        );
        assert_eq!(
            main_language(&langs(&["C++", "Rust"])).as_deref(),
            Some("Rust")
        );
        assert_eq!(main_language(&[]), None);
    }

    #[test]
    fn garbage_has_an_empty_shape() {
        assert_eq!(inspect(b"not wasm"), ComponentShape::default());
    }
}
