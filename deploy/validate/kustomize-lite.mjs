// A small kustomize for machines without kubectl or kustomize: builds the
// kustomizations in deploy/ with the subset of features they use (resources,
// namespace, labels, images, configMapGenerator, JSON 6902 patches). Anything
// else is an error, never silently ignored. When kubectl is present,
// validate.mjs uses the real kustomize and checks that this one agrees.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import yaml from "js-yaml";

const kSupported = new Set([
  "apiVersion", "kind", "resources", "namespace", "labels", "images", "configMapGenerator", "patches",
]);
const kClusterScoped = new Set([
  "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass",
  "StorageClass", "PersistentVolume", "ClusterAnalysisTemplate",
]);

export function loadDocs(file) {
  return yaml.loadAll(fs.readFileSync(file, "utf8")).filter((d) => d != null);
}

function kustomizationFile(dir) {
  for (const n of ["kustomization.yaml", "kustomization.yml", "Kustomization"]) {
    const f = path.join(dir, n);
    if (fs.existsSync(f)) return f;
  }
  return null;
}

// Every pod spec in a workload (Deployment, Rollout, StatefulSet, ...).
function podSpecs(obj) {
  const out = [];
  const t = obj?.spec?.template?.spec;
  if (t) out.push(t);
  const jt = obj?.spec?.jobTemplate?.spec?.template?.spec;
  if (jt) out.push(jt);
  return out;
}

function containersOf(spec) {
  return [...(spec.containers ?? []), ...(spec.initContainers ?? [])];
}

function splitImage(image) {
  const at = image.indexOf("@");
  if (at >= 0) return { name: image.slice(0, at), tag: null, digest: image.slice(at) };
  const colon = image.lastIndexOf(":");
  if (colon > image.lastIndexOf("/")) return { name: image.slice(0, colon), tag: image.slice(colon + 1), digest: null };
  return { name: image, tag: null, digest: null };
}

function applyImages(resources, images) {
  for (const obj of resources) {
    for (const spec of podSpecs(obj)) {
      for (const c of containersOf(spec)) {
        if (typeof c.image !== "string") continue;
        const cur = splitImage(c.image);
        const rule = images.find((i) => i.name === cur.name);
        if (!rule) continue;
        const name = rule.newName ?? cur.name;
        if (rule.digest) c.image = `${name}@${rule.digest}`;
        else if (rule.newTag) c.image = `${name}:${rule.newTag}`;
        else c.image = cur.digest ? `${name}${cur.digest}` : cur.tag ? `${name}:${cur.tag}` : name;
      }
    }
  }
}

// JSON pointer (RFC 6901) + the JSON patch ops (RFC 6902) kustomize accepts.
function pointer(p) {
  if (p === "") return [];
  if (!p.startsWith("/")) throw new Error(`bad JSON pointer ${p}`);
  return p.slice(1).split("/").map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
}
function walk(doc, parts) {
  let cur = doc;
  for (const k of parts) {
    if (cur == null || typeof cur !== "object") throw new Error(`path not found at ${k}`);
    cur = Array.isArray(cur) ? cur[k === "-" ? cur.length : Number(k)] : cur[k];
  }
  return cur;
}
function applyOp(doc, op) {
  const parts = pointer(op.path);
  const last = parts.pop();
  const parent = walk(doc, parts);
  if (parent == null || typeof parent !== "object") throw new Error(`no parent for ${op.path}`);
  const isArr = Array.isArray(parent);
  const idx = isArr ? (last === "-" ? parent.length : Number(last)) : last;
  switch (op.op) {
    case "add":
      if (isArr) parent.splice(idx, 0, structuredClone(op.value));
      else parent[idx] = structuredClone(op.value);
      break;
    case "replace":
      if (!(idx in parent)) throw new Error(`replace: ${op.path} does not exist`);
      parent[idx] = structuredClone(op.value);
      break;
    case "remove":
      if (!(idx in parent)) throw new Error(`remove: ${op.path} does not exist`);
      if (isArr) parent.splice(idx, 1);
      else delete parent[idx];
      break;
    case "test":
      if (JSON.stringify(parent[idx]) !== JSON.stringify(op.value)) throw new Error(`test failed at ${op.path}`);
      break;
    default:
      throw new Error(`patch op ${op.op} is not supported by kustomize-lite`);
  }
}

