// Validates every manifest in deploy/ offline, against the real schemas of the
// npm packages kubernetes-models, @kubernetes-models/argo-rollouts and
// @kubernetes-models/prometheus-operator (pinned in package-lock.json), in
// strict mode: a field the schema does not know (the seed's rollbackBackoff,
// a typo) is an error, as it would be silently pruned by the API server.
// Then builds every kustomization (kubectl kustomize when present, else
// kustomize-lite.mjs), validates the output, and checks what a deployment of
// canaryd relies on (probes, drain timing, hardening, references, the alert
// rules, the PromQL of the rules and the AnalysisTemplate via promtool, and,
// with CANARYD_BIN, canaryd's config via `canaryd --check-config` and every
// ai_proxy_*/process_* metric name used in deploy/ against the families a
// running canaryd exposes on /metrics).
//
//   node deploy/validate/validate.mjs            (npm ci --prefix deploy/validate first)
//   CANARYD_BIN=build/canaryd node deploy/validate/validate.mjs
//   ... validate.mjs --require-all               (ctest: a check that cannot run
//                                                 — no promtool, no CANARYD_BIN — fails)
// Prints one line per check and "N passed, N failed, N skipped"; exits 1 on any failure.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import yaml from "js-yaml";
import { build as buildLite, loadDocs } from "./kustomize-lite.mjs";
import { ruleGroups, rulesFile, ruleManifest } from "./sync-rules.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const deploy = path.resolve(here, "..");
const repo = path.resolve(deploy, "..");
const require = createRequire(import.meta.url);
const rel = (p) => path.relative(repo, p);

// Under ctest (--require-all) every check must really run: a missing tool or
// input is a failure there, not a silent "ok".
const requireAll = process.argv.includes("--require-all");
let passed = 0;
let failed = 0;
let skipped = 0;
class Skip {
  constructor(reason) {
    this.reason = reason;
  }
}
function skip(reason) {
  if (requireAll) throw new Error(`${reason} (--require-all: this check must run)`);
  return new Skip(reason);
}
function report(name, note, e) {
  if (e) {
    console.log(`FAIL - ${name}\n    ${String(e.message ?? e).split("\n").join("\n    ")}`);
    failed++;
  } else if (note instanceof Skip) {
    console.log(`skip - ${name} (${note.reason})`);
    skipped++;
  } else {
    console.log(`ok - ${name}${note ? ` (${note})` : ""}`);
    passed++;
  }
}
function check(name, fn) {
  let note;
  try {
    note = fn();
  } catch (e) {
    return report(name, undefined, e);
  }
  report(name, note);
}
async function checkAsync(name, fn) {
  let note;
  try {
    note = await fn();
  } catch (e) {
    return report(name, undefined, e);
  }
  report(name, note);
}
function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

// --- Strict schemas -------------------------------------------------------------
// Kubernetes' OpenAPI schemas leave additionalProperties open; every copy of
// @kubernetes-models/validate in node_modules gets its register() wrapped so
// each object schema with properties rejects unknown ones (except where the
// schema itself says x-kubernetes-preserve-unknown-fields).
function strictify(s) {
  if (Array.isArray(s)) return s.forEach(strictify);
  if (!s || typeof s !== "object") return;
  if (s.properties && s.additionalProperties === undefined && !s["x-kubernetes-preserve-unknown-fields"]) {
    s.additionalProperties = false;
  }
  for (const [k, v] of Object.entries(s)) if (k !== "enum" && k !== "default") strictify(v);
}
function findValidateCopies(dir, out = []) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (!e.isDirectory()) continue;
    const p = path.join(dir, e.name);
    if (p.endsWith(path.join("@kubernetes-models", "validate"))) out.push(p);
    else if (e.name === "node_modules" || e.name.startsWith("@") || dir.endsWith("node_modules") || dir.endsWith("@kubernetes-models"))
      findValidateCopies(p, out);
  }
  return out;
}
const nodeModules = path.join(here, "node_modules");
if (!fs.existsSync(nodeModules)) {
  console.error("validate: run `npm ci --prefix deploy/validate` first");
  process.exit(2);
}
for (const dir of findValidateCopies(nodeModules)) {
  const mod = require(dir);
  const register = mod.register;
  mod.register = (id, schema) => {
    strictify(schema);
    return register(id, schema);
  };
}

