// The guest SDK for Weir plugins written in JavaScript (an ES module).
//
// It owns the glue to the `weir:plugin` bindings that componentize-js generates from wit/ at build
// time, the batch loop and the per-record error isolation, so that a plugin is one small file: a
// subclass of `Plugin` and one `export const { init, transform } = exportPlugin(MyPlugin);` line.
// `weir plugin build` places this file beside the plugin as `./weir-plugin.js`.

import { log as hostLog, counterAdd } from "weir:plugin/host@0.1.1";

/** The input record is malformed: say which field and why. Maps to WIT `bad-record`. */
export class BadRecord extends Error {
  constructor(message) {
    super(message);
    this.name = "BadRecord";
  }
}

/** The plugin failed on a record it should have handled. Maps to WIT `plugin-failure`; any
 * other exception escaping `transform` is reported the same way, with its name and message. */
export class PluginFailure extends Error {
  constructor(message) {
    super(message);
    this.name = "PluginFailure";
  }
}

/** The config is unusable: name the key and what is expected. */
export class ConfigError extends Error {
  constructor(message) {
    super(message);
    this.name = "ConfigError";
  }
}

const encoder = new TextEncoder();
// Fatal: text that is not UTF-8 is a bad record. ignoreBOM keeps a leading byte-order mark in the
// text, where JSON.parse refuses it, as the Rust SDK does.
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Whether `text` is Unicode text: no lone surrogate, which UTF-8 cannot hold (it would be
 * written as U+FFFD, so distinct strings could become equal). */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
const wellFormed = typeof String.prototype.isWellFormed === "function"
  ? (text) => text.isWellFormed()
  : (text) => text.search(LONE_SURROGATE) === -1;

/** `text` as UTF-8 bytes; a TypeError naming `what` when it holds a lone surrogate, which
 * TextEncoder would write as U+FFFD (so that two distinct keys could become one). */
function utf8(text, what) {
  if (!wellFormed(text)) {
    throw new TypeError(`${what} ${JSON.stringify(text).slice(0, 80)} holds a lone surrogate`);
  }
  return encoder.encode(text);
}

/** JSON.stringify's replacer for `Record.withJson`: a lone surrogate would be written as an
 * escape that JSON readers (the Rust SDK's among them) refuse. */
function wellFormedValue(key, value) {
  for (const text of [key, value]) {
    if (typeof text === "string" && !wellFormed(text)) {
      throw new TypeError(`lone surrogate in the string ${JSON.stringify(text).slice(0, 80)}`);
    }
  }
  return value;
}

/** `text` as text the host can take: a lone surrogate is written as its escape, `\ud800`. */
function hostText(text) {
  text = String(text);
  if (wellFormed(text)) return text;
  return text.replace(LONE_SURROGATE, (c) => `\\u${c.charCodeAt(0).toString(16)}`);
}

