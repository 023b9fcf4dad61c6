// Workflow file (engine/workflow.py, version 1) <-> the editor's graph model. The conversion is
// structural and needs no catalog, so any file round-trips: unknown node types, dangling links and
// malformed inputs are kept as they are, to be marked by validation instead of silently dropped.

import type { Workflow, WorkflowBody, WorkflowNode } from '../api/types';
import { type Doc, type GNode, type Graph, type Group, type Vec2, emptyGraph, makeEdge } from './graph';

export const FORMAT = 'latentloom.workflow';

export class WorkflowFormatError extends Error {}

export function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

export function isLink(x: unknown): x is { node: string; output: string } {
  if (!isPlainObject(x)) return false;
  const keys = Object.keys(x);
  return keys.length === 2 && typeof x.node === 'string' && typeof x.output === 'string';
}

function isWrapped(x: unknown): x is { value: unknown } {
  return isPlainObject(x) && Object.keys(x).length === 1 && 'value' in x;
}

function toPos(x: unknown): Vec2 | null {
  if (Array.isArray(x) && x.length >= 2 && typeof x[0] === 'number' && typeof x[1] === 'number') return [x[0], x[1]];
  if (isPlainObject(x) && typeof x['0'] === 'number' && typeof x['1'] === 'number') return [x['0'], x['1']];
  return null;
}

function readGroups(raw: unknown): Group[] {
  if (!Array.isArray(raw)) return [];
  const out: Group[] = [];
  raw.forEach((g, i) => {
    if (!isPlainObject(g)) return;
    const r = (g.rect ?? g.bounding) as unknown;
    if (!Array.isArray(r) || r.length < 4 || !r.every((v) => typeof v === 'number')) return;
    out.push({
      id: typeof g.id === 'string' ? g.id : `group${i + 1}`,
      title: typeof g.title === 'string' ? g.title : 'Group',
      rect: [r[0], r[1], r[2], r[3]],
      ...(typeof g.color === 'string' ? { color: g.color } : {}),
    });
  });
  return out;
}

/** Read one graph level (the root or a loop body). */
export function readGraph(rawNodes: Record<string, WorkflowNode>, rawUi: Record<string, unknown> | undefined): Graph {
  const g = emptyGraph();
  const ids = new Set(Object.keys(rawNodes));
  const missingPos: string[] = [];
  for (const [id, entry] of Object.entries(rawNodes)) {
    const e: WorkflowNode = isPlainObject(entry) ? (entry as WorkflowNode) : { type: String(entry) };
    const ui: Record<string, unknown> = isPlainObject(e.ui) ? { ...e.ui } : {};
    const pos = toPos(ui.pos);
    if (!pos) missingPos.push(id);
    const title = typeof ui.title === 'string' ? ui.title : undefined;
    const collapsed = ui.collapsed === true ? true : undefined;
    delete ui.pos;
    delete ui.title;
    delete ui.collapsed;
    const node: GNode = {
      id,
      type: typeof e.type === 'string' ? e.type : String(e.type),
      pos: pos ?? [0, 0],
      bypass: e.mode === 'bypass',
      values: {},
      ui,
    };
    if (title !== undefined) node.title = title;
    if (collapsed) node.collapsed = true;
    const inputs = isPlainObject(e.inputs) ? e.inputs : {};
    for (const [name, raw] of Object.entries(inputs)) {
      if (isLink(raw)) {
        if (ids.has(raw.node)) g.edges.push(makeEdge(raw.node, raw.output, id, name));
        else node.outerLinks = { ...(node.outerLinks ?? {}), [name]: { node: raw.node, output: raw.output } };
      } else if (isWrapped(raw)) {
        node.values[name] = raw.value;
      } else if (isPlainObject(raw)) {
        // neither a link nor a wrapped literal: keep it verbatim so validation can point at it
        node.ui = { ...node.ui, raw_inputs: { ...((node.ui.raw_inputs as object) ?? {}), [name]: raw } };
      } else {
        node.values[name] = raw;
      }
    }
    if (e.mode !== undefined && e.mode !== 'normal' && e.mode !== 'bypass') node.ui = { ...node.ui, raw_mode: e.mode };
    if (isPlainObject(e.body)) {
      const b = e.body as WorkflowBody;
      node.body = readGraph(isPlainObject(b.nodes) ? b.nodes : {}, isPlainObject(b.ui) ? b.ui : undefined);
    }
    g.nodes[id] = node;
  }
  const ui = isPlainObject(rawUi) ? { ...rawUi } : {};
  g.groups = readGroups(ui.groups);
  delete ui.groups;
  g.ui = ui;
  if (missingPos.length) layoutMissing(g, new Set(missingPos));
  return g;
}

