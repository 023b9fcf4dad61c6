// Values derived from the editor state, memoised on the identity of their inputs so that selectors
// used with useSyncExternalStore return stable objects.

import type { GraphErrorInfo } from '../api/types';
import { graphAt, type Graph } from '../model/graph';
import type { EditorState } from './editor';
import { errorsAt, type NodeRun, runsAt } from './runs';

function memo<A extends unknown[], R>(fn: (...a: A) => R): (...a: A) => R {
  let last: A | null = null;
  let value: R;
  return (...a: A) => {
    if (last && last.length === a.length && last.every((x, i) => x === a[i])) return value;
    last = a;
    value = fn(...a);
    return value;
  };
}

const errorsMemo = memo((validation: GraphErrorInfo[], run: GraphErrorInfo[], path: string[]) =>
  errorsAt([...validation, ...run], path),
);
export const nodeErrors = (s: EditorState): Record<string, GraphErrorInfo[]> => errorsMemo(s.validation, s.run.errors, s.path);

const runsMemo = memo((nodes: Record<string, NodeRun>, path: string[]) => runsAt(nodes, path));
export const nodeRuns = (s: EditorState): Record<string, NodeRun> => runsMemo(s.run.nodes, s.path);

export const currentGraph = (s: EditorState): Graph => graphAt(s.doc, s.path) ?? s.doc.root;

const loopOwnerMemo = memo((root: Graph, path: string[]) => {
  if (!path.length) return null;
  const parent = graphAt({ root, settings: {}, version: 1 }, path.slice(0, -1));
  return parent?.nodes[path[path.length - 1]]?.type ?? null;
});
export const loopOwner = (s: EditorState): string | null => loopOwnerMemo(s.doc.root, s.path);

const linkedMemo = memo((edges: Graph['edges']) => {
  const by: Record<string, string[]> = {};
  for (const e of edges) (by[e.target] ??= []).push(e.input);
  const out: Record<string, string> = {};
  for (const [id, list] of Object.entries(by)) out[id] = list.sort().join(',');
  return out;
});

/** "a,b,c": the inputs of `id` that have a link, as a string (stable for selectors); O(1) per node. */
export function linkedInputs(g: Graph, id: string): string {
  return linkedMemo(g.edges)[id] ?? '';
}