// serde_json's nesting limit: a document with 128 arrays or objects one inside the next is refused.
const MAX_DEPTH = 127;
const JSON_STRING = /"[^"\\]*(?:\\.[^"\\]*)*"/g;
const NOT_BRACKET = /[^[\]{}]+/g;

/** Refuses arrays or objects nested deeper than serde_json reads them, on the text before
 * parsing: a document nested thousands deep could otherwise exhaust the plugin's memory (a trap)
 * on the way. Strings and all but brackets are dropped by native regular expressions; the loop
 * stops at the first bracket too deep. */
function checkDepth(text) {
  if (text.length <= 2 * MAX_DEPTH) return;
  const brackets = text.replace(JSON_STRING, "").replace(NOT_BRACKET, "");
  let depth = 0;
  for (let i = 0; i < brackets.length; i++) {
    const c = brackets.charCodeAt(i);
    depth += c === 0x5b || c === 0x7b ? 1 : -1;
    if (depth > MAX_DEPTH) {
      throw new RangeError(`recursion limit exceeded: nested deeper than ${MAX_DEPTH}`);
    }
  }
}

/** JSON.parse's reviver for `Record.json`: refuses what the Rust SDK refuses. A number beyond a
 * double's range (`1e400`) would be Infinity (written as null), and a lone surrogate is not
 * Unicode text. (Integers beyond 2^53 are found in the text: `checkIntegers`, run only when
 * a number parsed to an integral double of 2^53 or more, `sawLargeInteger`.) */
let sawLargeInteger = false;
function strictValue(key, value, context) {
  if (typeof value === "number") {
    if (Math.abs(value) >= 9007199254740992 && Number.isInteger(value)) sawLargeInteger = true;
    if (!Number.isFinite(value)) {
      const text = context && typeof context.source === "string" ? context.source : String(value);
      throw new RangeError(`number out of range: ${text.slice(0, 40)}`);
    }
  } else if (typeof value === "string" && !wellFormed(value)) {
    throw new RangeError(`lone surrogate in the string ${JSON.stringify(value).slice(0, 80)}`);
  }
  if (!wellFormed(key)) {
    throw new RangeError(`lone surrogate in the key ${JSON.stringify(key).slice(0, 80)}`);
  }
  return value;
}

// An integer beyond 2^53 has at least 16 digits (2^53 - 1 = 9007199254740991): text without 16
// digits in a row holds none, and is not scanned.
const SIXTEEN_DIGITS = /\d{16}/;
const JSON_NUMBER = /-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;

/** Refuses, in `text` (valid JSON), a number written as an integer (no `.`, `e` or `E`) that a
 * JavaScript number cannot hold exactly: beyond 2^53 it would be silently rounded, where the
 * Rust SDK reads it exactly. A number written as a float (`1e20`, `-2.5E+300`) is a double in
 * every SDK and is read as one. The number's text is what decides; the reviver's
 * `context.source` holds it in componentize-js's engine but not in every engine (Node 20 has
 * none), so the text itself is scanned: strings dropped, then every number token. */
function checkIntegers(text) {
  if (!SIXTEEN_DIGITS.test(text)) return;
  const tokens = text.replace(JSON_STRING, " ").match(JSON_NUMBER) || [];
  for (const token of tokens) {
    if (token.length < 16 || /[.eE]/.test(token)) continue;
    if (!Number.isSafeInteger(Number(token))) {
      throw new BadRecord(
        `value holds the integer ${token.slice(0, 40)}, beyond 2^53: a JavaScript number cannot hold it exactly`,
      );
    }
  }
}

/** One record of the stream: `key` (Uint8Array or undefined), `value` (Uint8Array, usually
 * UTF-8 JSON), `headers` ([name, Uint8Array] pairs in order) and `timestamp` (milliseconds since
 * the Unix epoch as a BigInt, or undefined). */
export class Record {
  constructor(value, { key, headers = [], timestamp } = {}) {
    this.key = typeof key === "string" ? utf8(key, "Record.key") : key;
    this.value = typeof value === "string" ? utf8(value, "Record.value") : value;
    // A copy: outputs made from one input never share (and so never change) its headers.
    this.headers = [...headers];
    this.timestamp = timestamp;
  }

  /** Parses the value as JSON; a bad record when it is malformed, not UTF-8 (or begins with a
   * byte-order mark), nested deeper than 127, or holds a lone surrogate, a number beyond a
   * double's range or a number written as an integer beyond 2^53, which a JavaScript number
   * would round (a limit of this SDK: the Rust SDK reads integers up to 64 bits exactly). */
  json() {
    try {
      const text = decoder.decode(this.value);
      checkDepth(text);
      sawLargeInteger = false;
      const value = JSON.parse(text, strictValue);
      if (sawLargeInteger) checkIntegers(text);
      return value;
    } catch (error) {
      if (error instanceof BadRecord) throw error;
      throw new BadRecord(`value is not valid JSON: ${error.message}`);
    }
  }

  /** This record (key, headers, timestamp kept) with its value replaced by `obj` as JSON. */
  withJson(obj) {
    let text;
    try {
      text = JSON.stringify(obj, wellFormedValue);
    } catch (error) {
      throw new PluginFailure(`cannot serialise JSON: ${error.message}`);
    }
    return new Record(encoder.encode(text), {
      key: this.key,
      headers: [...this.headers],
      timestamp: this.timestamp,
    });
  }

  /** The first header named `name` (a Uint8Array), or undefined. */
  header(name) {
    const found = this.headers.find(([key]) => key === name);
    return found && found[1];
  }
}

/** A plugin's config: the `config` table of its entry in the pipeline file, with helpers that
 * name the key in their errors. The raw object is `config.entries`. */
export class Config {
  constructor(entries = {}) {
    this.entries = entries;
  }

  /** Parses the host's config text; it must be a JSON object. */
  static parse(text) {
    if (!text.trim()) return new Config();
    let value;
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw new ConfigError(`config is not valid JSON: ${error.message}`);
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new ConfigError(`config must be an object, got ${JSON.stringify(value)}`);
    }
    return new Config(value);
  }

  /** The raw value at `key`. */
  get(key) {
    return Object.hasOwn(this.entries, key) ? this.entries[key] : undefined;
  }

  /** The string at `key`, or `fallback` when absent; an error when not a string. */
  str(key, fallback) {
    const value = this.get(key);
    if (value === undefined || value === null) return fallback;
    if (typeof value !== "string") {
      throw new ConfigError(`config key \`${key}\` must be a string, got ${JSON.stringify(value)}`);
    }
    return value;
  }

  /** The string at `key`; an error naming the key when absent. */
  requiredStr(key) {
    const value = this.str(key);
    if (value === undefined) throw new ConfigError(`config key \`${key}\` is required`);
    return value;
  }

  /** A list of strings at `key`, given as an array or as comma-separated text. */
  list(key) {
    const value = this.get(key);
    if (value === undefined || value === null) return [];
    if (typeof value === "string") {
      return value.split(",").map((s) => s.trim()).filter((s) => s);
    }
    if (Array.isArray(value)) {
      for (const item of value) {
        if (typeof item !== "string") {
          throw new ConfigError(`config key \`${key}\` must list strings, got ${JSON.stringify(item)}`);
        }
      }
      return [...value];
    }
    throw new ConfigError(`config key \`${key}\` must be a list of strings, got ${JSON.stringify(value)}`);
  }

  /** Fails naming the first key not in `known`, so a typo never goes unnoticed. */
  denyUnknown(known) {
    for (const key of Object.keys(this.entries)) {
      if (!known.includes(key)) {
        throw new ConfigError(`unknown config key \`${key}\`; expected one of: ${known.join(", ")}`);
      }
    }
  }
}

/** `/name/first` as `name.first`, the way users write field paths. */
export function fieldName(pointerText) {
  return pointerText.replace(/^\/+/, "").replaceAll("/", ".");
}

/** A user's dotted field path (`name.first`) as a JSON pointer (`/name/first`). */
export function pointer(path) {
  return path.startsWith("/") ? path : "/" + path.replaceAll(".", "/");
}

function lookup(value, pointerText) {
  if (pointerText === "") return value;
  for (const raw of pointerText.slice(1).split("/")) {
    const token = raw.replaceAll("~1", "/").replaceAll("~0", "~");
    if (value === null || typeof value !== "object" || !Object.hasOwn(value, token)) {
      return undefined;
    }
    value = value[token];
  }
  return value;
}

/** The value at a JSON pointer; a bad record naming the field when absent or null. */
export function at(value, pointerText) {
  const found = lookup(value, pointerText);
  if (found === undefined || found === null) {
    throw new BadRecord(`missing required field \`${fieldName(pointerText)}\``);
  }
  return found;
}

/** The string at a JSON pointer; a bad record when absent or not a string. */
export function strAt(value, pointerText) {
  const found = at(value, pointerText);
  if (typeof found !== "string") {
    throw new BadRecord(`field \`${fieldName(pointerText)}\` must be a string`);
  }
  return found;
}

/** The value at a JSON pointer as text: strings as they are, numbers and booleans printed as
 * JSON prints them. For fields an API sends sometimes as a number, sometimes as a string. */
export function textAt(value, pointerText) {
  const found = at(value, pointerText);
  if (typeof found === "string") return found;
  if (typeof found === "number" || typeof found === "boolean") return JSON.stringify(found);
  throw new BadRecord(`field \`${fieldName(pointerText)}\` must be a string or a number`);
}

const LEVELS = ["trace", "debug", "info", "warn", "error"];

/** Writes a line to the host's log, tagged with this plugin's name and version. */
export function log(level, message) {
  if (!LEVELS.includes(level)) {
    throw new TypeError(`log level must be one of ${LEVELS.join(", ")}, got ${level}`);
  }
  hostLog(level, hostText(message));
}

const U64_END = 1n << 64n;
const S64_MIN = -(1n << 63n);
const S64_END = 1n << 63n;

/** Adds `delta` (a non-negative integer below 2^64) to this plugin's counter `name`. */
export function counter(name, delta = 1) {
  const amount = BigInt(delta);
  if (amount < 0n || amount >= U64_END) {
    throw new RangeError(`counter \`${name}\`: delta must be from 0 to 2^64-1, got ${delta}`);
  }
  counterAdd(hostText(name), amount);
}

/** A record transformer. One object is built per plugin instance; `init` receives the
 * pipeline's config, then `transform` is called for every record that instance sees. */
export class Plugin {
  /** Checks and keeps the config (a `Config`). By default any config key is refused. */
  init(config) {
    config.denyUnknown([]);
  }

  /** Transforms one record into an array of zero, one or many records. Throw `BadRecord` for
   * malformed input; any other exception fails this record alone as a plugin failure. */
  transform(_record) {
    throw new PluginFailure("a Plugin must define transform(record)");
  }
}

function failureMessage(error) {
  if (error instanceof Error) {
    return error.message ? `${error.name}: ${error.message}` : error.name;
  }
  return String(error);
}

/** `value` as the bytes the WIT `list<u8>` takes: a Uint8Array (another typed array's bytes are
 * viewed as one), or a string as UTF-8. */
function witBytes(value, what) {
  // By tag, not `instanceof`: the bindings' arrays (an input's key, value and headers) come
  // from another realm's Uint8Array.
  if (Object.prototype.toString.call(value) === "[object Uint8Array]") return value;
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  if (typeof value === "string") return utf8(value, what);
  throw new TypeError(`${what} must be a Uint8Array or a string, got ${describe(value)}`);
}

function describe(value) {
  if (value === null) return "null";
  if (typeof value === "object") return value.constructor ? value.constructor.name : "object";
  return typeof value;
}

/** An output as the WIT `record`, checked here, inside the per-record isolation, so that a wrong
 * type fails its record alone instead of trapping the instance when the bindings lower it: `key`
 * and `value` a Uint8Array or a string, `headers` [string, Uint8Array or string] pairs,
 * `timestamp` a BigInt (or a safe integer Number) in the signed 64-bit range, or undefined. */
function witRecord(out) {
  if (!(out instanceof Record)) {
    throw new TypeError(`transform must return Records, got ${describe(out)}`);
  }
  if (!Array.isArray(out.headers)) {
    throw new TypeError(`Record.headers must be an array, got ${describe(out.headers)}`);
  }
  const headers = out.headers.map((header) => {
    if (!Array.isArray(header) || header.length !== 2) {
      throw new TypeError("a header must be a [name, value] pair");
    }
    const [key, value] = header;
    if (typeof key !== "string") {
      throw new TypeError(`a header name must be a string, got ${describe(key)}`);
    }
    if (!wellFormed(key)) {
      throw new TypeError(`the header name ${JSON.stringify(key)} holds a lone surrogate`);
    }
    return { key, value: witBytes(value, `header \`${key}\`'s value`) };
  });
  let timestamp = out.timestamp ?? undefined;
  if (typeof timestamp === "number" && Number.isSafeInteger(timestamp)) {
    timestamp = BigInt(timestamp);
  }
  if (timestamp !== undefined) {
    if (typeof timestamp !== "bigint") {
      throw new TypeError(
        `Record.timestamp must be a BigInt (milliseconds) or undefined, got ${describe(timestamp)} ${String(timestamp)}`,
      );
    }
    if (timestamp < S64_MIN || timestamp >= S64_END) {
      throw new RangeError(`Record.timestamp ${timestamp} is beyond the signed 64-bit range`);
    }
  }
  return {
    key: out.key === undefined || out.key === null ? undefined : witBytes(out.key, "Record.key"),
    value: witBytes(out.value, "Record.value"),
    headers,
    timestamp,
  };
}

function toWit(produced) {
  if (!Array.isArray(produced)) {
    throw new TypeError(`transform must return an array of Records, got ${describe(produced)}`);
  }
  return produced.map(witRecord);
}

/** The component's exports (`init` and `transform` of the `transformer` world) for
 * `PluginClass`: `export const { init, transform } = exportPlugin(MyPlugin);` */
export function exportPlugin(PluginClass) {
  let instance;
  return {
    init(configText) {
      let plugin;
      try {
        plugin = new PluginClass();
        plugin.init(Config.parse(configText));
      } catch (error) {
        // componentize-js maps a thrown value to the `err` case of init's result.
        throw hostText(error instanceof Error ? error.message || error.name : String(error));
      }
      instance = plugin;
    },

    transform(batch) {
      if (instance === undefined) {
        const err = { kind: "plugin-failure", message: "transform called before init" };
        return batch.map(() => ({ tag: "err", val: err }));
      }
      return batch.map((input) => {
        try {
          const record = new Record(input.value, {
            key: input.key,
            headers: input.headers.map((h) => [h.key, h.value]),
            timestamp: input.timestamp,
          });
          return { tag: "ok", val: toWit(instance.transform(record)) };
        } catch (error) {
          if (error instanceof BadRecord) {
            return { tag: "err", val: { kind: "bad-record", message: hostText(error.message) } };
          }
          const message = error instanceof PluginFailure ? error.message : failureMessage(error);
          return { tag: "err", val: { kind: "plugin-failure", message: hostText(message) } };
        }
      });
    },
  };
}
