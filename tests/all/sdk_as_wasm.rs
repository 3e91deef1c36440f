//! The SDK's JSON reader and writer as Wasm give what the same code gives natively. As Wasm they
//! scan strings with `simd128` vectors, natively with SSE2 (x86_64) or words, so each path is
//! checked here on strings whose special bytes fall at every offset of a sixteen-byte block.

use weir::record::Record;
use weir::registry::PluginRegistry;
use weir::runtime::PluginLimits;

use crate::support::{plugin_registry, test_runtime};

/// Raw JSON string contents (as they sit between the quotes) that stop a plain scan: escapes of
/// every kind, and UTF-8 of two and four bytes.
const SPECIALS: [&str; 9] = [
    r#"\""#,
    r"\\",
    r"\n",
    r"\/",
    r"\u00e9",
    r"\ud83d\ude00",
    r"\u0001",
    "é",
    "😀",
];

/// Bytes no JSON string may hold raw: control bytes, a lone continuation byte, a lead byte
/// with no continuation, and a byte that is never UTF-8.
const INVALID: [&[u8]; 4] = [b"\x01", b"\x1f", b"\x80", b"\xc3("];

/// A randomuser.me result whose `name.first`, `location.city` and skipped `login.password` hold
/// `first`, `city` and `password`, each raw JSON string content.
fn user(first: &[u8], city: &[u8], password: &[u8]) -> Vec<u8> {
    let mut json = Vec::new();
    json.extend_from_slice(br#"{"gender":"female","name":{"title":"Ms","first":""#);
    json.extend_from_slice(first);
    json.extend_from_slice(
        br#"","last":"Nilsen"},"location":{"street":{"number":4021,"name":"Storgata"},"city":""#,
    );
    json.extend_from_slice(city);
    json.extend_from_slice(br#"","state":"Oslo","country":"Norway","postcode":"0182","coordinates":{"latitude":"59.9","longitude":"10.7"}},"email":"a.nilsen@example.com","login":{"uuid":"1f0e2d3c-4b5a-4968-8776-a5b4c3d2e1f0","username":"bluebird","password":""#);
    json.extend_from_slice(password);
    json.extend_from_slice(br#"","sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},"dob":{"date":"1990-01-01T00:00:00.000Z","age":35},"registered":{"date":"2010-01-01T00:00:00.000Z","age":15},"phone":"55 55 55 55","cell":"44 44 44 44","picture":{"medium":"https://randomuser.me/api/portraits/med/women/1.jpg"},"nat":"NO"}"#);
    json
}

/// `len` plain letters with `piece` put in at `at`.
fn text_with(len: usize, at: usize, piece: &[u8]) -> Vec<u8> {
    let mut text: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    text.splice(at..at, piece.iter().copied());
    text
}

/// Inputs with each piece at every offset of strings up to 40 bytes long, in each of the three
/// fields, so that the piece falls in every lane of a block, in a first block and after it,
/// and where fewer than sixteen bytes are left.
fn inputs(pieces: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut inputs = Vec::new();
    for piece in pieces {
        for len in 0..=40 {
            for at in 0..=len {
                let text = text_with(len, at, piece);
                inputs.push(user(&text, b"Oslo", b"secret"));
                inputs.push(user(b"Ada", &text, b"secret"));
                inputs.push(user(b"Ada", b"Oslo", &text));
            }
        }
    }
    inputs
}

/// Runs `inputs` through the Wasm `user-profile` and the native one and asserts the same rows
/// (byte for byte, key too) or the same error for each; returns how many gave rows.
fn assert_wasm_matches_native(inputs: &[Vec<u8>]) -> usize {
    let runtime = test_runtime();
    let plugin = PluginRegistry::new(plugin_registry())
        .load(&runtime, "user-profile")
        .unwrap();
    let mut instance = plugin.instantiate("{}", PluginLimits::default()).unwrap();
    let mut rows = 0;
    for chunk in inputs.chunks(256) {
        let batch: Vec<Record> = chunk
            .iter()
            .map(|v| Record::from_value(v.clone()))
            .collect();
        for (input, wasm) in chunk.iter().zip(instance.transform(&batch)) {
            let native = user_profile::profiles(&weir_plugin::Record::new(input.clone()));
            let shown = String::from_utf8_lossy(input);
            match (native, wasm) {
                (Ok(native), Ok(wasm)) => {
                    assert_eq!(native.len(), wasm.len(), "{shown}");
                    for (native, wasm) in native.iter().zip(&wasm) {
                        assert_eq!(
                            String::from_utf8_lossy(&native.value),
                            String::from_utf8_lossy(&wasm.value),
                            "{shown}"
                        );
                        assert_eq!(native.key.as_deref(), wasm.key.as_deref(), "{shown}");
                    }
                    rows += wasm.len();
                }
                (Err(native), Err(wasm)) => {
                    assert_eq!(native.message(), wasm.message, "{shown}");
                }
                (native, wasm) => panic!("{shown}: native {native:?}, Wasm {wasm:?}"),
            }
        }
    }
    rows
}

#[test]
fn escapes_and_utf8_at_every_offset_read_and_write_as_natively() {
    let pieces: Vec<&[u8]> = SPECIALS.iter().map(|s| s.as_bytes()).collect();
    let inputs = inputs(&pieces);
    // Every input is a valid user: the comparison covers rows, not only errors.
    assert_eq!(assert_wasm_matches_native(&inputs), inputs.len());
}

#[test]
fn bytes_no_string_may_hold_are_refused_as_natively_at_every_offset() {
    let inputs = inputs(&INVALID);
    assert_eq!(
        assert_wasm_matches_native(&inputs),
        0,
        "every input is refused"
    );
}
