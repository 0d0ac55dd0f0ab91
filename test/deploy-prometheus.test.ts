import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { registry } from '../lib/metrics.js';
import '../workers/maintenance.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const configFile = `${root}/deploy/prometheus/prometheus.yml`;

interface Rule {
  alert?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

const config = parse(readFileSync(configFile, 'utf8')) as { rule_files?: string[] };
const ruleFiles = (config.rule_files ?? []).map((f) => join(dirname(configFile), f));
const rules = ruleFiles.flatMap((f) => (parse(readFileSync(f, 'utf8')) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules));

describe('deploy/prometheus alert rules', () => {
  it('are referenced from prometheus.yml and exist', () => {
    expect(ruleFiles.length).toBeGreaterThan(0);
    for (const f of ruleFiles) expect(existsSync(f), f).toBe(true);
  });

  it('each name an alert, a severity and a summary', () => {
    for (const r of rules) {
      expect(r.alert, r.expr).toMatch(/^Rulr[A-Za-z]+$/);
      expect(r.labels?.severity, r.alert).toMatch(/^(warning|critical)$/);
      expect(r.annotations?.summary, r.alert).toBeTruthy();
    }
  });

  it('only use metrics the workers role exports', () => {
    const used = new Set(rules.flatMap((r) => r.expr.match(/\brulr_[a-z_]+\b/g) ?? []));
    expect(used.size).toBeGreaterThan(0);
    for (const m of used) expect(registry.getSingleMetric(m), m).toBeDefined();
  });

  it('alert on a maintenance job that has not succeeded in twice its interval', () => {
    const stale = rules.find((r) => r.alert === 'RulrMaintenanceJobNotSucceeding');
    expect(stale?.expr.replace(/\s+/g, ' ').trim()).toBe(
      'time() - max by (job_name) (rulr_maintenance_job_last_success_timestamp_seconds or rulr_maintenance_job_registered_timestamp_seconds) > 2 * max by (job_name) (rulr_maintenance_job_interval_seconds)',
    );
  });
});
