// Writes build/check.ts: the dashboard JSON, and each panel's options, field config and queries, as TypeScript
// expressions that must `satisfy` Grafana's published types (@grafana/schema, pinned in package.json).
// `tsc` then reports every unknown key, missing required key and wrong value. The JSON text is embedded
// verbatim (JSON is a TypeScript expression), so line numbers in errors about the whole dashboard are the
// file's line numbers plus the header's.
import { readFileSync, mkdirSync, writeFileSync } from 'node:fs';

const file = process.argv[2];
const text = readFileSync(file, 'utf8');
const dashboard = JSON.parse(text);

// Panel types this dashboard may use: the module of each one's types, and whether it has custom field config.
const plugins = {
  timeseries: { mod: 'timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen', custom: true },
  stat: { mod: 'stat/panelcfg/x/StatPanelCfg_types.gen', custom: false },
};

const header = [
  "import type { Dashboard, DataQuery, Panel, RowPanel, VariableModel } from '@grafana/schema';",
  ...Object.entries(plugins).flatMap(([name, { mod, custom }]) => [
    `import type { Options as ${name}Options } from '@grafana/schema/dist/esm/raw/composable/${mod}';`,
    custom
      ? `import type { FieldConfig as ${name}FieldConfig } from '@grafana/schema/dist/esm/raw/composable/${mod}';`
      : `type ${name}FieldConfig = Record<string, never>; // no custom field config`,
  ]),
  // Grafana's types use TypeScript enums for string fields; JSON holds their values, so compare with those.
  'type Json<T> = T extends string ? `${T}` : T extends readonly (infer U)[] ? Json<U>[] :',
  '  T extends object ? { [K in keyof T]: Json<T[K]> } : T;',
  // The Prometheus query fields Grafana's Prometheus data source reads (it publishes no type for them).
  'type PrometheusQuery = DataQuery & { expr: string; legendFormat?: string; range?: boolean; instant?: boolean; interval?: string; format?: "time_series" | "table" | "heatmap" };',
  '',
];

const lines = [...header];
lines.push(`export const dashboard = ${text.trimEnd()} satisfies Json<Dashboard>;`, '');
// tsc reports one error per statement: each panel and variable on its own as well, so one run lists them all.
(dashboard.templating?.list ?? []).forEach((v, i) => {
  lines.push(`export const variable${i} = ${JSON.stringify(v)} satisfies Json<VariableModel>; // ${v.name}`);
});

const problems = [];
const all = (dashboard.panels ?? []).flatMap((p) => [p, ...(p.panels ?? [])]);
for (const p of all) {
  const name = `p${p.id}`;
  const { panels: _, ...own } = p;
  lines.push(`export const ${name} = ${JSON.stringify(own)} satisfies Json<${p.type === 'row' ? 'Omit<RowPanel, "panels">' : 'Panel'}>; // ${p.title}`);
  if (p.type === 'row') continue;
  if (!plugins[p.type]) {
    problems.push(`panel ${p.id} "${p.title}": type ${p.type} is not checked here; add its types to check.mjs`);
    continue;
  }
  lines.push(`// panel ${p.id}: ${p.title}`);
  lines.push(`export const ${name}_options = ${JSON.stringify(p.options ?? {})} satisfies Json<${p.type}Options>;`);
  lines.push(`export const ${name}_custom = ${JSON.stringify(p.fieldConfig?.defaults?.custom ?? {})} satisfies Json<${p.type}FieldConfig>;`);
  (p.targets ?? []).forEach((t, i) => {
    lines.push(`export const ${name}_target${i} = ${JSON.stringify(t)} satisfies PrometheusQuery;`);
  });
}
if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
mkdirSync('build', { recursive: true });
writeFileSync('build/check.ts', lines.join('\n') + '\n');
console.log(`build/check.ts: the dashboard and ${all.filter((p) => p.type !== 'row').length} panels (header: ${header.length + 1} lines)`);