function matches(obj, target) {
  const [group, version] = obj.apiVersion.includes("/") ? obj.apiVersion.split("/") : ["", obj.apiVersion];
  if (target.kind && target.kind !== obj.kind) return false;
  if (target.name && target.name !== obj.metadata?.name) return false;
  if (target.group !== undefined && target.group !== group) return false;
  if (target.version && target.version !== version) return false;
  if (target.namespace && target.namespace !== obj.metadata?.namespace) return false;
  return true;
}

function applyPatches(resources, patches, dir) {
  for (const p of patches) {
    const text = p.patch ?? (p.path ? fs.readFileSync(path.join(dir, p.path), "utf8") : null);
    if (text == null || !p.target) throw new Error("kustomize-lite supports only JSON 6902 patches with a target");
    const ops = yaml.load(text);
    if (!Array.isArray(ops)) throw new Error("kustomize-lite supports only JSON 6902 patches (a list of ops)");
    const hits = resources.filter((r) => matches(r, p.target));
    if (hits.length === 0) throw new Error(`patch target ${JSON.stringify(p.target)} matches no resource`);
    for (const r of hits) for (const op of ops) applyOp(r, op);
  }
}

function generateConfigMaps(gens, dir) {
  return gens.map((g) => {
    if (g.behavior && g.behavior !== "create") throw new Error(`configMapGenerator behavior ${g.behavior} not supported`);
    const data = {};
    for (const f of g.files ?? []) {
      const [key, rel] = f.includes("=") ? f.split("=", 2) : [path.basename(f), f];
      data[key] = fs.readFileSync(path.join(dir, rel), "utf8");
    }
    for (const l of g.literals ?? []) {
      const i = l.indexOf("=");
      data[l.slice(0, i)] = l.slice(i + 1);
    }
    const noHash = g.options?.disableNameSuffixHash === true;
    const obj = { apiVersion: "v1", kind: "ConfigMap", metadata: { name: g.name }, data };
    const hash = crypto.createHash("sha256").update(JSON.stringify(obj)).digest("hex").slice(0, 10);
    return { obj, from: g.name, to: noHash ? g.name : `${g.name}-${hash}` };
  });
}

function renameConfigMapRefs(resources, from, to) {
  for (const obj of resources) {
    for (const spec of podSpecs(obj)) {
      for (const v of spec.volumes ?? []) if (v.configMap?.name === from) v.configMap.name = to;
      for (const v of spec.volumes ?? [])
        for (const s of v.projected?.sources ?? []) if (s.configMap?.name === from) s.configMap.name = to;
      for (const c of containersOf(spec)) {
        for (const e of c.envFrom ?? []) if (e.configMapRef?.name === from) e.configMapRef.name = to;
        for (const e of c.env ?? [])
          if (e.valueFrom?.configMapKeyRef?.name === from) e.valueFrom.configMapKeyRef.name = to;
      }
    }
  }
}

export function build(dir) {
  const kfile = kustomizationFile(dir);
  if (!kfile) throw new Error(`${dir}: no kustomization.yaml`);
  const k = yaml.load(fs.readFileSync(kfile, "utf8")) ?? {};
  for (const key of Object.keys(k)) {
    if (!kSupported.has(key)) throw new Error(`${kfile}: "${key}" is not supported by kustomize-lite`);
  }
  let resources = [];
  for (const r of k.resources ?? []) {
    const p = path.resolve(dir, r);
    if (fs.statSync(p).isDirectory()) resources.push(...build(p));
    else resources.push(...loadDocs(p));
  }
  for (const g of generateConfigMaps(k.configMapGenerator ?? [], dir)) {
    renameConfigMapRefs(resources, g.from, g.to);
    g.obj.metadata.name = g.to;
    resources.push(g.obj);
  }
  if (k.namespace) {
    for (const r of resources) {
      if (!kClusterScoped.has(r.kind)) (r.metadata ??= {}).namespace = k.namespace;
    }
  }
  for (const l of k.labels ?? []) {
    if (l.includeSelectors || l.includeTemplates) throw new Error(`${kfile}: labels with includeSelectors/includeTemplates not supported`);
    for (const r of resources) Object.assign(((r.metadata ??= {}).labels ??= {}), l.pairs);
  }
  if (k.images) applyImages(resources, k.images);
  if (k.patches) applyPatches(resources, k.patches, dir);
  return resources;
}
