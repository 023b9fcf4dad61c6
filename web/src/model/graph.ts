// The editor's graph model: an immutable document (plain objects, replaced on every edit) so that the
// undo stack can keep earlier versions cheaply (structural sharing) and React can compare by identity.

export type Vec2 = [number, number];

export interface GNode {
  id: string;
  type: string;
  pos: Vec2;
  title?: string;
  bypass: boolean;
  collapsed?: boolean;
  /** literal input values (unwrapped: `{value: {...}}` in the file becomes the object itself) */
  values: Record<string, unknown>;
  /** links from nodes outside this graph level (a loop body referring to the enclosing graph) */
  outerLinks?: Record<string, { node: string; output: string }>;
  /** a loop node's body graph */
  body?: Graph;
  /** other `ui` fields of the node, kept as they were (colour, seed controls, ComfyUI class, ...) */
  ui: Record<string, unknown>;
}

export interface GEdge {
  id: string;
  source: string;
  output: string;
  target: string;
  input: string;
}

export interface Group {
  id: string;
  title: string;
  /** x, y, width, height */
  rect: [number, number, number, number];
  color?: string;
}

export interface Graph {
  nodes: Record<string, GNode>;
  /** ordered: the order of insertion; an input has at most one incoming edge */
  edges: GEdge[];
  groups: Group[];
  /** other `ui` fields of this graph level (viewport, description, ...) */
  ui: Record<string, unknown>;
}

export interface Doc {
  root: Graph;
  /** top-level fields of the workflow file besides nodes/ui (settings, ...) */
  settings: Record<string, unknown>;
  version: number;
}

export const emptyGraph = (): Graph => ({ nodes: {}, edges: [], groups: [], ui: {} });
export const emptyDoc = (): Doc => ({ root: emptyGraph(), settings: {}, version: 1 });

export function edgeId(source: string, output: string, target: string, input: string): string {
  return `${source}:${output}->${target}:${input}`;
}

export function makeEdge(source: string, output: string, target: string, input: string): GEdge {
  return { id: edgeId(source, output, target, input), source, output, target, input };
}

/** A path of loop node ids, from the root graph down to the body being edited. */
export type GraphPath = string[];

export function graphAt(doc: Doc, path: GraphPath): Graph | null {
  let g: Graph = doc.root;
  for (const id of path) {
    const n = g.nodes[id];
    if (!n || !n.body) return null;
    g = n.body;
  }
  return g;
}

/** Replace the graph at `path` with `fn(graph)`, copying only the spine of the tree. */
export function updateGraphAt(doc: Doc, path: GraphPath, fn: (g: Graph) => Graph): Doc {
  const rec = (g: Graph, i: number): Graph => {
    if (i === path.length) return fn(g);
    const id = path[i];
    const n = g.nodes[id];
    if (!n || !n.body) return g;
    return { ...g, nodes: { ...g.nodes, [id]: { ...n, body: rec(n.body, i + 1) } } };
  };
  return { ...doc, root: rec(doc.root, 0) };
}

/** A fresh id not used in `g` (nor in `taken`), shaped like `base`, `base2`, ... or numbers. */
export function freshId(g: Graph, base: string, taken: Set<string> = new Set()): string {
  const clean = base.replace(/[^A-Za-z0-9_-]+/g, '').toLowerCase() || 'node';
  if (!g.nodes[clean] && !taken.has(clean)) return clean;
  for (let i = 2; ; i++) {
    const id = `${clean}${i}`;
    if (!g.nodes[id] && !taken.has(id)) return id;
  }
}

// ---- pure edits ------------------------------------------------------------------------------------

export function addNode(g: Graph, node: GNode): Graph {
  return { ...g, nodes: { ...g.nodes, [node.id]: node } };
}

export function patchNode(g: Graph, id: string, patch: Partial<GNode>): Graph {
  const n = g.nodes[id];
  if (!n) return g;
  return { ...g, nodes: { ...g.nodes, [id]: { ...n, ...patch } } };
}

export function setValue(g: Graph, id: string, input: string, value: unknown): Graph {
  const n = g.nodes[id];
  if (!n) return g;
  return patchNode(g, id, { values: { ...n.values, [input]: value } });
}

export function moveNodes(g: Graph, moves: Record<string, Vec2>): Graph {
  const nodes = { ...g.nodes };
  let changed = false;
  for (const [id, pos] of Object.entries(moves)) {
    const n = nodes[id];
    if (n && (n.pos[0] !== pos[0] || n.pos[1] !== pos[1])) {
      nodes[id] = { ...n, pos };
      changed = true;
    }
  }
  return changed ? { ...g, nodes } : g;
}