// apiVersion + kind -> the model class of the real schema.
function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  let mod;
  if (group === "argoproj.io") mod = `@kubernetes-models/argo-rollouts/argoproj.io/${version}/${kind}`;
  else if (group === "monitoring.coreos.com")
    mod = `@kubernetes-models/prometheus-operator/monitoring.coreos.com/${version}/${kind}`;
  else if (group === "") mod = `kubernetes-models/v1/${kind}`;
  else mod = `kubernetes-models/${group}/${version}/${kind}`;
  if (!/^[A-Za-z0-9./@-]+$/.test(mod)) return null;
  try {
    return require(mod)[kind] ?? null;
  } catch {
    return null;
  }
}

// The Kustomization fields kustomize v5 knows (kustomize's own type has no
// published JSON schema in these packages); the build itself is the real test.
const kKustomizationFields = new Set([
  "apiVersion", "kind", "metadata", "resources", "components", "namespace", "namePrefix", "nameSuffix",
  "labels", "commonLabels", "commonAnnotations", "images", "replicas", "patches", "patchesStrategicMerge",
  "patchesJson6902", "configMapGenerator", "secretGenerator", "generatorOptions", "generators",
  "transformers", "validators", "crds", "openapi", "buildMetadata", "sortOptions", "helmCharts", "vars",
  "replacements", "configurations",
]);

function validateObject(obj) {
  if (obj.apiVersion?.startsWith("kustomize.config.k8s.io/") && obj.kind === "Kustomization") {
    const unknown = Object.keys(obj).filter((k) => !kKustomizationFields.has(k));
    assert(unknown.length === 0, `unknown Kustomization fields: ${unknown.join(", ")}`);
    return;
  }
  const Model = modelFor(obj.apiVersion, obj.kind);
  assert(Model, `no schema for ${obj.apiVersion} ${obj.kind} in the pinned packages`);
  try {
    new Model(obj).validate();
  } catch (e) {
    const errs = (e.errors ?? [])
      .map((x) => `${x.instancePath || "/"} ${x.message}${x.params?.additionalProperty ? `: "${x.params.additionalProperty}"` : ""}`)
      .filter((v, i, a) => a.indexOf(v) === i);
    throw new Error(errs.length ? errs.slice(0, 8).join("\n") : e.message);
  }
}
const id = (o) => `${o.kind}/${o.metadata?.name ?? "?"}`;

// --- 0. Strict mode works: what it must reject -------------------------------------
function rejects(name, obj, expected) {
  check(name, () => {
    let err = null;
    try {
      validateObject(obj);
    } catch (e) {
      err = e;
    }
    assert(err, "accepted");
    assert(err.message.includes(expected), `rejected, but not for ${expected}: ${err.message}`);
  });
}
rejects("the seed's Rollout is rejected for rollbackBackoff (fixtures/seed-rollout.yaml)",
  loadDocs(path.join(here, "fixtures", "seed-rollout.yaml"))[0], '"rollbackBackoff"');
rejects("a misspelt Deployment field is rejected", {
  apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "x" },
  spec: { selector: { matchLabels: { a: "b" } }, template: { metadata: { labels: { a: "b" } },
    spec: { containers: [{ name: "c", image: "i", readinesProbe: {} }] } } },
}, '"readinesProbe"');
rejects("a wrong type is rejected", {
  apiVersion: "policy/v1", kind: "PodDisruptionBudget", metadata: { name: "x" }, spec: { maxUnavailable: [] },
}, "/spec/maxUnavailable");

