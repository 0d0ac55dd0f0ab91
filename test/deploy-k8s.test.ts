import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { configSpec, loadConfig } from '../lib/config.js';
import { portVar, SUBGRAPH_NAMES, urlVar } from '../lib/subgraphs.js';

const dir = fileURLToPath(new URL('../deploy/k8s/', import.meta.url));
// biome-ignore lint/suspicious/noExplicitAny: Kubernetes objects are checked field by field below.
type K8s = any;

const files = readdirSync(dir).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml');
const docs: K8s[] = files.flatMap((f) =>
  parseAllDocuments(readFileSync(`${dir}${f}`, 'utf8')).map((d) => {
    if (d.errors.length) throw new Error(`${f}: ${d.errors[0]?.message}`);
    return d.toJS();
  }),
);
const of = (kind: string) => docs.filter((d) => d.kind === kind);
const defaults = loadConfig({});
const ROLE_PORT: Record<string, keyof typeof configSpec> = {
  gateway: 'GATEWAY_PORT',
  ...Object.fromEntries(SUBGRAPH_NAMES.map((n) => [n, portVar(n)])),
  ingest: 'INGEST_PORT',
  workers: 'WORKERS_PORT',
};
const matches = (selector: Record<string, string>, labels: Record<string, string>) =>
  Object.entries(selector).every(([k, v]) => labels?.[k] === v);

describe('deploy/k8s', () => {
  it('parses as Kubernetes objects in the rulr namespace', () => {
    expect(docs.length).toBeGreaterThan(10);
    for (const d of docs) {
      expect(d.apiVersion, JSON.stringify(d.metadata)).toBeTruthy();
      expect(d.metadata?.name).toBeTruthy();
      if (d.kind !== 'Namespace') expect(d.metadata.namespace, d.metadata.name).toBe('rulr');
    }
  });

  it('lists every manifest in kustomization.yaml', () => {
    const k = parseAllDocuments(readFileSync(`${dir}kustomization.yaml`, 'utf8'))[0]!.toJS();
    expect([...k.resources].sort()).toEqual([...files].sort());
    for (const f of k.resources) expect(existsSync(`${dir}${f}`)).toBe(true);
  });

  it('runs each role as a Deployment with a Service on the port its config declares', () => {
    const roles = of('Deployment').map((d) => d.metadata.labels['app.kubernetes.io/component']);
    expect(roles).toEqual(expect.arrayContaining(['gateway', ...SUBGRAPH_NAMES, 'ingest', 'workers']));
    for (const d of of('Deployment')) {
      const role = d.metadata.labels['app.kubernetes.io/component'];
      const port = defaults[ROLE_PORT[role]!];
      const c = d.spec.template.spec.containers[0];
      expect(c.args, role).toEqual(['start', role]);
      expect(c.ports[0].containerPort, role).toBe(port);
      expect(matches(d.spec.selector.matchLabels, d.spec.template.metadata.labels), role).toBe(true);
      const svc = of('Service').find((s) => matches(s.spec.selector, d.spec.template.metadata.labels));
      expect(svc, `Service for ${role}`).toBeDefined();
      expect(svc.spec.ports[0].port, role).toBe(port);
    }
  });

  it('runs every subgraph of lib/subgraphs.ts and points the gateway at its Service with its URL variable', () => {
    const config = Object.assign({}, ...of('ConfigMap').map((m) => m.data ?? {})) as Record<string, string>;
    for (const name of SUBGRAPH_NAMES) {
      const d = of('Deployment').find((x) => x.metadata.labels['app.kubernetes.io/component'] === name);
      expect(d, `a Deployment for ${name} (deploy/k8s/${name}.yaml)`).toBeDefined();
      expect(d.spec.template.metadata.annotations?.['prometheus.io/port'], `${name} is scraped on its port`).toBe(
        String(defaults[portVar(name)]),
      );
      const svc = of('Service').find((x) => matches(x.spec.selector, d.spec.template.metadata.labels));
      const url = config[urlVar(name)];
      expect(url, `${urlVar(name)} in the ConfigMap`).toBeDefined();
      expect(new URL(url!).hostname, urlVar(name)).toBe(svc.metadata.name);
      expect(new URL(url!).port, urlVar(name)).toBe(String(defaults[portVar(name)]));
    }
  });

  it('probes every role on /healthz (liveness) and /readyz (readiness)', () => {
    for (const d of of('Deployment')) {
      const c = d.spec.template.spec.containers[0];
      expect(c.livenessProbe.httpGet.path).toBe('/healthz');
      expect(c.readinessProbe.httpGet.path).toBe('/readyz');
      expect(c.resources.requests.cpu).toBeTruthy();
      expect(c.resources.limits.memory).toBeTruthy();
    }
  });

  it('uses only environment variables declared in lib/config.ts (and Node.js runtime options)', () => {
    const declared = [...Object.keys(configSpec), 'NODE_OPTIONS'];
    const names = [
      ...of('ConfigMap').flatMap((m) => Object.keys(m.data ?? {})),
      ...of('Secret').flatMap((s) => Object.keys({ ...s.data, ...s.stringData })),
      ...[...of('Deployment'), ...of('Job')].flatMap((d) => (d.spec.template.spec.containers[0].env ?? []).map((e: K8s) => e.name)),
    ];
    expect(names.length).toBeGreaterThan(5);
    for (const n of names) expect(declared, n).toContain(n);
  });

  it('scales the gateway on CPU 70% between 3 and 10 replicas', () => {
    const hpa = of('HorizontalPodAutoscaler').find((h) => h.spec.scaleTargetRef.name === 'rulr-gateway');
    expect(hpa).toBeDefined();
    expect(hpa.spec.minReplicas).toBe(3);
    expect(hpa.spec.maxReplicas).toBe(10);
    expect(hpa.spec.metrics[0].resource).toMatchObject({ name: 'cpu', target: { type: 'Utilization', averageUtilization: 70 } });
  });

  it('scales the workers on queue depth (1,000 waiting jobs) through an external metric', () => {
    const hpa = of('HorizontalPodAutoscaler').find((h) => h.spec.scaleTargetRef.name === 'rulr-workers');
    expect(hpa.spec.metrics[0].type).toBe('External');
    expect(Number(hpa.spec.metrics[0].external.target.averageValue)).toBe(1000);
  });

  it('targets existing Deployments from every autoscaler and disruption budget', () => {
    const deployments = of('Deployment');
    for (const h of of('HorizontalPodAutoscaler')) {
      expect(deployments.map((d) => d.metadata.name)).toContain(h.spec.scaleTargetRef.name);
    }
    expect(of('PodDisruptionBudget').length).toBeGreaterThan(0);
    for (const p of of('PodDisruptionBudget')) {
      expect(
        deployments.some((d) => matches(p.spec.selector.matchLabels, d.spec.template.metadata.labels)),
        p.metadata.name,
      ).toBe(true);
    }
  });
});
