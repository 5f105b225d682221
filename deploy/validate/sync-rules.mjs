// Writes deploy/kubernetes/base/prometheusrule.yaml from the alert rules of
// deploy/prometheus/ (canaryd-rules.yaml, or alerts.yml), so the Prometheus-operator rule and the
// plain Prometheus rule file never drift apart (validate.mjs fails when they do).
//   node deploy/validate/sync-rules.mjs
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import yaml from "js-yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
const deploy = path.resolve(here, "..");
export const rulesFile = ["canaryd-rules.yaml", "alerts.yml", "alerts.yaml"]
  .map((n) => path.join(deploy, "prometheus", n))
  .find((f) => fs.existsSync(f)) ?? path.join(deploy, "prometheus", "canaryd-rules.yaml");
export const ruleManifest = path.join(deploy, "kubernetes", "base", "prometheusrule.yaml");

export function ruleGroups() {
  return yaml.load(fs.readFileSync(rulesFile, "utf8")).groups;
}

export function render(groups) {
  const doc = {
    apiVersion: "monitoring.coreos.com/v1",
    kind: "PrometheusRule",
    metadata: { name: "canaryd", labels: { "app.kubernetes.io/name": "canaryd" } },
    spec: { groups },
  };
  return (
    `# Generated from deploy/prometheus/${path.basename(rulesFile)} by deploy/validate/sync-rules.mjs:\n` +
    "# edit the rules there, then run `node deploy/validate/sync-rules.mjs`.\n" +
    "# A kube-prometheus-stack Prometheus selects rules by its release label by\n" +
    "# default: add that label in your overlay.\n" +
    yaml.dump(doc, { lineWidth: -1, noRefs: true })
  );
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  fs.writeFileSync(ruleManifest, render(ruleGroups()));
  console.log(`wrote ${path.relative(process.cwd(), ruleManifest)}`);
}
