// Test plugin: `bomb` allocates memory without bound, `loop` never returns, anything else is
// echoed; for the tests of the memory cap and deadlines in JavaScript plugins.

import { Plugin, exportPlugin } from "./weir-plugin.js";

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
    return [record];
  }
}

export const { init, transform } = exportPlugin(Fault);
