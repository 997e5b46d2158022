// CQL -> ELM JSON with the reference translator (@cqframework/cql), the FHIR 4.0.1 model info from cql-exec-fhir.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { CqlCompilerOptions, CqlTranslator, LibraryManager, ModelManager, createModelInfoProvider, createUcumService, stringAsSource }
  from "@cqframework/cql/cql-to-elm";
import { SystemModelInfoProvider } from "@cqframework/cql/cql";

const require = createRequire(import.meta.url);

export function translate(cqlPath) {
  const fhirXml = readFileSync(require.resolve("cql-exec-fhir/lib/modelInfos/fhir-modelinfo-4.0.1.xml"), "utf8");
  const modelManager = new ModelManager();
  modelManager.modelInfoLoader.registerModelInfoProvider(new SystemModelInfoProvider());
  modelManager.modelInfoLoader.registerModelInfoProvider(createModelInfoProvider((id, system, version) =>
    id === "FHIR" && (version == null || version === "4.0.1") ? stringAsSource(fhirXml) : null));
  // No UCUM service ships with the JavaScript translator. The library's only units are the durations written as
  // "N hours" (CQL temporal keywords): nothing to convert, so this one accepts those and refuses every conversion.
  const refuse = () => { throw new Error("no unit conversion in this library"); };
  const ucum = createUcumService(refuse, (unit) => (unit === "hours" || unit === "hour" ? null : `unit ${unit}`),
    refuse, refuse);
  const options = CqlCompilerOptions.defaultOptions();
  const translator = CqlTranslator.fromText(readFileSync(cqlPath, "utf8"), new LibraryManager(modelManager, options, null, ucum));
  const errors = translator.errors.asJsReadonlyArrayView();
  if (errors.length) {
    throw new Error(`${cqlPath}: ` + errors.map((e) => `${e.locator?.toString() ?? ""} ${e.message}`).join("; "));
  }
  return JSON.parse(translator.toJson());
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.stdout.write(JSON.stringify(translate(process.argv[2]), null, 1) + "\n");
}
