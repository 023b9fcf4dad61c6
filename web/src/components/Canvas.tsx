// The canvas: React Flow in controlled mode over the editor's graph model. Node positions, selection
// and connections flow into the model through the editor's actions; the model is the only truth.

import {
  Background, BackgroundVariant, type Connection, Controls, type Edge, type EdgeChange, type FinalConnectionState,
  MiniMap, type Node, type NodeChange, ReactFlow, useConnection, useReactFlow, ViewportPortal, type OnConnectStartParams,
} from '@xyflow/react';
import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import type { NodeCatalog } from '../model/catalog';
import type { Graph, GNode, Vec2 } from '../model/graph';
import { currentGraph, loopOwner } from '../state/derived';
import { editor } from '../state/editor';
import { useEd } from '../state/hooks';
import { ContextMenu, type MenuState } from './ContextMenu';
import { GroupView } from './GroupView';
import { NodeView } from './NodeView';

const nodeTypes = { loom: NodeView, group: GroupView };

export const NODE_MIME = 'application/x-latentloom-node';

interface Endpoint {
  node: string;
  handle: string;
}

/** Output type of `out:NAME` / input type of `in:NAME` on a node, from the catalog. */
export function handleType(catalog: NodeCatalog, owner: string | null, g: Graph, nodeId: string, handle: string): string | null {
  const n = g.nodes[nodeId];
  if (!n) return null;
  const s = catalog.schemaFor(n.type, owner);
  if (!s) return '*';
  if (handle.startsWith('out:')) return s.outputs.find((o) => o.name === handle.slice(4))?.type ?? null;
  if (handle.startsWith('in:')) return s.inputs.find((i) => i.name === handle.slice(3))?.type ?? null;
  return null;
}

function reaches(g: Graph, from: string, to: string): boolean {
  const next: Record<string, string[]> = {};
  for (const e of g.edges) (next[e.source] ??= []).push(e.target);
  const seen = new Set<string>();
  const stack = [from];
  while (stack.length) {
    const x = stack.pop()!;
    if (x === to) return true;
    if (seen.has(x)) continue;
    seen.add(x);
    stack.push(...(next[x] ?? []));
  }
  return false;
}

/** Why a connection from `source` to `target` is refused, or null if it is fine. */
export function connectionProblem(catalog: NodeCatalog, owner: string | null, g: Graph, source: Endpoint, target: Endpoint): string | null {
  if (!source.handle.startsWith('out:') || !target.handle.startsWith('in:')) return 'connect an output (right side) to an input (left side)';
  if (source.node === target.node) return 'a node cannot feed itself';
  const out = handleType(catalog, owner, g, source.node, source.handle);
  const inp = handleType(catalog, owner, g, target.node, target.handle);
  if (!out || !inp) return 'unknown socket';
  const refusal = catalog.types.refusal(out, inp);
  if (refusal) return refusal;
  if (reaches(g, target.node, source.node)) return 'this link would make a cycle: the graph must flow one way';
  return null;
}

