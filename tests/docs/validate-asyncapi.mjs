// Validates AsyncAPI 3.0 documents against the official JSON Schema from @asyncapi/specs
// (draft-07, with ajv), then checks what the schema cannot: every $ref resolves inside the
// document, and every operation's messages belong to its channel.
// Usage: node validate-asyncapi.mjs FILE...
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import Ajv from "ajv";
import addFormats from "ajv-formats";

const require = createRequire(import.meta.url);
const specs = require("@asyncapi/specs");

// The bundled schema carries its own copy of the draft-07 meta-schema: do not add ajv's too.
const ajv = new Ajv({ allErrors: true, strict: false, meta: false, validateSchema: false });
addFormats(ajv);
const validate = ajv.compile(specs.schemas["3.0.0"]);

function resolve(doc, ref) {
    if (!ref.startsWith("#/")) return undefined;
    return ref
        .slice(2)
        .split("/")
        .map((p) => p.replaceAll("~1", "/").replaceAll("~0", "~"))
        .reduce((node, key) => (node === undefined ? undefined : node[key]), doc);
}

function refs(node, out = []) {
    if (Array.isArray(node)) node.forEach((n) => refs(n, out));
    else if (node && typeof node === "object") {
        if (typeof node.$ref === "string") out.push(node.$ref);
        Object.values(node).forEach((n) => refs(n, out));
    }
    return out;
}

let failed = false;
for (const file of process.argv.slice(2)) {
    const doc = JSON.parse(readFileSync(file, "utf8"));
    const problems = [];
    if (!validate(doc)) {
        for (const e of validate.errors) problems.push(`schema: ${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`);
    }
    for (const r of refs(doc)) {
        if (resolve(doc, r) === undefined) problems.push(`dangling $ref ${r}`);
    }
    for (const [id, op] of Object.entries(doc.operations ?? {})) {
        const channel = op.channel?.$ref;
        for (const m of [...(op.messages ?? []), ...(op.reply?.messages ?? [])]) {
            if (!m.$ref?.startsWith(`${channel}/messages/`)) problems.push(`operation ${id}: message ${m.$ref} is not in ${channel}`);
        }
    }
    if (problems.length) {
        failed = true;
        console.error(`${file}: INVALID`);
        for (const p of problems) console.error(`  ${p}`);
    } else {
        const ops = Object.keys(doc.operations ?? {}).length;
        console.log(`${file}: OK (AsyncAPI ${doc.asyncapi}, ${ops} operations)`);
    }
}
process.exit(failed ? 1 : 0);
