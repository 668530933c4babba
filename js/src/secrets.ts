/**
 * Keeping Vault secrets away from the model. Haldir substitutes `{{secret:NAME}}` references server-side and
 * answers the substituted arguments with only the names; the values are read back by matching each
 * referencing string against its substituted twin, and then scrubbed as `[secret:NAME]` from whatever the
 * tool returns or throws, the same placeholder the server's proxy writes.
 */

/** `{{secret:NAME}}`, NAME as the server allows it (haldir.core.tools.SECRET_REF). */
const SECRET_REF = /\{\{secret:([A-Za-z0-9][A-Za-z0-9_.-]{0,127})\}\}/g;

/** Secret values by the name shown in their place. */
export type SecretValues = ReadonlyMap<string, string>;

/**
 * The values the server put in place of the references in `sent`, found in `substituted`.
 *
 * A string whose substitution cannot be split back into its references (two references with no text
 * between them, or a server that changed the string otherwise) is kept whole under the names it held, so
 * it is still scrubbed: it errs towards hiding too much, never too little.
 */
export function substitutedValues(sent: unknown, substituted: unknown): SecretValues {
  const values = new Map<string, string>();
  collect(sent, substituted, values);
  return values;
}

function collect(sent: unknown, substituted: unknown, values: Map<string, string>): void {
  if (typeof sent === "string") {
    if (typeof substituted === "string") matchTemplate(sent, substituted, values);
    return;
  }
  if (Array.isArray(sent)) {
    sent.forEach((item, index) => collect(item, Array.isArray(substituted) ? substituted[index] : undefined, values));
    return;
  }
  if (isRecord(sent) && isRecord(substituted)) {
    for (const [key, value] of Object.entries(sent)) collect(value, substituted[key], values);
  }
}

function matchTemplate(template: string, substituted: string, values: Map<string, string>): void {
  const names = [...template.matchAll(SECRET_REF)].map((match) => match[1] as string);
  if (names.length === 0 || template === substituted) return;
  const literals = template.split(SECRET_REF).filter((_, index) => index % 2 === 0);
  const adjacent = literals.slice(1, -1).some((literal) => literal === "");
  const pattern = new RegExp(`^${literals.map(escapeRegExp).join("([\\s\\S]*?)")}$`);
  const match = adjacent ? null : pattern.exec(substituted);
  if (match === null) {
    values.set(names.join("+"), substituted);
    return;
  }
  names.forEach((name, index) => {
    const value = match[index + 1];
    if (value !== undefined && value !== "") values.set(name, value);
  });
}

/**
 * A copy of `value` with every secret value, in any string of it (object keys included), replaced by
 * `[secret:NAME]`: one pass, longest value first, so a value holding another is replaced whole. Plain
 * objects and arrays are copied; other objects (class instances, buffers) are returned as they are.
 */
export function scrub<T>(value: T, secrets: SecretValues): T {
  const clean = scrubber(secrets);
  return clean === undefined ? value : (deepMap(value, clean) as T);
}

/** `text` with every secret value replaced by `[secret:NAME]`. */
export function scrubText(text: string, secrets: SecretValues): string {
  return scrubber(secrets)?.(text) ?? text;
}

function scrubber(secrets: SecretValues): ((text: string) => string) | undefined {
  const names = new Map<string, string>();
  for (const [name, value] of secrets) if (value !== "") names.set(value, name);
  if (names.size === 0) return undefined;
  const ordered = [...names.keys()].sort((a, b) => b.length - a.length);
  const pattern = new RegExp(ordered.map(escapeRegExp).join("|"), "g");
  return (text) => text.replace(pattern, (found) => `[secret:${names.get(found) ?? "?"}]`);
}

function deepMap(value: unknown, clean: (text: string) => string): unknown {
  if (typeof value === "string") return clean(value);
  if (Array.isArray(value)) return value.map((item) => deepMap(item, clean));
  if (isPlainObject(value)) {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [clean(key), deepMap(item, clean)]));
  }
  return value;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (!isRecord(value)) return false;
  const prototype = Object.getPrototypeOf(value) as unknown;
  return prototype === Object.prototype || prototype === null;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
