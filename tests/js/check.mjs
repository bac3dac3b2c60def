// Reads Markdown files written by backstep and checks them as GitHub and notebooks render them:
// every $…$ and $$…$$ with KaTeX's strict parser (an unknown command, or one KaTeX only tolerates,
// is an error), every ```mermaid block with Mermaid's own parser. Prints one line per problem and
// exits 1 if there was any. Usage: node check.mjs FILE.md ...
import { readFileSync } from "node:fs";
import katex from "katex";
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!DOCTYPE html><body></body>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false });

let problems = 0;
let checked = { math: 0, mermaid: 0 };
function problem(file, what, text, err) {
  problems += 1;
  console.log(`${file}: ${what}: ${String(err.message || err).split("\n")[0]}\n    ${text.slice(0, 200)}`);
}

for (const file of process.argv.slice(2)) {
  let md = readFileSync(file, "utf8");
  const diagrams = [];
  // fenced blocks: Mermaid's are checked, the others (the program) hold no math
  md = md.replace(/^(`{3,})([a-z]*)\n([\s\S]*?)\n\1$/gm, (_, fence, info, body) => {
    if (info === "mermaid") diagrams.push(body);
    return "";
  });
  const display = [];
  md = md.replace(/\$\$([\s\S]+?)\$\$/g, (_, math) => {
    display.push(math);
    return "";
  });
  const inline = [...md.matchAll(/(?<!\\)\$([^$\n]+?)\$/g)].map((m) => m[1]);
  for (const [math, displayMode] of [...display.map((m) => [m, true]), ...inline.map((m) => [m, false])]) {
    checked.math += 1;
    try {
      katex.renderToString(math, { displayMode, strict: "error", throwOnError: true });
    } catch (err) {
      problem(file, "KaTeX", math, err);
    }
  }
  for (const diagram of diagrams) {
    checked.mermaid += 1;
    try {
      await mermaid.parse(diagram);
    } catch (err) {
      problem(file, "Mermaid", diagram, err);
    }
  }
}
console.log(`checked ${checked.math} formulas and ${checked.mermaid} Mermaid graphs: ${problems} problems`);
process.exit(problems ? 1 : 0);
