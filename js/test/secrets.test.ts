import assert from "node:assert/strict";
import { test } from "node:test";

import { scrub, scrubText, substitutedValues } from "../src/secrets.js";

test("a reference alone in a string reads back as the whole substituted value", () => {
  const values = substitutedValues({ key: "{{secret:API_KEY}}" }, { key: "sk-123" });
  assert.deepEqual([...values], [["API_KEY", "sk-123"]]);
});

test("references inside text, nested in arrays and objects, read back between their literals", () => {
  const sent = { headers: [{ authorization: "Bearer {{secret:TOKEN}}" }], url: "https://x/?u={{secret:USER}}&p={{secret:PASS}}" };
  const substituted = { headers: [{ authorization: "Bearer abc.def" }], url: "https://x/?u=ann&p=hunter2" };

  const values = substitutedValues(sent, substituted);

  assert.deepEqual(Object.fromEntries(values), { TOKEN: "abc.def", USER: "ann", PASS: "hunter2" });
});

test("two references with nothing between them are kept together, so both are still scrubbed", () => {
  const values = substitutedValues({ pair: "{{secret:A}}{{secret:B}}" }, { pair: "onetwo" });
  assert.deepEqual(Object.fromEntries(values), { "A+B": "onetwo" });
});

test("a string the server changed otherwise is kept whole under its references", () => {
  const values = substitutedValues({ note: "key={{secret:K}};" }, { note: "something else" });
  assert.deepEqual(Object.fromEntries(values), { K: "something else" });
});

test("strings without references name no secret", () => {
  assert.equal(substitutedValues({ q: "plain", n: 3 }, { q: "plain", n: 3 }).size, 0);
});

test("scrubbing replaces every value in strings and keys of any depth, longest value first", () => {
  const secrets = new Map([
    ["SHORT", "abc"],
    ["LONG", "abcdef"],
  ]);
  const result = scrub({ "abc-key": ["xx abcdef yy", { deep: "abc" }], n: 1, ok: true }, secrets);
  assert.deepEqual(result, { "[secret:SHORT]-key": ["xx [secret:LONG] yy", { deep: "[secret:SHORT]" }], n: 1, ok: true });
});

test("scrubbing leaves the input unchanged and values that hold no secret as they are", () => {
  const input = { text: "hunter2" };
  const secrets = new Map([["PASS", "hunter2"]]);
  assert.deepEqual(scrub(input, secrets), { text: "[secret:PASS]" });
  assert.deepEqual(input, { text: "hunter2" });
  assert.equal(scrubText("nothing here", secrets), "nothing here");
  assert.equal(scrub("hunter2", new Map()), "hunter2");
});

test("characters that mean something in a regular expression are scrubbed literally", () => {
  const secrets = new Map([["WEIRD", "a.b*c(d)"]]);
  assert.equal(scrubText("x a.b*c(d) axbbc", secrets), "x [secret:WEIRD] axbbc");
});
