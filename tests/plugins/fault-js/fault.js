// Test plugin: `bomb` allocates memory without bound, `loop` never returns, `float-timestamp`
// and `number-header` give outputs of a type the contract cannot hold, `split` gives two outputs
// of one input and adds a header to the first, `json TEXT` gives TEXT as the SDK's `json()` reads
// it (written back with `withJson`), anything else is echoed; for the tests of the memory cap,
// deadlines, error isolation and the SDK's JSON in JavaScript plugins.

import { Plugin, Record, exportPlugin } from "./weir-plugin.js";

class Fault extends Plugin {
  transform(record) {
    const text = new TextDecoder().decode(record.value);
    if (text === "bomb") {
      // 4 MiB typed arrays: each one lands in linear memory at once, so the cap is reached in
      // milliseconds, long before any deadline.
      const hoard = [];
      for (;;) hoard.push(new Uint8Array(4 << 20).fill(hoard.length));
    }
    if (text === "loop") {
      for (;;) {}
    }
    if (text === "float-timestamp") {
      return [new Record("x", { timestamp: 1.5 })];
    }
    if (text === "number-header") {
      return [new Record("x", { headers: [["h", 42]] })];
    }
    if (text.startsWith("json ")) {
      return [record.withJson(new Record(text.slice("json ".length)).json())];
    }
    if (text === "split") {
      const outputs = [record.withJson({ part: 0 }), record.withJson({ part: 1 })];
      outputs[0].headers.push(["part", "first"]);
      return outputs;
    }
    return [record];
  }
}

export const { init, transform } = exportPlugin(Fault);