// --- 1. Every YAML document in deploy/ --------------------------------------------
function yamlFiles(dir, out = []) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      if (p !== here) yamlFiles(p, out);
    } else if (/\.ya?ml$/.test(e.name)) out.push(p);
  }
  return out.sort();
}
const notManifests = [];
for (const file of yamlFiles(deploy)) {
  let docs;
  try {
    docs = loadDocs(file);
  } catch (e) {
    check(`${rel(file)} parses`, () => {
      throw e;
    });
    continue;
  }
  for (const doc of docs) {
    if (typeof doc !== "object" || (doc.apiVersion === undefined && doc.kind === undefined)) {
      notManifests.push(rel(file));
      continue;
    }
    check(`${rel(file)}: ${id(doc)} matches the ${doc.apiVersion} schema`, () => {
      assert(doc.apiVersion && doc.kind, "apiVersion and kind must both be set");
      validateObject(doc);
    });
  }
}
if (notManifests.length) console.log(`# not Kubernetes manifests (no apiVersion/kind): ${[...new Set(notManifests)].join(", ")}`);

// --- 2. Kustomizations -----------------------------------------------------------------
function hasCommand(cmd) {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}
const kustomizer = process.env.KUSTOMIZE_LITE ? null : hasCommand("kubectl") ? "kubectl" : hasCommand("kustomize") ? "kustomize" : null;
function kustomizeBuild(dir) {
  if (!kustomizer) return buildLite(dir);
  const args = kustomizer === "kubectl" ? ["kustomize", dir] : ["build", dir];
  const out = execFileSync(kustomizer, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  return yaml.loadAll(out).filter((d) => d != null);
}
// Same objects, up to the generated ConfigMap hash and document order.
function normalise(objs) {
  const text = JSON.stringify(objs).replace(/(canaryd-config)-[a-z0-9]{10}/g, "$1-HASH");
  return JSON.parse(text)
    .map((o) => JSON.stringify(sortKeys(o)))
    .sort();
}
function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === "object") return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]));
  return v;
}

const kustomizations = yamlFiles(deploy)
  .filter((f) => path.basename(f) === "kustomization.yaml")
  .map((f) => path.dirname(f));
const built = new Map();
for (const dir of kustomizations) {
  check(`kustomize build ${rel(dir)}${kustomizer ? ` (${kustomizer})` : " (kustomize-lite)"}`, () => {
    const objs = kustomizeBuild(dir);
    built.set(dir, objs);
    return `${objs.length} objects`;
  });
  const objs = built.get(dir);
  if (!objs) continue;
  if (kustomizer) {
    check(`kustomize-lite builds ${rel(dir)} like ${kustomizer}`, () => {
      const a = normalise(objs);
      const b = normalise(buildLite(dir));
      const onlyReal = a.filter((x) => !b.includes(x));
      const onlyLite = b.filter((x) => !a.includes(x));
      assert(onlyReal.length === 0 && onlyLite.length === 0,
        `differs:\n  ${kustomizer}: ${onlyReal.join("\n  ").slice(0, 600)}\n  lite: ${onlyLite.join("\n  ").slice(0, 600)}`);
    });
  }
  for (const obj of objs) {
    check(`${rel(dir)} output: ${id(obj)} matches the ${obj.apiVersion} schema`, () => validateObject(obj));
  }
}

// --- 3. What a canaryd deployment relies on -------------------------------------------
function durationSeconds(s) {
  if (s === undefined) return undefined;
  if (s === 0 || s === "0") return 0;
  let total = 0;
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/g;
  let m;
  let seen = "";
  while ((m = re.exec(String(s)))) {
    total += Number(m[1]) * { h: 3600, m: 60, s: 1, ms: 0.001 }[m[2]];
    seen += m[0];
  }
  assert(seen === String(s), `bad duration ${s}`);
  return total;
}
const labelsMatch = (selector, labels) =>
  Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v);

