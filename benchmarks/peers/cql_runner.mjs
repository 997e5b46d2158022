// Runs the CQL library mas2016.cql with cql-execution + cql-exec-fhir over FHIR Bundles, for peers_bench.py.
// The ELM is translated at start-up with @cqframework/cql (not cached, so it cannot drift from the CQL text).
// Protocol, one JSON document a line: the first stdin line is {"bundles": [{"path": ..., "at": ISO}, ...]} (the
// files are read and parsed once, outside any timing); each further line "round" runs every bundle once and writes
// one line: [{"status", "missing", "cpu_us", "wall_us"}, ...] in bundle order. Per bundle the timing covers what a
// per-patient evaluation costs: a patient source loaded with that Bundle, the executor, the results.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import cql from "cql-execution";
import cqlfhir from "cql-exec-fhir";
import { translate } from "./translate.mjs";

const elm = translate(fileURLToPath(new URL("./mas2016.cql", import.meta.url)));
const library = new cql.Library(elm);
// The patient source parses the FHIR model info when it is built: once here, as a batch run would, then reset
// and loaded with one patient's Bundle per evaluation.
const source = cqlfhir.PatientSource.FHIRv401();
let bundles = null;

async function runOne({ bundle, at }) {
  source.reset();
  source.loadBundles([bundle]);
  const results = await new cql.Executor(library, undefined, { AsOf: at }).exec(source);
  const ids = Object.keys(results.patientResults);
  if (ids.length !== 1) throw new Error(`${ids.length} patients in one bundle`);
  const r = results.patientResults[ids[0]];
  return { status: r.Classification, missing: r.Missing };
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (bundles === null) {
    bundles = JSON.parse(line).bundles.map(({ path, at }) =>
      ({ bundle: JSON.parse(readFileSync(path, "utf8")), at: cql.DateTime.parse(at) }));
    process.stdout.write(JSON.stringify({ ready: bundles.length }) + "\n");
    continue;
  }
  const out = [];
  for (const b of bundles) {
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    let answer;
    try {
      answer = await runOne(b);
    } catch (err) {
      answer = { status: "error", missing: [String(err?.message ?? err)] };
    }
    const wall = Number(process.hrtime.bigint() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    out.push({ ...answer, cpu_us: cpu.user + cpu.system, wall_us: wall });
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}