/** Place nodes that have no position: columns by depth in the graph, rows in file order. */
export function layoutMissing(g: Graph, which: Set<string>): void {
  const depth: Record<string, number> = {};
  const preds: Record<string, string[]> = {};
  for (const e of g.edges) (preds[e.target] ??= []).push(e.source);
  const visiting = new Set<string>();
  const d = (id: string): number => {
    if (id in depth) return depth[id];
    if (visiting.has(id)) return 0;
    visiting.add(id);
    const ps = preds[id] ?? [];
    const v = ps.length ? Math.max(...ps.map(d)) + 1 : 0;
    visiting.delete(id);
    depth[id] = v;
    return v;
  };
  const rows: Record<number, number> = {};
  for (const id of Object.keys(g.nodes)) {
    if (!which.has(id)) continue;
    const col = d(id);
    const row = rows[col] ?? 0;
    rows[col] = row + 1;
    g.nodes[id] = { ...g.nodes[id], pos: [40 + col * 320, 40 + row * 220] };
  }
}

export function workflowToDoc(raw: unknown): Doc {
  if (!isPlainObject(raw)) throw new WorkflowFormatError('a workflow must be a JSON object');
  if (raw.format !== FORMAT) {
    throw new WorkflowFormatError(`'format' must be '${FORMAT}', got ${JSON.stringify(raw.format ?? null)}`);
  }
  if (!isPlainObject(raw.nodes)) throw new WorkflowFormatError("'nodes' must be an object of node id -> node");
  const version = typeof raw.version === 'number' ? raw.version : 1;
  return {
    root: readGraph(raw.nodes as Record<string, WorkflowNode>, isPlainObject(raw.ui) ? raw.ui : undefined),
    settings: isPlainObject(raw.settings) ? raw.settings : {},
    version,
  };
}

function writeGraph(g: Graph): { nodes: Record<string, WorkflowNode>; ui: Record<string, unknown> } {
  const nodes: Record<string, WorkflowNode> = {};
  const links: Record<string, Record<string, { node: string; output: string }>> = {};
  for (const e of g.edges) (links[e.target] ??= {})[e.input] = { node: e.source, output: e.output };
  for (const n of Object.values(g.nodes)) {
    const inputs: Record<string, unknown> = {};
    for (const [name, v] of Object.entries(n.values)) {
      if (v === undefined) continue;
      inputs[name] = isPlainObject(v) ? { value: v } : v;
    }
    const ui: Record<string, unknown> = { ...n.ui };
    const rawInputs = ui.raw_inputs;
    delete ui.raw_inputs;
    const rawMode = ui.raw_mode;
    delete ui.raw_mode;
    if (isPlainObject(rawInputs)) Object.assign(inputs, rawInputs);
    Object.assign(inputs, n.outerLinks ?? {}, links[n.id] ?? {});
    ui.pos = [Math.round(n.pos[0]), Math.round(n.pos[1])];
    if (n.title !== undefined) ui.title = n.title;
    if (n.collapsed) ui.collapsed = true;
    const entry: WorkflowNode = { type: n.type, inputs };
    if (n.bypass) entry.mode = 'bypass';
    else if (rawMode !== undefined) (entry as unknown as Record<string, unknown>).mode = rawMode;
    if (n.body) {
      const b = writeGraph(n.body);
      entry.body = Object.keys(b.ui).length ? { nodes: b.nodes, ui: b.ui } : { nodes: b.nodes };
    }
    entry.ui = ui;
    nodes[n.id] = entry;
  }
  const ui: Record<string, unknown> = { ...g.ui };
  if (g.groups.length) ui.groups = g.groups.map((gr) => ({ ...gr, rect: [...gr.rect] }));
  return { nodes, ui };
}

export function docToWorkflow(doc: Doc): Workflow {
  const { nodes, ui } = writeGraph(doc.root);
  const wf: Workflow = { format: FORMAT, version: doc.version, nodes, ui };
  if (Object.keys(doc.settings).length) wf.settings = doc.settings;
  return wf;
}