function checkCanarydDeployment(where, objs) {
  const find = (kind, name) => objs.find((o) => o.kind === kind && (!name || o.metadata.name === name));
  const dep = find("Deployment", "canaryd");
  if (!dep) return;
  const rollout = find("Rollout", "canaryd");
  const pod = dep.spec.template;
  const c = pod.spec.containers.find((x) => x.name === "canaryd");
  const cmVolume = pod.spec.volumes?.find((v) => v.configMap)?.configMap?.name;
  const cm = find("ConfigMap", cmVolume);
  const cfg = cm ? yaml.load(cm.data["canaryd.yaml"]) : null;
  const pre = `${rel(where)}: `;

  check(`${pre}the canaryd config is a ConfigMap mounted at /etc/canaryd and named by CANARYD_CONFIG`, () => {
    assert(cm, `ConfigMap ${cmVolume} is not in the output`);
    const mount = c.volumeMounts?.find((m) => m.mountPath === "/etc/canaryd");
    assert(mount && pod.spec.volumes.find((v) => v.name === mount.name)?.configMap, "no ConfigMap volume at /etc/canaryd");
    assert(c.env?.find((e) => e.name === "CANARYD_CONFIG")?.value === "/etc/canaryd/canaryd.yaml", "CANARYD_CONFIG not set");
  });
  check(`${pre}>= 2 replicas`, () => {
    const replicas = rollout ? rollout.spec.replicas : dep.spec.replicas;
    assert(replicas >= 2, `${rollout ? "Rollout" : "Deployment"} has ${replicas} replicas`);
    const hpa = find("HorizontalPodAutoscaler");
    if (hpa) assert(hpa.spec.minReplicas >= 2, `HPA minReplicas ${hpa.spec.minReplicas}`);
  });
  check(`${pre}readiness on /ready, liveness on /health`, () => {
    assert(c.readinessProbe?.httpGet?.path === "/ready", "readinessProbe is not GET /ready");
    assert(c.livenessProbe?.httpGet?.path === "/health", "livenessProbe is not GET /health");
  });
  check(`${pre}preStop pause and terminationGracePeriodSeconds > preStop + drain_delay + shutdown_grace`, () => {
    const cmd = c.lifecycle?.preStop?.exec?.command ?? [];
    const pause = c.lifecycle?.preStop?.sleep?.seconds ?? (/sleep$/.test(cmd[0] ?? "") ? Number(cmd[1]) : NaN);
    assert(pause > 0, "no preStop pause");
    const drain = durationSeconds(cfg?.server?.drain_delay ?? "5s");
    const grace = durationSeconds(cfg?.server?.shutdown_grace ?? "30s");
    const tgp = pod.spec.terminationGracePeriodSeconds ?? 30;
    assert(tgp > pause + drain + grace, `terminationGracePeriodSeconds ${tgp} <= ${pause} + ${drain} + ${grace}`);
    return `${tgp}s > ${pause}+${drain}+${grace}s`;
  });
  check(`${pre}readiness takes a draining pod out within drain_delay, and one slow probe does not`, () => {
    // During drain_delay /ready answers 503 while canaryd still serves: the
    // readiness probe must see failureThreshold failures inside that window.
    const period = c.readinessProbe.periodSeconds ?? 10;
    const failures = c.readinessProbe.failureThreshold ?? 3;
    const drain = durationSeconds(cfg?.server?.drain_delay ?? "5s");
    assert(period * failures <= drain,
      `readiness notices the drain after periodSeconds ${period} x failureThreshold ${failures} = ${period * failures}s > drain_delay ${drain}s`);
    // A single probe over timeoutSeconds must not take a healthy pod out.
    assert(failures >= 2, `readiness failureThreshold ${failures}: one slow /ready takes the pod out of the Service`);
    return `${period}s x ${failures} <= ${drain}s`;
  });
  check(`${pre}resources requested and limited`, () => {
    assert(c.resources?.requests?.cpu && c.resources?.requests?.memory, "no cpu/memory requests");
    assert(c.resources?.limits?.memory, "no memory limit");
  });
  check(`${pre}non-root, read-only root, no privilege escalation, capabilities dropped`, () => {
    const ps = pod.spec.securityContext ?? {};
    const cs = c.securityContext ?? {};
    assert((cs.runAsNonRoot ?? ps.runAsNonRoot) === true, "runAsNonRoot is not true");
    assert((cs.runAsUser ?? ps.runAsUser ?? 1) !== 0, "runs as uid 0");
    assert(cs.readOnlyRootFilesystem === true, "readOnlyRootFilesystem is not true");
    assert(cs.allowPrivilegeEscalation === false, "allowPrivilegeEscalation is not false");
    assert((cs.capabilities?.drop ?? []).includes("ALL"), "capabilities.drop lacks ALL");
  });
  check(`${pre}every Secret the pods read is in the output`, () => {
    const names = [
      ...(c.envFrom ?? []).filter((e) => e.secretRef && !e.secretRef.optional).map((e) => e.secretRef.name),
      ...(c.env ?? []).filter((e) => e.valueFrom?.secretKeyRef && !e.valueFrom.secretKeyRef.optional).map((e) => e.valueFrom.secretKeyRef.name),
    ];
    const missing = names.filter((n) => !find("Secret", n));
    if (missing.length && !find("Namespace")) return `base: ${missing.join(", ")} provided by the overlay`;
    assert(missing.length === 0, `missing Secret ${missing.join(", ")}`);
    const secret = find("Secret", names[0]);
    const envs = Object.entries(cfg ?? {}).flatMap(([, sec]) =>
      typeof sec === "object" && sec ? Object.entries(sec).flatMap(([k, v]) => (k.endsWith("_env") ? [v] : typeof v === "object" && v ? Object.entries(v).filter(([kk]) => kk.endsWith("_env")).map(([, vv]) => vv) : [])) : []);
    const keys = Object.keys({ ...(secret?.data ?? {}), ...(secret?.stringData ?? {}) });
    const unset = envs.filter((e) => !keys.includes(e));
    assert(unset.length === 0, `the Secret lacks ${unset.join(", ")} (named by *_env in canaryd.yaml)`);
  });
  check(`${pre}Service, ServiceMonitor, PDB and HPA point at canaryd`, () => {
    const podLabels = pod.metadata.labels;
    const svc = find("Service", "canaryd");
    assert(svc && labelsMatch(svc.spec.selector, podLabels), "Service canaryd does not select the pods");
    const port = svc.spec.ports.find((p) => p.targetPort === "http" || p.targetPort === 8080);
    assert(port && c.ports.find((p) => p.name === "http" && p.containerPort === Number(cfg.server.listen.split(":").pop())),
      "Service/container port does not match server.listen");
    const sm = find("ServiceMonitor");
    assert(sm && labelsMatch(sm.spec.selector.matchLabels, svc.metadata.labels), "ServiceMonitor does not select the Service");
    assert(sm.spec.endpoints.every((e) => svc.spec.ports.some((p) => p.name === e.port) && (e.path ?? "/metrics") === "/metrics"),
      "ServiceMonitor endpoint is not the Service's /metrics port");
    const pdb = find("PodDisruptionBudget");
    assert(pdb && labelsMatch(pdb.spec.selector.matchLabels, podLabels), "PDB does not select the pods");
    const hpa = find("HorizontalPodAutoscaler");
    const t = hpa?.spec.scaleTargetRef;
    assert(t && find(t.kind, t.name) && find(t.kind, t.name).apiVersion === t.apiVersion, `HPA target ${t?.kind}/${t?.name} is not in the output`);
    if (rollout) assert(t.kind === "Rollout", "with a Rollout, the HPA must scale the Rollout");
  });
  if (rollout) {
    check(`${pre}the Rollout references the Deployment and a complete AnalysisTemplate`, () => {
      const w = rollout.spec.workloadRef;
      assert(w && find(w.kind, w.name), `workloadRef ${w?.kind}/${w?.name} is not in the output`);
      assert(dep.spec.replicas === 0, "the referenced Deployment must be at 0 replicas (the Rollout owns the pods)");
      assert(labelsMatch(rollout.spec.selector.matchLabels, pod.metadata.labels), "Rollout selector does not match the pods");
      const a = rollout.spec.strategy.canary.analysis;
      for (const t of a.templates) {
        const tpl = find("AnalysisTemplate", t.templateName);
        assert(tpl, `AnalysisTemplate ${t.templateName} is not in the output`);
        const given = new Set(a.args.map((x) => x.name));
        const missing = tpl.spec.args.filter((x) => x.value === undefined && !x.valueFrom && !given.has(x.name));
        assert(missing.length === 0, `args without a value: ${missing.map((x) => x.name).join(", ")}`);
        const unused = [...given].filter((g) => !tpl.spec.args.some((x) => x.name === g));
        assert(unused.length === 0, `args the template does not declare: ${unused.join(", ")}`);
      }
    });
  }
}
for (const [dir, objs] of built) checkCanarydDeployment(dir, objs);