/** Connect, replacing any edge that already feeds the same input (an input takes one link). */
export function connect(g: Graph, source: string, output: string, target: string, input: string): Graph {
  const edges = g.edges.filter((e) => !(e.target === target && e.input === input));
  edges.push(makeEdge(source, output, target, input));
  const n = g.nodes[target];
  let nodes = g.nodes;
  if (n?.outerLinks && input in n.outerLinks) {
    const rest = { ...n.outerLinks };
    delete rest[input];
    nodes = { ...nodes, [target]: { ...n, outerLinks: Object.keys(rest).length ? rest : undefined } };
  }
  return { ...g, nodes, edges };
}

export function removeEdges(g: Graph, ids: Iterable<string>): Graph {
  const drop = new Set(ids);
  if (drop.size === 0) return g;
  return { ...g, edges: g.edges.filter((e) => !drop.has(e.id)) };
}

export function removeNodes(g: Graph, ids: Iterable<string>): Graph {
  const drop = new Set(ids);
  if (drop.size === 0) return g;
  const nodes = { ...g.nodes };
  for (const id of drop) delete nodes[id];
  return { ...g, nodes, edges: g.edges.filter((e) => !drop.has(e.source) && !drop.has(e.target)) };
}

export function incoming(g: Graph, target: string): GEdge[] {
  return g.edges.filter((e) => e.target === target);
}

export function linkInto(g: Graph, target: string, input: string): GEdge | undefined {
  return g.edges.find((e) => e.target === target && e.input === input);
}

// ---- sub-graphs (copy / paste / duplicate) ---------------------------------------------------------

export interface Fragment {
  kind: 'latentloom.fragment';
  nodes: GNode[];
  edges: GEdge[];
  groups: Group[];
}

/** The selected nodes with the edges between them (edges leaving the selection are dropped). */
export function extractFragment(g: Graph, ids: Iterable<string>, groupIds: Iterable<string> = []): Fragment {
  const keep = new Set(ids);
  const gids = new Set(groupIds);
  return {
    kind: 'latentloom.fragment',
    nodes: [...keep].filter((id) => g.nodes[id]).map((id) => g.nodes[id]),
    edges: g.edges.filter((e) => keep.has(e.source) && keep.has(e.target)),
    groups: g.groups.filter((gr) => gids.has(gr.id)),
  };
}

/**
 * Insert a fragment with fresh ids, shifted so that its top-left corner lands at `at` (or offset by
 * `offset`). Returns the new graph and the ids of the inserted nodes.
 */
export function insertFragment(
  g: Graph,
  frag: Fragment,
  place: { at?: Vec2; offset?: Vec2 },
): { graph: Graph; ids: string[]; groupIds: string[] } {
  if (frag.nodes.length === 0 && frag.groups.length === 0) return { graph: g, ids: [], groupIds: [] };
  const minX = Math.min(...frag.nodes.map((n) => n.pos[0]), ...frag.groups.map((gr) => gr.rect[0]));
  const minY = Math.min(...frag.nodes.map((n) => n.pos[1]), ...frag.groups.map((gr) => gr.rect[1]));
  const dx = place.at ? place.at[0] - minX : (place.offset?.[0] ?? 0);
  const dy = place.at ? place.at[1] - minY : (place.offset?.[1] ?? 0);
  const taken = new Set<string>();
  const rename: Record<string, string> = {};
  for (const n of frag.nodes) {
    const id = freshId(g, n.id.replace(/\d+$/, '') || n.type, taken);
    taken.add(id);
    rename[n.id] = id;
  }
  const nodes = { ...g.nodes };
  const ids: string[] = [];
  for (const n of frag.nodes) {
    const id = rename[n.id];
    nodes[id] = { ...n, id, pos: [n.pos[0] + dx, n.pos[1] + dy] };
    ids.push(id);
  }
  const edges = [...g.edges];
  for (const e of frag.edges) {
    edges.push(makeEdge(rename[e.source], e.output, rename[e.target], e.input));
  }
  const groupIds: string[] = [];
  const groups = [...g.groups];
  for (const gr of frag.groups) {
    const id = freshGroupId(groups);
    groups.push({ ...gr, id, rect: [gr.rect[0] + dx, gr.rect[1] + dy, gr.rect[2], gr.rect[3]] });
    groupIds.push(id);
  }
  return { graph: { ...g, nodes, edges, groups }, ids, groupIds };
}

export function freshGroupId(groups: Group[]): string {
  const have = new Set(groups.map((g) => g.id));
  for (let i = 1; ; i++) if (!have.has(`group${i}`)) return `group${i}`;
}

export function isFragment(x: unknown): x is Fragment {
  return !!x && typeof x === 'object' && (x as Fragment).kind === 'latentloom.fragment' && Array.isArray((x as Fragment).nodes);
}