export function Canvas() {
  const graph = useEd(currentGraph);
  const owner = useEd(loopOwner);
  const catalog = useEd((s) => s.catalog);
  const selNodes = useEd((s) => s.selNodes);
  const selGroups = useEd((s) => s.selGroups);
  const selEdges = useEd((s) => s.selEdges);
  const fitRequest = useEd((s) => s.fitRequest);
  const path = useEd((s) => s.path);
  const rf = useReactFlow();
  const wrapper = useRef<HTMLDivElement>(null);
  const measured = useRef(new Map<string, { width: number; height: number }>());
  const [mtick, setMtick] = useState(0);
  const cache = useRef(new Map<string, { src: GNode; sel: boolean; m: unknown; node: Node }>());
  const groupDrag = useRef<{ id: string; start: Vec2; members: Record<string, Vec2> } | null>(null);
  const connectFrom = useRef<OnConnectStartParams | null>(null);
  const [menu, setMenu] = useState<MenuState | null>(null);
  const closeMenu = useCallback(() => setMenu(null), []);
  const sizes = useCallback(() => {
    const out: Record<string, [number, number]> = {};
    for (const [id, m] of measured.current) out[id] = [m.width, m.height];
    return out;
  }, []);
  const onNodeContextMenu = useCallback((e: React.MouseEvent, n: Node) => {
    e.preventDefault();
    if (n.id.startsWith('group:')) return;
    if (!editor.s.selNodes.includes(n.id)) editor.select([n.id]);
    const p = rf.screenToFlowPosition({ x: e.clientX, y: e.clientY });
    setMenu({ x: e.clientX, y: e.clientY, flow: [p.x, p.y], nodeId: n.id });
  }, [rf]);
  const onPaneContextMenu = useCallback((e: MouseEvent | React.MouseEvent) => {
    e.preventDefault();
    const p = rf.screenToFlowPosition({ x: e.clientX, y: e.clientY });
    setMenu({ x: e.clientX, y: e.clientY, flow: [p.x, p.y], nodeId: null });
  }, [rf]);

  const nodes = useMemo<Node[]>(() => {
    const sel = new Set(selNodes);
    const gsel = new Set(selGroups);
    const out: Node[] = graph.groups.map((gr) => ({
      id: `group:${gr.id}`,
      type: 'group',
      position: { x: gr.rect[0], y: gr.rect[1] },
      width: gr.rect[2],
      height: gr.rect[3],
      data: { id: gr.id },
      selected: gsel.has(gr.id),
      zIndex: -1,
      dragHandle: '.ll-group-header',
      measured: { width: gr.rect[2], height: gr.rect[3] },
    }));
    const next = new Map<string, { src: GNode; sel: boolean; m: unknown; node: Node }>();
    for (const n of Object.values(graph.nodes)) {
      const m = measured.current.get(n.id);
      const hit = cache.current.get(n.id);
      const isSel = sel.has(n.id);
      if (hit && hit.src === n && hit.sel === isSel && hit.m === m) {
        next.set(n.id, hit);
        out.push(hit.node);
        continue;
      }
      const node: Node = { id: n.id, type: 'loom', position: { x: n.pos[0], y: n.pos[1] }, data: { id: n.id }, selected: isSel, ...(m ? { measured: m } : {}) };
      next.set(n.id, { src: n, sel: isSel, m, node });
      out.push(node);
    }
    cache.current = next;
    return out;
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [graph, selNodes, selGroups, mtick]);

  // edges depend on the links only (not on node positions): dragging does not rebuild them
  const graphRef = useRef(graph);
  graphRef.current = graph;
  const edgeCache = useRef(new Map<string, { sel: boolean; color: string; edge: Edge }>());
  const edges = useMemo<Edge[]>(() => {
    const sel = new Set(selEdges);
    const g = graphRef.current;
    const next = new Map<string, { sel: boolean; color: string; edge: Edge }>();
    const out = g.edges.map((e) => {
      const t = handleType(catalog, owner, g, e.source, `out:${e.output}`) ?? '*';
      const color = catalog.types.color(t);
      const isSel = sel.has(e.id);
      const hit = edgeCache.current.get(e.id);
      if (hit && hit.sel === isSel && hit.color === color) {
        next.set(e.id, hit);
        return hit.edge;
      }
      const edge: Edge = {
        id: e.id,
        source: e.source,
        target: e.target,
        sourceHandle: `out:${e.output}`,
        targetHandle: `in:${e.input}`,
        selected: sel.has(e.id),
        style: { stroke: color },
        className: 'll-edge',
        data: { type: t },
      };
      next.set(e.id, { sel: isSel, color, edge });
      return edge;
    });
    edgeCache.current = next;
    return out;
  }, [graph.edges, selEdges, catalog, owner]);

  useEffect(() => {
    if (!fitRequest) return;
    const t = setTimeout(() => void rf.fitView({ padding: 0.12, duration: 150, maxZoom: 1.1 }), 80);
    return () => clearTimeout(t);
  }, [fitRequest, rf]);

  useEffect(() => {
    editor.viewCenter = () => {
      const r = wrapper.current?.getBoundingClientRect();
      if (!r) return [200, 200];
      const p = rf.screenToFlowPosition({ x: r.left + r.width / 2, y: r.top + r.height / 2 });
      return [p.x - 120, p.y - 60];
    };
  }, [rf]);

  useEffect(() => {
    // sizes of the level we left are useless; they are measured again
    measured.current.clear();
    cache.current.clear();
    setMtick((x) => x + 1);
  }, [path]);

  const onNodesChange = useCallback((changes: NodeChange[]) => {
    const moves: Record<string, Vec2> = {};
    let measuredChanged = false;
    let selChanged = false;
    const selN = new Set(editor.s.selNodes);
    const selG = new Set(editor.s.selGroups);
    for (const c of changes) {
      if (c.type === 'position' && c.position) {
        if (c.id.startsWith('group:')) {
          const gid = c.id.slice(6);
          const gd = groupDrag.current;
          if (gd && gd.id === gid) {
            const dx = c.position.x - gd.start[0];
            const dy = c.position.y - gd.start[1];
            for (const [nid, p] of Object.entries(gd.members)) moves[nid] = [p[0] + dx, p[1] + dy];
          }
          const gr = editor.graph.groups.find((x) => x.id === gid);
          if (gr) editor.patchGroup(gid, { rect: [c.position.x, c.position.y, gr.rect[2], gr.rect[3]] }, 'Move group', 'group-move');
        } else {
          moves[c.id] = [c.position.x, c.position.y];
        }
      } else if (c.type === 'dimensions' && c.dimensions) {
        if (c.id.startsWith('group:')) {
          const gid = c.id.slice(6);
          const gr = editor.graph.groups.find((x) => x.id === gid);
          if (gr && c.resizing !== undefined && (gr.rect[2] !== c.dimensions.width || gr.rect[3] !== c.dimensions.height)) {
            editor.patchGroup(gid, { rect: [gr.rect[0], gr.rect[1], c.dimensions.width, c.dimensions.height] }, 'Resize group', 'group-resize');
          }
        } else {
          const prev = measured.current.get(c.id);
          if (!prev || prev.width !== c.dimensions.width || prev.height !== c.dimensions.height) {
            measured.current.set(c.id, { width: c.dimensions.width, height: c.dimensions.height });
            measuredChanged = true;
          }
        }
      } else if (c.type === 'select') {
        selChanged = true;
        if (c.id.startsWith('group:')) {
          if (c.selected) selG.add(c.id.slice(6));
          else selG.delete(c.id.slice(6));
        } else if (c.selected) selN.add(c.id);
        else selN.delete(c.id);
      }
    }
    if (Object.keys(moves).length) editor.moveLive(moves);
    if (selChanged) editor.select([...selN], [...selG], editor.s.selEdges.filter(() => false));
    if (measuredChanged) setMtick((x) => x + 1);
  }, []);

  const onEdgesChange = useCallback((changes: EdgeChange[]) => {
    const sel = new Set(editor.s.selEdges);
    let changed = false;
    for (const c of changes) {
      if (c.type === 'select') {
        changed = true;
        if (c.selected) sel.add(c.id);
        else sel.delete(c.id);
      }
    }
    if (changed) editor.select(editor.s.selNodes, editor.s.selGroups, [...sel]);
  }, []);

  const isValidConnection = useCallback(
    (c: Connection | Edge) =>
      connectionProblem(editor.s.catalog, ownerOf(), editor.graph, { node: c.source, handle: c.sourceHandle ?? '' }, { node: c.target, handle: c.targetHandle ?? '' }) === null,
    [],
  );

  const onConnect = useCallback((c: Connection) => {
    if (!c.sourceHandle || !c.targetHandle) return;
    editor.connect(c.source, c.sourceHandle.slice(4), c.target, c.targetHandle.slice(3));
    editor.showHint(null);
  }, []);

  const onConnectEnd = useCallback((event: MouseEvent | TouchEvent, st: FinalConnectionState) => {
    const from = connectFrom.current;
    connectFrom.current = null;
    if (st.isValid) return;
    if (st.toHandle && st.fromHandle) {
      const a = { node: st.fromHandle.nodeId, handle: st.fromHandle.id ?? '' };
      const b = { node: st.toHandle.nodeId, handle: st.toHandle.id ?? '' };
      const [src, dst] = st.fromHandle.type === 'source' ? [a, b] : [b, a];
      const why = connectionProblem(editor.s.catalog, ownerOf(), editor.graph, src, dst);
      if (why) editor.showHint(`Cannot connect ${src.node}.${src.handle.replace(/^\w+:/, '')} → ${dst.node}.${dst.handle.replace(/^\w+:/, '')}: ${why}`);
      return;
    }
    if (!st.toHandle && from?.nodeId && from.handleId) {
      // dropped on empty canvas: offer the nodes that can take (or give) this type
      const pt = 'changedTouches' in event ? event.changedTouches[0] : event;
      const target = event.target as HTMLElement | null;
      if (!target?.closest('.react-flow__pane')) return;
      const flow = rf.screenToFlowPosition({ x: pt.clientX, y: pt.clientY });
      const t = handleType(editor.s.catalog, ownerOf(), editor.graph, from.nodeId, from.handleId);
      if (!t) return;
      editor.openDialog({
        kind: 'search', screen: [pt.clientX, pt.clientY], flow: [flow.x, flow.y],
        from: { node: from.nodeId, handle: from.handleId, type: t, dir: from.handleType === 'source' ? 'source' : 'target' },
      });
    }
  }, [rf]);

  const onConnectStart = useCallback((_: unknown, p: OnConnectStartParams) => {
    connectFrom.current = p;
    editor.showHint(null);
  }, []);

  const onReconnect = useCallback((old: Edge, c: Connection) => {
    if (!c.sourceHandle || !c.targetHandle) return;
    editor.edit('Reconnect', (g) => {
      const edges = g.edges.filter((e) => e.id !== old.id && !(e.target === c.target && e.input === c.targetHandle!.slice(3)));
      const id = `${c.source}:${c.sourceHandle!.slice(4)}->${c.target}:${c.targetHandle!.slice(3)}`;
      return { ...g, edges: [...edges, { id, source: c.source, output: c.sourceHandle!.slice(4), target: c.target, input: c.targetHandle!.slice(3) }] };
    });
  }, []);

  const onReconnectEnd = useCallback((_: MouseEvent | TouchEvent, edge: Edge, __: unknown, st: FinalConnectionState) => {
    if (!st.toHandle) editor.disconnect([edge.id]);
  }, []);

  const onNodeDragStart = useCallback((_: unknown, node: Node) => {
    editor.beginGesture();
    if (node.id.startsWith('group:')) {
      const gid = node.id.slice(6);
      const gr = editor.graph.groups.find((x) => x.id === gid);
      if (!gr) return;
      const [x, y, w, h] = gr.rect;
      const members: Record<string, Vec2> = {};
      for (const n of Object.values(editor.graph.nodes)) {
        if (n.pos[0] >= x && n.pos[1] >= y && n.pos[0] < x + w && n.pos[1] < y + h) members[n.id] = n.pos;
      }
      groupDrag.current = { id: gid, start: [gr.rect[0], gr.rect[1]], members };
    }
  }, []);

  const onNodeDragStop = useCallback(() => {
    groupDrag.current = null;
    editor.endGesture('Move');
  }, []);

  const onNodeClick = useCallback((_: unknown, node: Node) => {
    if (node.id.startsWith('group:')) return;
    if (!(node.id in editor.graph.nodes)) return; // a click that opened a loop body lands after the view changed
    const st = editor.s;
    const prefix = st.path.length ? st.path.join('/') + '/' : '';
    const ran = (r?: { runId?: string; status: string }) => !!r?.runId && ['executed', 'cached'].includes(r.status);
    // inside a loop body the nodes have no run state of their own: the loop node's run holds their last iteration
    if (ran(st.run.nodes[prefix + node.id]) || (st.path.length > 0 && ran(st.run.nodes[st.path[0]]))) {
      editor.inspectNode(prefix + node.id);
    }
  }, []);

  const onDoubleClick = useCallback((e: React.MouseEvent) => {
    const t = e.target as HTMLElement;
    if (!t.closest('.react-flow__pane') || t.closest('.react-flow__node')) return;
    const flow = rf.screenToFlowPosition({ x: e.clientX, y: e.clientY });
    editor.openDialog({ kind: 'search', screen: [e.clientX, e.clientY], flow: [flow.x, flow.y] });
  }, [rf]);

  const onDrop = useCallback((e: React.DragEvent) => {
    e.preventDefault();
    const type = e.dataTransfer.getData(NODE_MIME);
    const flow = rf.screenToFlowPosition({ x: e.clientX, y: e.clientY });
    if (type) {
      editor.addNode(type, [flow.x, flow.y]);
      return;
    }
    const file = e.dataTransfer.files?.[0];
    if (file) void editor.openFile(file);
  }, [rf]);

  const onMouseMove = useCallback((e: React.MouseEvent) => {
    const p = rf.screenToFlowPosition({ x: e.clientX, y: e.clientY });
    editor.pointer = [p.x, p.y];
  }, [rf]);

  const many = Object.keys(graph.nodes).length > 150;

  return (
    <div
      className="ll-canvas"
      ref={wrapper}
      onDoubleClick={onDoubleClick}
      onDragOver={(e) => { e.preventDefault(); e.dataTransfer.dropEffect = 'copy'; }}
      onDrop={onDrop}
      onMouseMove={onMouseMove}
      onMouseLeave={() => { editor.pointer = null; }}
      data-testid="canvas"
    >
      <ReactFlow
        nodes={nodes}
        edges={edges}
        nodeTypes={nodeTypes}
        onNodesChange={onNodesChange}
        onEdgesChange={onEdgesChange}
        onConnect={onConnect}
        onConnectStart={onConnectStart}
        onConnectEnd={onConnectEnd}
        isValidConnection={isValidConnection}
        onReconnect={onReconnect}
        onReconnectEnd={onReconnectEnd}
        edgesReconnectable
        onNodeDragStart={onNodeDragStart}
        onNodeDragStop={onNodeDragStop}
        onSelectionDragStart={() => editor.beginGesture()}
        onSelectionDragStop={() => editor.endGesture('Move')}
        onNodeClick={onNodeClick}
        onPaneClick={onPaneClick}
        onNodeContextMenu={onNodeContextMenu}
        onPaneContextMenu={onPaneContextMenu}
        deleteKeyCode={null}
        selectionKeyCode="Shift"
        multiSelectionKeyCode={MULTI_KEYS}
        zoomOnDoubleClick={false}
        onlyRenderVisibleElements={many}
        minZoom={0.1}
        maxZoom={3}
        connectionRadius={24}
        proOptions={PRO}
        colorMode="dark"
        fitView
      >
        <Background variant={BackgroundVariant.Dots} gap={22} size={1.4} color="#2f3542" />
        <MiniMap pannable zoomable nodeColor={minimapColor} nodeStrokeWidth={2} maskColor="rgba(10,12,16,0.72)" className="ll-minimap" />
        <Controls showInteractive={false} onFitView={fitView} />
        <LiveHint />
      </ReactFlow>
      <ConnectionHint />
      {menu ? <ContextMenu menu={menu} close={closeMenu} sizes={sizes} /> : null}
    </div>
  );
}

const MULTI_KEYS = ['Control', 'Meta', 'Shift'];
const PRO = { hideAttribution: true };
const fitView = () => editor.fitView();
const onPaneClick = () => editor.inspectNode(null);

function ownerOf(): string | null {
  return editor.loopOwner;
}

function minimapColor(n: Node): string {
  if (n.type === 'group') return 'rgba(120,140,170,0.25)';
  const g = editor.graph.nodes[n.id];
  if (!g) return '#555';
  const s = editor.s.catalog.schemaFor(g.type, editor.loopOwner);
  const t = s?.outputs[0]?.type;
  return t ? editor.s.catalog.types.color(t) : '#78909c';
}

function ConnectionHint() {
  const hint = useEd((s) => s.hint);
  if (!hint) return null;
  return (
    <div className="ll-hint" role="status" data-testid="connect-hint">
      <span className="ll-hint-icon" aria-hidden>!</span>
      {hint}
      <button type="button" aria-label="dismiss" onClick={() => editor.showHint(null)}>×</button>
    </div>
  );
}

/** While a link is dragged over a socket: what would connect, or why not. */
function LiveHint() {
  const c = useConnection();
  if (!c.inProgress || !c.toHandle || !c.fromHandle || !c.pointer) return null;
  const a = { node: c.fromHandle.nodeId, handle: c.fromHandle.id ?? '' };
  const b = { node: c.toHandle.nodeId, handle: c.toHandle.id ?? '' };
  const [src, dst] = c.fromHandle.type === 'source' ? [a, b] : [b, a];
  const why = connectionProblem(editor.s.catalog, ownerOf(), editor.graph, src, dst);
  const t1 = handleType(editor.s.catalog, ownerOf(), editor.graph, src.node, src.handle);
  const t2 = handleType(editor.s.catalog, ownerOf(), editor.graph, dst.node, dst.handle);
  return (
    <ViewportPortal>
      <div className={'ll-live-hint' + (why ? '' : ' ok')} style={{ position: 'absolute', transform: `translate(${c.pointer.x + 14}px, ${c.pointer.y + 14}px)` }} data-testid="live-hint">
        {why ?? `${t1} → ${t2}`}
      </div>
    </ViewportPortal>
  );
}