// --- 4. Alert rules and PromQL -------------------------------------------------------
const ruleDoc = loadDocs(ruleManifest)[0];
check(`${rel(ruleManifest)} carries the groups of ${rel(rulesFile)}`, () => {
  if (!fs.existsSync(rulesFile)) return skip(`${rel(rulesFile)} does not exist: not compared`);
  assert(JSON.stringify(sortKeys(ruleDoc.spec.groups)) === JSON.stringify(sortKeys(ruleGroups())),
    "they differ: run `node deploy/validate/sync-rules.mjs`");
});
const promtool = hasCommand("promtool");
function promtoolRules(name, groups) {
  check(name, () => {
    if (!promtool) return skip("promtool is not installed (apt-get install prometheus)");
    const f = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "canaryd-rules-")), "rules.yaml");
    fs.writeFileSync(f, yaml.dump({ groups }));
    const r = spawnSync("promtool", ["check", "rules", f], { encoding: "utf8" });
    fs.rmSync(path.dirname(f), { recursive: true });
    assert(r.status === 0, (r.stdout + r.stderr).trim());
  });
}
promtoolRules(`promtool accepts the PrometheusRule's rules`, ruleDoc.spec.groups);
for (const file of yamlFiles(path.join(deploy, "argo-rollouts"))) {
  for (const doc of loadDocs(file).filter((d) => d.kind === "AnalysisTemplate")) {
    const prom = doc.spec.metrics.filter((m) => m.provider?.prometheus);
    const web = doc.spec.metrics.filter((m) => m.provider?.web);
    check(`${rel(file)} ${id(doc)}: every metric has a Prometheus or Web provider`, () => {
      const other = doc.spec.metrics.filter((m) => !m.provider?.prometheus && !m.provider?.web);
      assert(other.length === 0, `unexpected providers: ${other.map((m) => m.name).join(", ")}`);
    });
    if (prom.length) {
      const rules = prom.map((m) => ({
        record: `analysis:${m.name.replace(/-/g, "_")}`,
        expr: m.provider.prometheus.query.replace(/\{\{\s*args\.([\w-]+)\s*\}\}/g, "x"),
      }));
      promtoolRules(`promtool parses the PromQL of ${rel(file)} ${id(doc)}`, [{ name: "analysis", rules }]);
      check(`${rel(file)} ${id(doc)} queries canaryd's metrics`, () => {
        for (const m of prom) {
          assert(/ai_proxy_[a-z_]+/.test(m.provider.prometheus.query), `${m.name} uses no ai_proxy_* metric`);
          assert(/\{\{args\.[\w-]+\}\}/.test(m.provider.prometheus.address), `${m.name}: address is not an argument`);
          assert(m.successCondition || m.failureCondition, `${m.name} has no condition`);
        }
      });
    }
    // A Web metric reads canaryd's own verdict (GET /admin/verdict, issue 14):
    // the admin token from a Secret, the verdict's three outcomes mapped.
    for (const m of web) {
      check(`${rel(file)} ${id(doc)} ${m.name} reads canaryd's verdict with the admin token`, () => {
        const w = m.provider.web;
        const args = new Map((doc.spec.args ?? []).map((a) => [a.name, a]));
        const url = /^\{\{args\.([\w-]+)\}\}\/admin\/verdict$/.exec(w.url);
        assert(url && args.has(url[1]), `url ${w.url} is not {{args.<declared arg>}}/admin/verdict`);
        assert((w.method ?? "GET") === "GET", `method ${w.method}`);
        assert(w.jsonPath === "{$.kind}", `jsonPath ${w.jsonPath}: the verdict's outcome is $.kind`);
        const auth = (w.headers ?? []).find((h) => h.key === "Authorization");
        const token = auth && /^Bearer \{\{args\.([\w-]+)\}\}$/.exec(auth.value);
        assert(token, "no Authorization: Bearer {{args.<arg>}} header");
        const ref = args.get(token[1])?.valueFrom?.secretKeyRef;
        assert(ref, `the token arg ${token[1]} does not come from a Secret (secretKeyRef)`);
        assert(ref.key === "CANARYD_ADMIN_TOKEN", `the token is ${ref.key}, not CANARYD_ADMIN_TOKEN (server.admin_token_env)`);
        const secretDocs = yamlFiles(path.join(deploy, "kubernetes")).flatMap((f) => loadDocs(f)).filter((d) => d?.kind === "Secret");
        assert(secretDocs.some((d) => d.metadata?.name === ref.name && (d.stringData?.[ref.key] !== undefined || d.data?.[ref.key] !== undefined)),
          `no Secret ${ref.name} with ${ref.key} in deploy/kubernetes`);
        assert(m.successCondition === 'result == "pass"', `successCondition ${m.successCondition}`);
        assert(m.failureCondition === 'result == "fail"', `failureCondition ${m.failureCondition}`);
        assert((m.failureLimit ?? 0) === 0, "canaryd applies its own failure_limit: one fail is a decision (failureLimit 0)");
        return `${w.url}, token from ${ref.name}/${ref.key}`;
      });
    }
  }
}

