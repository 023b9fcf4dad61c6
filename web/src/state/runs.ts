// What the editor shows about runs, as a pure reducer over the server's WebSocket events: per-node
// status (queued, running, executed, cached, error), progress, images, live previews and errors.

import type { FileRef, GraphErrorInfo, ServerMessage } from '../api/types';

export type NodeRunStatus = 'queued' | 'running' | 'executed' | 'cached' | 'error' | 'interrupted';

export interface NodeRun {
  status: NodeRunStatus;
  /** the run whose cached outputs this node can show */
  runId: string;
  progress?: { value: number; max: number | null };
  /** what a running node says it is doing (e.g. "compiling UNet for 512x512 batch 1"); cleared by the next progress */
  statusText?: string;
  images?: FileRef[];
  text?: string[];
  preview?: string;
  error?: string;
  warning?: string;
  seconds?: number;
}

export type RunPhase = 'idle' | 'queued' | 'running' | 'success' | 'error' | 'interrupted' | 'cancelled';

export interface RunState {
  /** the run this editor submitted last */
  current: string | null;
  phase: RunPhase;
  nodes: Record<string, NodeRun>;
  /** errors of the last failed run or validation, by node id (may be "loop/inner" for body nodes) */
  errors: GraphErrorInfo[];
  message: string | null;
  seconds: number | null;
}

export const initialRunState = (): RunState => ({ current: null, phase: 'idle', nodes: {}, errors: [], message: null, seconds: null });

const str = (x: unknown): string => (typeof x === 'string' ? x : x === null || x === undefined ? '' : String(x));

function put(nodes: Record<string, NodeRun>, id: string, runId: string, patch: Partial<NodeRun>): Record<string, NodeRun> {
  const prev = nodes[id];
  return { ...nodes, [id]: { ...(prev ?? { status: 'queued' }), runId: prev?.runId ?? runId, ...patch } as NodeRun };
}

/** Apply one message. Messages of runs not in `mine` are ignored (another tab's or client's runs). */
export function applyRunEvent(s: RunState, m: ServerMessage, mine: (runId: string) => boolean): RunState {
  const d = m.data ?? {};
  const runId = str(d.run_id);
  if (!runId || !mine(runId)) return s;
  switch (m.type) {
    case 'run_started': {
      const ids = Array.isArray(d.nodes) ? (d.nodes as unknown[]).map(str) : [];
      const nodes = { ...s.nodes };
      for (const id of ids) {
        const prev = nodes[id];
        nodes[id] = { status: 'queued', runId: prev?.runId ?? runId, images: prev?.images, text: prev?.text };
      }
      return { ...s, current: runId, phase: 'running', nodes, errors: [], message: null, seconds: null };
    }
    case 'nodes_cached': {
      let nodes = s.nodes;
      for (const id of Array.isArray(d.nodes) ? (d.nodes as unknown[]).map(str) : []) {
        nodes = put(nodes, id, runId, { status: 'cached', runId, progress: undefined, error: undefined });
      }
      return { ...s, nodes };
    }
    case 'node_started':
      return { ...s, current: runId, phase: 'running', nodes: put(s.nodes, str(d.node_id), runId, { status: 'running', progress: undefined, preview: undefined, error: undefined }) };
    case 'node_progress': {
      const value = Number(d.value);
      const max = d.max === null || d.max === undefined ? null : Number(d.max);
      const statusText = typeof d.text === 'string' && d.text ? d.text : undefined;
      return { ...s, nodes: put(s.nodes, str(d.node_id), runId, { status: 'running', progress: { value, max }, statusText }) };
    }
    case 'node_warning':
      return { ...s, nodes: put(s.nodes, str(d.node_id), runId, { warning: str(d.message) }) };
    case 'node_finished': {
      const ui = (d.ui ?? null) as { images?: FileRef[]; text?: string[] } | null;
      const patch: Partial<NodeRun> = {
        status: d.cached ? 'cached' : 'executed',
        runId,
        progress: undefined,
        statusText: undefined,
        seconds: typeof d.seconds === 'number' ? d.seconds : undefined,
      };
      if (ui?.images) patch.images = ui.images;
      if (ui?.text?.length) patch.text = ui.text;
      if (!d.cached) patch.preview = undefined;
      return { ...s, nodes: put(s.nodes, str(d.node_id), runId, patch) };
    }
    case 'preview':
      return { ...s, nodes: put(s.nodes, str(d.node_id), runId, { preview: str(d.image) }) };
    case 'run_finished':
      return { ...s, phase: 'success', nodes: settle(s.nodes, runId), seconds: typeof d.seconds === 'number' ? d.seconds : null };
    case 'run_failed': {
      const errors = Array.isArray(d.errors) ? (d.errors as GraphErrorInfo[]) : [];
      let nodes = settle(s.nodes, runId);
      const nodeId = d.node_id ? str(d.node_id) : null;
      if (nodeId && !errors.length) nodes = put(nodes, nodeId, runId, { status: 'error', runId, error: str(d.message), progress: undefined });
      const all = errors.length ? errors : nodeId ? [{ node_id: nodeId, input: null, code: str(d.error_type), message: str(d.message) }] : [];
      return { ...s, phase: 'error', nodes, errors: all, message: str(d.message) };
    }
    case 'run_interrupted': {
      let nodes = settle(s.nodes, runId);
      if (d.node_id) nodes = put(nodes, str(d.node_id), runId, { status: 'interrupted', progress: undefined });
      return { ...s, phase: 'interrupted', nodes, message: 'interrupted' };
    }
    default:
      return s;
  }
}

/** After a run ends, nodes still "queued" or "running" in it did not run: drop their status. */
function settle(nodes: Record<string, NodeRun>, runId: string): Record<string, NodeRun> {
  const out: Record<string, NodeRun> = {};
  for (const [id, n] of Object.entries(nodes)) {
    if (n.status === 'queued' || n.status === 'running') {
      if (n.images) out[id] = { ...n, status: 'executed', progress: undefined };
      continue;
    }
    out[id] = n;
  }
  void runId;
  return out;
}

/** The errors that concern the graph level at `path` (loop body node ids are "loop/inner"). */
export function errorsAt(errors: GraphErrorInfo[], path: string[]): Record<string, GraphErrorInfo[]> {
  const prefix = path.length ? path.join('/') + '/' : '';
  const out: Record<string, GraphErrorInfo[]> = {};
  for (const e of errors) {
    if (!e.node_id) continue;
    if (!e.node_id.startsWith(prefix)) continue;
    const rest = e.node_id.slice(prefix.length);
    const id = rest.split('/')[0];
    (out[id] ??= []).push(rest.includes('/') ? { ...e, message: `inside the loop body: ${e.message}`, input: null } : e);
  }
  return out;
}

/** Node run states for the level at `path`; a loop node shows the state of its body's busiest node. */
export function runsAt(nodes: Record<string, NodeRun>, path: string[]): Record<string, NodeRun> {
  const prefix = path.length ? path.join('/') + '/' : '';
  const out: Record<string, NodeRun> = {};
  for (const [full, n] of Object.entries(nodes)) {
    if (!full.startsWith(prefix)) continue;
    const rest = full.slice(prefix.length);
    if (!rest.includes('/')) out[rest] = { ...(out[rest] ?? {}), ...n };
  }
  return out;
}
