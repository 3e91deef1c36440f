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
const decoder = new TextDecoder("utf-8", { fatal: true });

/** One record of the stream: `key` (Uint8Array or undefined), `value` (Uint8Array, usually
 * UTF-8 JSON), `headers` ([name, Uint8Array] pairs in order) and `timestamp` (milliseconds since
 * the Unix epoch as a BigInt, or undefined). */
export class Record {
  constructor(value, { key, headers = [], timestamp } = {}) {
    this.key = typeof key === "string" ? encoder.encode(key) : key;
    this.value = typeof value === "string" ? encoder.encode(value) : value;
    this.headers = headers;
    this.timestamp = timestamp;
  }

  /** Parses the value as JSON; malformed JSON (or UTF-8) is a bad record. */
  json() {
    try {
      return JSON.parse(decoder.decode(this.value));
    } catch (error) {
      throw new BadRecord(`value is not valid JSON: ${error.message}`);
    }
  }

  /** This record (key, headers, timestamp kept) with its value replaced by `obj` as JSON. */
  withJson(obj) {
    let text;
    try {
      text = JSON.stringify(obj);
    } catch (error) {
      throw new PluginFailure(`cannot serialise JSON: ${error.message}`);
    }
    return new Record(encoder.encode(text), {
      key: this.key,
      headers: this.headers,
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
  hostLog(level, String(message));
}

/** Adds `delta` (a non-negative integer) to this plugin's counter `name`. */
export function counter(name, delta = 1) {
  counterAdd(String(name), BigInt(delta));
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

function toWit(produced) {
  if (!Array.isArray(produced)) {
    throw new TypeError(`transform must return an array of Records, got ${typeof produced}`);
  }
  return produced.map((out) => {
    if (!(out instanceof Record)) {
      throw new TypeError(`transform must return Records, got ${typeof out}`);
    }
    return {
      key: out.key,
      value: out.value,
      headers: out.headers.map(([key, value]) => ({
        key,
        value: typeof value === "string" ? encoder.encode(value) : value,
      })),
      timestamp: out.timestamp,
    };
  });
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
        throw error instanceof Error ? error.message || error.name : String(error);
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
            return { tag: "err", val: { kind: "bad-record", message: error.message } };
          }
          const message = error instanceof PluginFailure ? error.message : failureMessage(error);
          return { tag: "err", val: { kind: "plugin-failure", message } };
        }
      });
    },
  };
}