// --- 5. canaryd accepts its Kubernetes config ------------------------------------------
const canarydBin = process.env.CANARYD_BIN;
const configs = new Map();
for (const objs of built.values())
  for (const o of objs) if (o.kind === "ConfigMap" && o.data?.["canaryd.yaml"]) configs.set(o.data["canaryd.yaml"], o.metadata.name);
for (const [text, name] of configs) {
  check(`canaryd --check-config accepts ConfigMap ${name}`, () => {
    if (!canarydBin) return skip("CANARYD_BIN is not set");
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "canaryd-cfg-"));
    fs.writeFileSync(path.join(dir, "canaryd.yaml"), text);
    const r = spawnSync(canarydBin, ["--check-config", "-c", path.join(dir, "canaryd.yaml")], { encoding: "utf8" });
    fs.rmSync(dir, { recursive: true });
    assert(r.status === 0, (r.stderr || r.stdout).trim());
  });
}

// --- 6. Metric names: what deploy/ queries is what canaryd exports -----------------
// A misspelt metric in a query is valid PromQL that matches nothing: an alert
// that never fires, an analysis that always passes on `or vector(0)`. Every
// ai_proxy_* / process_* name in the manifests, rules and dashboard must be a
// series a real canaryd exposes.
const metricNameRe = /\b(?:ai_proxy|process)_[A-Za-z0-9_]+/g;
function metricUsers() {
  const files = [];
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) {
        if (p !== here) walk(p);
      } else if (/\.(ya?ml|json)$/.test(e.name)) files.push(p);
    }
  };
  walk(deploy);
  return files.sort();
}
// The series names a text exposition allows for each `# TYPE family type`.
function seriesNames(exposition) {
  const names = new Map();
  for (const m of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, family, type] = m;
    names.set(family, type);
    const parts = { histogram: ["_bucket", "_sum", "_count"], summary: ["_sum", "_count"] }[type] ?? [];
    for (const suffix of parts) names.set(family + suffix, `${type} ${family}`);
  }
  return names;
}
async function scrapeCanaryd(bin, prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "canaryd-metrics-"));
  // Port 0: canaryd logs the port it bound ("canaryd listening"), so no race
  // for a free port. The upstreams are closed loopback ports: nothing is called.
  fs.writeFileSync(path.join(dir, "canaryd.yaml"), yaml.dump({
    server: { listen: "127.0.0.1:0", threads: 1, drain_delay: "0s", shutdown_grace: "1s" },
    upstreams: { openai: { base_url: "http://127.0.0.1:1/v1" }, holysheep: { base_url: "http://127.0.0.1:2/v1" } },
    split: { control: "openai", canary: "holysheep" },
    metrics: { prefix },
  }));
  const child = spawn(bin, ["-c", path.join(dir, "canaryd.yaml")], { stdio: ["ignore", "pipe", "pipe"] });
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  let log = "";
  try {
    const port = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`canaryd did not log its port within 10 s:\n${log.slice(-800)}`)), 10000);
      const onData = (d) => {
        log += d;
        const m = /"msg":"canaryd listening"[^\n]*"port":(\d+)/.exec(log);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      };
      child.stdout.on("data", onData);
      child.stderr.on("data", onData);
      exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`canaryd exited (${code ?? signal}) before listening:\n${log.slice(-800)}`));
      });
    });
    const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) });
    assert(res.status === 200, `GET /metrics answered ${res.status}`);
    return await res.text();
  } finally {
    // Stopped by its PID: SIGTERM (drain_delay 0s), SIGKILL if it lingers.
    if (child.exitCode === null && child.signalCode === null) {
      process.kill(child.pid, "SIGTERM");
      const timer = setTimeout(() => child.exitCode === null && child.signalCode === null && process.kill(child.pid, "SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    }
    fs.rmSync(dir, { recursive: true });
  }
}
{
  const baseCfg = configs.size
    ? yaml.load([...configs.keys()].find((t) => yaml.load(t)?.metrics?.prefix) ?? [...configs.keys()][0])
    : null;
  const prefix = baseCfg?.metrics?.prefix ?? "ai_proxy";
  let exposed = null;
  await checkAsync(`a running canaryd (CANARYD_BIN) exposes its metric families on /metrics`, async () => {
    if (!canarydBin) return skip("CANARYD_BIN is not set");
    exposed = seriesNames(await scrapeCanaryd(canarydBin, prefix));
    const families = [...exposed.values()].filter((t) => !t.includes(" ")).length;
    assert(families > 0, "no # TYPE lines in the exposition");
    assert([...exposed.keys()].some((n) => n.startsWith(`${prefix}_`)), `no ${prefix}_* family`);
    return `${families} families, prefix ${prefix}`;
  });
  for (const file of metricUsers()) {
    const text = fs.readFileSync(file, "utf8");
    const used = [...new Set(text.match(metricNameRe) ?? [])].sort();
    if (!used.length) continue;
    // Recording rules define names of their own.
    const recorded = new Set([...text.matchAll(/^\s*-?\s*record:\s*["']?([\w:]+)/gm)].map((m) => m[1]));
    check(`${rel(file)}: every metric it names is one canaryd exposes (${used.length} names)`, () => {
      if (!exposed) return skip("no exposition to compare with (see the check above)");
      const unknown = used.filter((n) => !exposed.has(n) && !recorded.has(n));
      assert(unknown.length === 0, `unknown metric names: ${unknown.join(", ")}\n  canaryd exposes: ${[...exposed.keys()].join(", ")}`);
    });
  }
}

console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed ? 1 : 0);
