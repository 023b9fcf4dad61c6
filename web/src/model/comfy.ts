// ComfyUI files -> our workflow. Two shapes exist: the API prompt `{id: {class_type, inputs}}`
// (inputs are literals or `[source_id, output_index]`), and the editor's LiteGraph "workflow" with node
// positions. Class types resolve through the catalog (names and aliases), output indices through the
// order of the catalog's outputs; unknown classes are kept, so validation marks them.

import type { Workflow, WorkflowNode } from '../api/types';
import type { NodeCatalog } from './catalog';
import { FORMAT, isPlainObject } from './convert';

export function isComfyPrompt(data: unknown): data is Record<string, { class_type: string; inputs?: Record<string, unknown> }> {
  if (!isPlainObject(data) || 'format' in data) return false;
  const d = isPlainObject(data.prompt) && !('class_type' in data.prompt) ? data.prompt : data;
  const vals = Object.values(d);
  return vals.length > 0 && vals.every((v) => isPlainObject(v) && typeof v.class_type === 'string');
}

export function isLiteGraphWorkflow(data: unknown): data is { nodes: LGNode[]; links?: unknown[] } {
  return isPlainObject(data) && Array.isArray(data.nodes) && !('format' in data);
}

interface LGNode {
  id: number | string;
  type: string;
  pos?: [number, number] | Record<string, number>;
  title?: string;
  mode?: number;
  inputs?: { name: string; link: number | null; widget?: { name: string } }[];
  outputs?: { name: string; links?: number[] | null }[];
  widgets_values?: unknown[] | Record<string, unknown>;
}

export interface ImportResult {
  workflow: Workflow;
  warnings: string[];
}

/** The prompt itself: API files may wrap it as `{prompt: {...}}` (the body of POST /prompt). */
export function unwrapPrompt(data: Record<string, unknown>): Record<string, unknown> {
  return (isPlainObject(data.prompt) && !('class_type' in data.prompt) ? data.prompt : data) as Record<string, unknown>;
}

/** Translate a ComfyUI API prompt; `positions` (from a LiteGraph workflow) place the nodes. */
export function comfyPromptToWorkflow(
  data: Record<string, unknown>,
  catalog: NodeCatalog,
  positions: Record<string, [number, number]> = {},
): ImportResult {
  const prompt = (isPlainObject(data.prompt) && !('class_type' in data.prompt) ? data.prompt : data) as Record<
    string,
    { class_type: string; inputs?: Record<string, unknown>; _meta?: { title?: string } }
  >;
  const warnings: string[] = [];
  const nodes: Record<string, WorkflowNode> = {};
  for (const [id, entry] of Object.entries(prompt)) {
    const schema = catalog.resolve(entry.class_type);
    if (!schema) warnings.push(`node ${id}: ComfyUI class ${entry.class_type} has no equivalent here`);
    const inputs: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(entry.inputs ?? {})) {
      if (Array.isArray(value) && value.length === 2 && typeof value[1] === 'number' && (typeof value[0] === 'string' || typeof value[0] === 'number')) {
        const src = String(value[0]);
        const srcSchema = prompt[src] ? catalog.resolve(prompt[src].class_type) : undefined;
        const out = srcSchema?.outputs[value[1]]?.name ?? `output${value[1]}`;
        if (!srcSchema) warnings.push(`node ${id}: input ${name} links to ${src}, whose outputs are unknown`);
        inputs[name] = { node: src, output: out };
      } else {
        inputs[name] = isPlainObject(value) ? { value } : value;
      }
    }
    const ui: Record<string, unknown> = { comfy_class: entry.class_type };
    if (entry._meta?.title) ui.title = entry._meta.title;
    if (positions[id]) ui.pos = positions[id];
    nodes[id] = { type: schema?.name ?? entry.class_type, inputs, ui };
  }
  return { workflow: { format: FORMAT, version: 1, nodes, ui: { source: 'comfyui-api' } }, warnings };
}

export function liteGraphPositions(wf: { nodes: LGNode[] }): Record<string, [number, number]> {
  const out: Record<string, [number, number]> = {};
  for (const n of wf.nodes) {
    const p = n.pos;
    if (Array.isArray(p)) out[String(n.id)] = [p[0], p[1]];
    else if (p && typeof p['0'] === 'number') out[String(n.id)] = [p['0'], p['1']];
  }
  return out;
}

/**
 * A LiteGraph workflow without its API prompt (a ComfyUI file saved from the editor): links come from
 * the `links` table, widget values are matched in order to the catalog's literal inputs. The fallback only:
 * the editor asks the server first (POST /api/v1/convert/comfy with `workflow`), which knows ComfyUI's widget order.
 */
export function liteGraphToWorkflow(wf: { nodes: LGNode[]; links?: unknown[] }, catalog: NodeCatalog): ImportResult {
  const warnings: string[] = [];
  const linkTable = new Map<number, { from: string; slot: number }>();
  for (const l of wf.links ?? []) {
    if (Array.isArray(l) && l.length >= 5) linkTable.set(Number(l[0]), { from: String(l[1]), slot: Number(l[2]) });
  }
  const byId = new Map(wf.nodes.map((n) => [String(n.id), n]));
  const nodes: Record<string, WorkflowNode> = {};
  for (const n of wf.nodes) {
    const id = String(n.id);
    const schema = catalog.resolve(n.type);
    if (!schema) warnings.push(`node ${id}: ComfyUI class ${n.type} has no equivalent here`);
    const inputs: Record<string, unknown> = {};
    const linked = new Set<string>();
    for (const inp of n.inputs ?? []) {
      if (inp.link === null || inp.link === undefined) continue;
      const l = linkTable.get(inp.link);
      if (!l) continue;
      const src = byId.get(l.from);
      const srcSchema = src ? catalog.resolve(src.type) : undefined;
      const out = srcSchema?.outputs[l.slot]?.name ?? src?.outputs?.[l.slot]?.name?.toLowerCase() ?? `output${l.slot}`;
      inputs[inp.name] = { node: l.from, output: out };
      linked.add(inp.name);
    }
    if (schema && Array.isArray(n.widgets_values)) {
      const vals = [...n.widgets_values];
      for (const i of schema.inputs) {
        if (i.link_only || linked.has(i.name) || !vals.length) continue;
        let v = vals.shift();
        inputs[i.name] = isPlainObject(v) ? { value: v } : v;
        // ComfyUI stores the seed's "control after generate" mode right after the seed
        if (i.seed && typeof vals[0] === 'string' && ['fixed', 'increment', 'decrement', 'randomize'].includes(vals[0] as string)) {
          v = vals.shift();
        }
      }
    } else if (schema && isPlainObject(n.widgets_values)) {
      for (const [k, v] of Object.entries(n.widgets_values)) if (!linked.has(k)) inputs[k] = isPlainObject(v) ? { value: v } : v;
    }
    const ui: Record<string, unknown> = { comfy_class: n.type };
    const pos = liteGraphPositions({ nodes: [n] })[id];
    if (pos) ui.pos = pos;
    if (n.title) ui.title = n.title;
    const entry: WorkflowNode = { type: schema?.name ?? n.type, inputs, ui };
    if (n.mode === 4) entry.mode = 'bypass';
    nodes[id] = entry;
  }
  return { workflow: { format: FORMAT, version: 1, nodes, ui: { source: 'comfyui' } }, warnings };
}
