// The node catalog (GET /api/v1/nodes) with the look-ups the editor needs: a node's schema in its
// graph level (LoopInput / LoopOutput exist only in a loop body), palette search, new-node defaults.

import type { Catalog, InputSchema, NodeSchema, OutputSchema, WorkflowBody } from '../api/types';
import { TypeTable } from './sockets';
import type { GNode, Graph, Vec2 } from './graph';
import { readGraph } from './convert';

export const LOOP_INPUT = 'LoopInput';
export const LOOP_OUTPUT = 'LoopOutput';

export class NodeCatalog {
  readonly types: TypeTable;
  readonly nodes: Record<string, NodeSchema>;
  private readonly aliasMap = new Map<string, string>();

  constructor(readonly raw: Catalog) {
    this.types = new TypeTable(raw.types ?? []);
    this.nodes = raw.nodes ?? {};
    for (const s of Object.values(this.nodes)) for (const a of s.aliases ?? []) this.aliasMap.set(a, s.name);
  }

  static empty(): NodeCatalog {
    return new NodeCatalog({ types: [], nodes: {} });
  }

  /** Resolve a type name or one of its aliases. */
  resolve(type: string): NodeSchema | undefined {
    return this.nodes[type] ?? this.nodes[this.aliasMap.get(type) ?? ''];
  }

  /** The schema of `type` inside a graph level whose owner is the loop node type `loopOwner`. */
  schemaFor(type: string, loopOwner?: string | null): NodeSchema | undefined {
    if (loopOwner && (type === LOOP_INPUT || type === LOOP_OUTPUT)) {
      const loop = this.nodes[loopOwner]?.loop;
      if (!loop) return undefined;
      return type === LOOP_INPUT
        ? boundary(LOOP_INPUT, 'Loop Input', [], loop.body_inputs, 'The values each iteration of the loop starts with.')
        : boundary(LOOP_OUTPUT, 'Loop Output', loop.body_outputs, [], 'What each iteration hands back to the loop.');
    }
    return this.resolve(type);
  }

  list(): NodeSchema[] {
    return Object.values(this.nodes).sort((a, b) => (a.category + '/' + a.display_name).localeCompare(b.category + '/' + b.display_name));
  }

  /**
   * Palette search: every word must match the name, display name, category, description or a socket
   * type; `in:TYPE` / `out:TYPE` (or `type:TYPE`) restrict to nodes with a compatible input / output.
   */
  search(query: string, limit = Infinity): NodeSchema[] {
    const words = query.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const scored: { s: NodeSchema; score: number }[] = [];
    for (const s of this.list()) {
      let score = 0;
      let ok = true;
      for (const w of words) {
        const m = /^(in|out|type):(.+)$/.exec(w);
        if (m) {
          const t = m[2].toUpperCase();
          const ins = s.inputs.some((i) => this.types.canConnect(t, i.type) && i.type !== '*');
          const outs = s.outputs.some((o) => this.types.canConnect(o.type, t) && o.type !== '*');
          if ((m[1] === 'in' && !ins) || (m[1] === 'out' && !outs) || (m[1] === 'type' && !ins && !outs)) ok = false;
          continue;
        }
        const name = s.name.toLowerCase();
        const disp = s.display_name.toLowerCase();
        if (name.startsWith(w) || disp.startsWith(w)) score += 3;
        else if (name.includes(w) || disp.includes(w)) score += 2;
        else if (s.category.toLowerCase().includes(w)) score += 1;
        else if (s.aliases.some((a) => a.toLowerCase().includes(w))) score += 1;
        else if ([...s.inputs, ...s.outputs].some((x) => x.type.toLowerCase() === w)) score += 1;
        else if (s.description.toLowerCase().includes(w)) score += 0.5;
        else ok = false;
      }
      if (ok) scored.push({ s, score });
    }
    scored.sort((a, b) => b.score - a.score);
    return scored.slice(0, limit).map((x) => x.s);
  }

  /** A new node of `type` with its widgets at their defaults (and a loop's default body). */
  newNode(type: string, id: string, pos: Vec2): GNode {
    const s = this.nodes[type];
    const values: Record<string, unknown> = {};
    const ui: Record<string, unknown> = {};
    if (s) {
      for (const i of s.inputs) {
        if (i.link_only) continue;
        const v = defaultValue(i);
        if (v !== undefined) values[i.name] = v;
        if (i.seed) ui.seed_control = { ...((ui.seed_control as object) ?? {}), [i.name]: 'fixed' };
      }
    }
    const node: GNode = { id, type, pos, bypass: false, values, ui };
    if (s?.loop) node.body = defaultBody(s.loop.default_body);
    return node;
  }

  /** Body of a loop node as a graph (the schema's default body where the file has none). */
  bodyOf(node: GNode): Graph | undefined {
    if (node.body) return node.body;
    const loop = this.nodes[node.type]?.loop;
    return loop ? defaultBody(loop.default_body) : undefined;
  }
}

export function defaultBody(raw: WorkflowBody | undefined): Graph {
  return readGraph(raw?.nodes ?? {}, raw?.ui);
}

export function defaultValue(i: InputSchema): unknown {
  if (i.default !== null && i.default !== undefined) return i.default;
  if (i.choices && i.choices.length) return i.choices[0];
  if (!i.required) return undefined;
  switch (i.type) {
    case 'INT':
      return i.min !== null && i.min > 0 ? i.min : 0;
    case 'FLOAT':
      return i.min !== null && i.min > 0 ? i.min : 0;
    case 'STRING':
      return '';
    case 'BOOLEAN':
      return false;
    default:
      return undefined;
  }
}

function boundary(name: string, display: string, inputs: InputSchema[], outputs: OutputSchema[], description: string): NodeSchema {
  return {
    name,
    display_name: display,
    category: 'loop',
    description,
    inputs,
    outputs,
    output_node: false,
    deterministic: true,
    aliases: [],
    loop: null,
  };
}

/** A schema guessed for a node type the catalog does not know, so that it still shows its wiring. */
export function unknownSchema(node: GNode, graph: Graph): NodeSchema {
  const inputs: InputSchema[] = [];
  const seen = new Set<string>();
  const addIn = (name: string, link: boolean) => {
    if (seen.has(name)) return;
    seen.add(name);
    inputs.push({
      name, type: '*', required: false, link_only: link, default: null, min: null, max: null, step: null,
      choices: null, description: '', display_name: name, multiline: false, slider: false, seed: false,
      upload: null, advanced: false,
    });
  };
  for (const e of graph.edges) if (e.target === node.id) addIn(e.input, true);
  for (const k of Object.keys(node.outerLinks ?? {})) addIn(k, true);
  for (const k of Object.keys(node.values)) addIn(k, false);
  const outputs: OutputSchema[] = [];
  const outSeen = new Set<string>();
  for (const e of graph.edges) {
    if (e.source === node.id && !outSeen.has(e.output)) {
      outSeen.add(e.output);
      outputs.push({ name: e.output, type: '*', description: '' });
    }
  }
  return {
    name: node.type, display_name: node.type, category: 'unknown', description: `Unknown node type ${node.type}`,
    inputs, outputs, output_node: false, deterministic: true, aliases: [], loop: null,
  };
}
