// The editor's state and every action on it. The graph document is immutable; each edit goes through
// `edit()`, which records the previous document on the undo stack, marks the work unsaved and keeps a
// copy in localStorage. Run state comes from the server's events (state/runs.ts).

import { ApiError, api } from '../api/client';
import type { GraphErrorInfo, LibraryItem, RunRecord, RunSummary, ServerMessage, Workflow } from '../api/types';
import { type ConnState, ServerSocket } from '../api/ws';
import { NodeCatalog } from '../model/catalog';
import { WorkflowFormatError, docToWorkflow, workflowToDoc } from '../model/convert';
import {
  type Doc, type Fragment, type GNode, type Graph, type GraphPath, type Vec2,
  connect, emptyDoc, extractFragment, freshGroupId, freshId, graphAt, insertFragment, isFragment,
  moveNodes, patchNode, removeEdges, removeNodes, setValue, updateGraphAt,
} from '../model/graph';
import { ImportError, importJson, importPngText, type Imported } from '../model/importer';
import { isPng, readPngText } from '../model/png';
import { UndoStack } from '../model/undo';
import { clearSaved, loadSaved, readClipboard, storeSaved, writeClipboard } from './persist';
import { type RunState, applyRunEvent, initialRunState } from './runs';
import { Store } from './store';

export type Panel = 'queue' | 'history' | 'gallery' | 'inspect';

export type Dialog =
  | { kind: 'search'; screen: Vec2; flow: Vec2; from?: { node: string; handle: string; type: string; dir: 'source' | 'target' } }
  | { kind: 'library' }
  | { kind: 'help' }
  | { kind: 'saveAs' }
  | { kind: 'lightbox'; src: string; title?: string };

export interface Toast {
  id: number;
  kind: 'info' | 'error' | 'success';
  text: string;
}

export interface FileInfo {
  path: string | null;
  source: 'user' | 'builtin' | null;
}

export interface EditorState {
  catalog: NodeCatalog;
  catalogStatus: 'loading' | 'ready' | 'error';
  doc: Doc;
  path: GraphPath;
  file: FileInfo;
  dirty: boolean;
  selNodes: string[];
  selGroups: string[];
  selEdges: string[];
  canUndo: boolean;
  canRedo: boolean;
  run: RunState;
  /** errors of the last validation of the loaded workflow */
  validation: GraphErrorInfo[];
  conn: ConnState;
  connRetryMs: number | null;
  queue: { running: RunSummary[]; pending: RunSummary[] };
  panel: Panel | null;
  inspect: string | null;
  historyVersion: number;
  toasts: Toast[];
  hint: string | null;
  dialog: Dialog | null;
  palette: boolean;
  advanced: Record<string, boolean>;
  /** bumped to ask the canvas to fit the view */
  fitRequest: number;
}

function clientId(): string {
  const k = 'latentloom.client';
  try {
    const have = sessionStorage.getItem(k);
    if (have) return have;
    const id = uid();
    sessionStorage.setItem(k, id);
    return id;
  } catch {
    return uid();
  }
}

export function uid(): string {
  if (typeof crypto !== 'undefined' && 'randomUUID' in crypto) return crypto.randomUUID().replace(/-/g, '');
  return Math.random().toString(16).slice(2) + Date.now().toString(16);
}

const DEFAULT_WORKFLOWS = ['default.json', 'txt2img.json', 'image-basics.json'];

export class Editor {
  readonly store: Store<EditorState>;
  readonly undo = new UndoStack<Doc>(300);
  readonly clientId = clientId();
  private readonly myRuns = new Set<string>();
  private socket: ServerSocket | null = null;
  private gestureBefore: Doc | null = null;
  private toastSeq = 0;
  private hintTimer: ReturnType<typeof setTimeout> | null = null;
  private persistTimer: ReturnType<typeof setTimeout> | null = null;
  private queueTimer: ReturnType<typeof setTimeout> | null = null;
  /** where the pointer was last seen on the canvas (flow coordinates): where pastes land */
  pointer: Vec2 | null = null;
  /** the canvas' view centre in flow coordinates (set by the canvas) */
  viewCenter: () => Vec2 = () => [200, 200];

  constructor() {
    this.store = new Store<EditorState>({
      catalog: NodeCatalog.empty(),
      catalogStatus: 'loading',
      doc: emptyDoc(),
      path: [],
      file: { path: null, source: null },
      dirty: false,
      selNodes: [],
      selGroups: [],
      selEdges: [],
      canUndo: false,
      canRedo: false,
      run: initialRunState(),
      validation: [],
      conn: 'connecting',
      connRetryMs: null,
      queue: { running: [], pending: [] },
      panel: null,
      inspect: null,
      historyVersion: 0,
      toasts: [],
      hint: null,
      dialog: null,
      palette: true,
      advanced: {},
      fitRequest: 0,
    });
  }

  get s(): EditorState {
    return this.store.get();
  }

  /** The graph level being edited. */
  get graph(): Graph {
    return graphAt(this.s.doc, this.s.path) ?? this.s.doc.root;
  }

  /** The loop node type owning the level being edited (null at the root). */
  get loopOwner(): string | null {
    const p = this.s.path;
    if (!p.length) return null;
    const parent = graphAt(this.s.doc, p.slice(0, -1));
    return parent?.nodes[p[p.length - 1]]?.type ?? null;
  }

  // ---- start-up -----------------------------------------------------------------------------------

  async start(): Promise<void> {
    this.socket = new ServerSocket({
      clientId: this.clientId,
      onMessage: (m) => this.onMessage(m),
      onState: (conn, detail) => {
        const was = this.s.conn;
        this.store.set({ conn, connRetryMs: detail?.retryInMs ?? null });
        if (conn === 'open' && was === 'closed') {
          this.toast('success', 'Connected to the server again');
          if (this.s.catalogStatus !== 'ready') void this.loadCatalog();
          this.refreshQueue();
          void this.settleRun();
        }
      },
    });
    this.socket.start();
    await this.loadCatalog();
    const saved = loadSaved();
    if (saved) {
      try {
        const doc = workflowToDoc(saved.workflow);
        this.store.set({ doc, file: saved.file ?? { path: null, source: null }, dirty: !!saved.dirty });
        const path = (saved.path ?? []).filter((_, i, a) => graphAt(doc, a.slice(0, i + 1)) !== null);
        this.store.set({ path, fitRequest: this.s.fitRequest + 1 });
        void this.validate();
        return;
      } catch {
        clearSaved();
      }
    }
    await this.loadDefault();
  }

  reconnect(): void {
    this.socket?.reconnect();
    if (this.s.catalogStatus !== 'ready') void this.loadCatalog();
  }

  async loadCatalog(): Promise<void> {
    try {
      const raw = await api.catalog();
      this.store.set({ catalog: new NodeCatalog(raw), catalogStatus: 'ready' });
    } catch (e) {
      this.store.set({ catalogStatus: 'error' });
      this.toast('error', `Cannot load the node catalog: ${(e as Error).message}`);
    }
  }

  async loadDefault(): Promise<void> {
    try {
      const { items } = await api.library();
      const builtin = items.filter((i) => i.source === 'builtin');
      const pick = DEFAULT_WORKFLOWS.map((n) => builtin.find((i) => i.path === n)).find(Boolean) ?? builtin[0] ?? items[0];
      if (!pick) {
        this.newWorkflow();
        return;
      }
      await this.openFromLibrary(pick, false);
    } catch (e) {
      this.toast('error', `Cannot load the default workflow: ${(e as Error).message}`);
    }
  }

  // ---- document edits -----------------------------------------------------------------------------

  private commit(doc: Doc, patch: Partial<EditorState> = {}): void {
    this.store.set({ doc, dirty: true, canUndo: this.undo.canUndo, canRedo: this.undo.canRedo, ...patch });
    this.schedulePersist();
    // problems are marked on the nodes: check again once the user has changed something
    if (this.s.validation.length) this.scheduleValidate();
  }

  private validateTimer: ReturnType<typeof setTimeout> | null = null;

  private scheduleValidate(): void {
    if (this.validateTimer) clearTimeout(this.validateTimer);
    this.validateTimer = setTimeout(() => {
      this.validateTimer = null;
      void this.validate(false);
    }, 600);
  }

  /** Edit the graph level being shown; `mergeKey` folds repeated edits (typing) into one undo step. */
  edit(label: string, fn: (g: Graph) => Graph, mergeKey: string | null = null, patch: Partial<EditorState> = {}): void {
    const before = this.s.doc;
    const doc = updateGraphAt(before, this.s.path, fn);
    if (doc.root === before.root && !Object.keys(patch).length) return;
    if (!this.gestureBefore) this.undo.record(before, label, mergeKey);
    this.commit(doc, patch);
  }

  /** Start a gesture (drag, resize): edits until `endGesture` make one undo step. */
  beginGesture(): void {
    if (!this.gestureBefore) this.gestureBefore = this.s.doc;
  }

  endGesture(label: string): void {
    const before = this.gestureBefore;
    this.gestureBefore = null;
    if (before && before !== this.s.doc) {
      this.undo.record(before, label);
      this.store.set({ canUndo: this.undo.canUndo, canRedo: this.undo.canRedo });
    }
  }

  sealUndo(): void {
    this.undo.seal();
  }

  doUndo(): void {
    const prev = this.undo.undo(this.s.doc);
    if (prev) this.restore(prev);
  }

  doRedo(): void {
    const next = this.undo.redo(this.s.doc);
    if (next) this.restore(next);
  }

  private restore(doc: Doc): void {
    let path = this.s.path;
    while (path.length && !graphAt(doc, path)) path = path.slice(0, -1);
    const g = graphAt(doc, path) ?? doc.root;
    this.commit(doc, {
      path,
      selNodes: this.s.selNodes.filter((id) => g.nodes[id]),
      selGroups: this.s.selGroups.filter((id) => g.groups.some((gr) => gr.id === id)),
      selEdges: [],
    });
  }

  addNode(type: string, pos: Vec2): string | null {
    const schema = this.s.catalog.schemaFor(type, this.loopOwner);
    if (!schema) return null;
    const id = freshId(this.graph, schema.name.replace(/^(Load|Primitive)/, '') || schema.name);
    const node = this.s.catalog.newNode(schema.name, id, [Math.round(pos[0]), Math.round(pos[1])]);
    this.edit(`Add ${schema.display_name}`, (g) => ({ ...g, nodes: { ...g.nodes, [id]: node } }), null, {
      selNodes: [id], selGroups: [], selEdges: [],
    });
    return id;
  }

  setValue(nodeId: string, input: string, value: unknown): void {
    this.edit('Change value', (g) => setValue(g, nodeId, input, value), `value:${this.s.path.join('/')}:${nodeId}:${input}`);
  }

  patchNode(nodeId: string, patch: Partial<GNode>, label: string): void {
    this.edit(label, (g) => patchNode(g, nodeId, patch));
  }

  setNodeUi(nodeId: string, key: string, value: unknown, label: string): void {
    this.edit(label, (g) => {
      const n = g.nodes[nodeId];
      return n ? patchNode(g, nodeId, { ui: { ...n.ui, [key]: value } }) : g;
    });
  }

  moveLive(moves: Record<string, Vec2>): void {
    this.edit('Move', (g) => moveNodes(g, moves), 'move');
  }

  connect(source: string, output: string, target: string, input: string): void {
    this.edit('Connect', (g) => connect(g, source, output, target, input), null, { selEdges: [] });
  }

  disconnect(edgeIds: string[]): void {
    this.edit('Disconnect', (g) => removeEdges(g, edgeIds));
  }

  removeOuterLink(nodeId: string, input: string): void {
    this.edit('Disconnect', (g) => {
      const n = g.nodes[nodeId];
      if (!n?.outerLinks) return g;
      const rest = { ...n.outerLinks };
      delete rest[input];
      return patchNode(g, nodeId, { outerLinks: Object.keys(rest).length ? rest : undefined });
    });
  }

  select(nodes: string[], groups: string[] = [], edges: string[] = []): void {
    const s = this.s;
    if (same(s.selNodes, nodes) && same(s.selGroups, groups) && same(s.selEdges, edges)) return;
    this.store.set({ selNodes: nodes, selGroups: groups, selEdges: edges });
  }

  selectAll(): void {
    const g = this.graph;
    this.select(Object.keys(g.nodes), g.groups.map((x) => x.id), []);
  }

  deleteSelection(): void {
    const { selNodes, selGroups, selEdges } = this.s;
    if (!selNodes.length && !selGroups.length && !selEdges.length) return;
    const n = selNodes.length;
    this.edit(n ? `Delete ${n} node${n > 1 ? 's' : ''}` : 'Delete', (g) => {
      let out = removeEdges(g, selEdges);
      out = removeNodes(out, selNodes);
      if (selGroups.length) out = { ...out, groups: out.groups.filter((gr) => !selGroups.includes(gr.id)) };
      return out;
    }, null, { selNodes: [], selGroups: [], selEdges: [] });
  }

  private fragment(): Fragment {
    return extractFragment(this.graph, this.s.selNodes, this.s.selGroups);
  }

  copy(): boolean {
    const frag = this.fragment();
    if (!frag.nodes.length && !frag.groups.length) return false;
    const text = JSON.stringify(frag);
    writeClipboard(text);
    try {
      void navigator.clipboard?.writeText(text).catch(() => undefined);
    } catch {
      /* not allowed here: the tab-shared clipboard still has it */
    }
    this.toast('info', `Copied ${frag.nodes.length} node${frag.nodes.length === 1 ? '' : 's'}`);
    return true;
  }

  cut(): void {
    if (this.copy()) this.deleteSelection();
  }

  /** Paste a fragment from `text` (or the tab-shared clipboard) at the pointer. */
  paste(text?: string | null): boolean {
    const raw = text ?? readClipboard();
    if (!raw) return false;
    let frag: unknown;
    try {
      frag = JSON.parse(raw);
    } catch {
      return false;
    }
    if (!isFragment(frag)) return false;
    const at = this.pointer ?? this.viewCenter();
    this.insert(frag, { at }, 'Paste');
    return true;
  }

  duplicate(): void {
    const frag = this.fragment();
    if (!frag.nodes.length) return;
    this.insert(frag, { offset: [40, 40] }, 'Duplicate');
  }

  private insert(frag: Fragment, place: { at?: Vec2; offset?: Vec2 }, label: string): void {
    let ids: string[] = [];
    let groupIds: string[] = [];
    this.edit(label, (g) => {
      const r = insertFragment(g, frag, place);
      ids = r.ids;
      groupIds = r.groupIds;
      return r.graph;
    });
    this.store.set({ selNodes: ids, selGroups: groupIds, selEdges: [] });
  }

  toggleBypass(): void {
    const ids = this.s.selNodes;
    if (!ids.length) return;
    const g = this.graph;
    const on = !ids.every((id) => g.nodes[id]?.bypass);
    this.edit(on ? 'Bypass' : 'Un-bypass', (gr) => ids.reduce((acc, id) => patchNode(acc, id, { bypass: on }), gr));
  }

  toggleCollapse(ids = this.s.selNodes): void {
    if (!ids.length) return;
    const g = this.graph;
    const on = !ids.every((id) => g.nodes[id]?.collapsed);
    this.edit(on ? 'Collapse' : 'Expand', (gr) => ids.reduce((acc, id) => patchNode(acc, id, { collapsed: on || undefined }), gr));
  }

  /** Put a group around the selected nodes (sizes from the canvas' measurements). */
  groupSelection(sizes: Record<string, Vec2>): void {
    const g = this.graph;
    const ids = this.s.selNodes.filter((id) => g.nodes[id]);
    if (!ids.length) return;
    const pad = 30;
    const xs = ids.map((id) => g.nodes[id].pos[0]);
    const ys = ids.map((id) => g.nodes[id].pos[1]);
    const xe = ids.map((id) => g.nodes[id].pos[0] + (sizes[id]?.[0] ?? 240));
    const ye = ids.map((id) => g.nodes[id].pos[1] + (sizes[id]?.[1] ?? 120));
    const x = Math.min(...xs) - pad;
    const y = Math.min(...ys) - pad - 24;
    const rect: [number, number, number, number] = [x, y, Math.max(...xe) + pad - x, Math.max(...ye) + pad - y];
    const id = freshGroupId(g.groups);
    this.edit('Group', (gr) => ({ ...gr, groups: [...gr.groups, { id, title: 'Group', rect }] }), null, { selGroups: [id] });
  }

  patchGroup(id: string, patch: { title?: string; rect?: [number, number, number, number]; color?: string }, label = 'Edit group', mergeKey: string | null = null): void {
    this.edit(label, (g) => ({ ...g, groups: g.groups.map((gr) => (gr.id === id ? { ...gr, ...patch } : gr)) }), mergeKey);
  }

  // ---- sub-graphs ---------------------------------------------------------------------------------

  openBody(nodeId: string): void {
    const g = this.graph;
    const n = g.nodes[nodeId];
    if (!n) return;
    const body = this.s.catalog.bodyOf(n);
    if (!body) {
      this.toast('error', `${n.type} is not a loop node: it has no body`);
      return;
    }
    if (!n.body) {
      const doc = updateGraphAt(this.s.doc, this.s.path, (gr) => patchNode(gr, nodeId, { body }));
      this.store.set({ doc });
    }
    this.store.set({ path: [...this.s.path, nodeId], selNodes: [], selGroups: [], selEdges: [], fitRequest: this.s.fitRequest + 1, inspect: null });
    this.schedulePersist();
  }

  leaveBody(depth = this.s.path.length - 1): void {
    if (!this.s.path.length) return;
    const path = this.s.path.slice(0, Math.max(0, depth));
    const left = this.s.path[path.length];
    this.store.set({ path, selNodes: left ? [left] : [], selGroups: [], selEdges: [], fitRequest: this.s.fitRequest + 1 });
    this.schedulePersist();
  }

  // ---- workflows ----------------------------------------------------------------------------------

  workflow(): Workflow {
    return docToWorkflow(this.s.doc);
  }

  /** Replace the document (undoable), reset the view and validate it against the server. */
  loadWorkflow(raw: unknown, file: FileInfo, opts: { dirty?: boolean; warnings?: string[] } = {}): boolean {
    let doc: Doc;
    try {
      doc = workflowToDoc(raw);
    } catch (e) {
      if (e instanceof WorkflowFormatError) {
        this.toast('error', `Cannot open this workflow: ${e.message}`);
        return false;
      }
      throw e;
    }
    if (Object.keys(this.s.doc.root.nodes).length) this.undo.record(this.s.doc, 'Open workflow');
    this.commit(doc, {
      path: [], file, dirty: opts.dirty ?? false, selNodes: [], selGroups: [], selEdges: [],
      run: initialRunState(), validation: [], inspect: null, fitRequest: this.s.fitRequest + 1,
    });
    for (const w of opts.warnings ?? []) this.toast('error', w);
    void this.validate();
    return true;
  }

  newWorkflow(): void {
    if (Object.keys(this.s.doc.root.nodes).length) this.undo.record(this.s.doc, 'New workflow');
    this.commit(emptyDoc(), { path: [], file: { path: null, source: null }, dirty: false, run: initialRunState(), validation: [], selNodes: [], inspect: null });
  }

  async validate(announce = true): Promise<GraphErrorInfo[]> {
    try {
      const r = await api.validate(this.workflow());
      this.store.set({ validation: r.errors ?? [] });
      const nodeErrs = (r.errors ?? []).filter((e) => e.code !== 'no_output');
      if (nodeErrs.length && announce) this.toast('error', `This workflow has ${nodeErrs.length} problem${nodeErrs.length > 1 ? 's' : ''}: the nodes at fault are marked`);
      return r.errors ?? [];
    } catch (e) {
      if (e instanceof ApiError && e.errors.length) {
        this.store.set({ validation: e.errors });
        return e.errors;
      }
      if (e instanceof ApiError && e.status >= 400) {
        const err = { node_id: null, input: null, code: 'invalid_workflow', message: e.message };
        this.store.set({ validation: [err] });
        return [err];
      }
      return [];
    }
  }

  async openFromLibrary(item: LibraryItem, undoable = true): Promise<void> {
    try {
      const data = await api.loadWorkflow(item.path);
      if (!undoable) this.undo.clear();
      this.loadWorkflow(data, { path: item.path, source: item.source });
      this.store.set({ dialog: null, canUndo: this.undo.canUndo });
    } catch (e) {
      this.toast('error', `Cannot open ${item.path}: ${(e as Error).message}`);
    }
  }

  async save(asPath?: string): Promise<boolean> {
    let path = asPath ?? (this.s.file.source === 'user' ? this.s.file.path : null);
    if (!path) {
      this.store.set({ dialog: { kind: 'saveAs' } });
      return false;
    }
    if (!path.toLowerCase().endsWith('.json')) path += '.json';
    try {
      const r = await api.saveWorkflow(path, this.workflow());
      this.store.set({ file: { path: r.path ?? path, source: 'user' }, dirty: false, dialog: null });
      this.schedulePersist();
      this.toast('success', `Saved ${r.path ?? path}`);
      return true;
    } catch (e) {
      this.toast('error', `Cannot save: ${(e as Error).message}`);
      return false;
    }
  }

  download(): void {
    const blob = new Blob([JSON.stringify(this.workflow(), null, 2) + '\n'], { type: 'application/json' });
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = (this.s.file.path?.split('/').pop() ?? 'workflow.json').replace(/\.json$/i, '') + '.json';
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }

  /** A ComfyUI file opens as the server translates it for running: an API prompt (input renames, sampler names,
   * output indices; the local translation gives the positions), or an editor (LiteGraph) workflow (rebuilt into its
   * prompt by ComfyUI's widget order; the server keeps the positions). The local translation (class names only) is
   * kept if the server refuses, with its message as a warning. */
  async serverTranslation(imp: Imported): Promise<Imported> {
    if (imp.origin === 'comfyui' && imp.litegraph) {
      try {
        const { workflow, warnings } = await api.fromComfyWorkflow(imp.litegraph);
        return { ...imp, workflow, warnings: warnings ?? [] };
      } catch (e) {
        return { ...imp, warnings: [...imp.warnings, `the server could not translate this ComfyUI workflow (${(e as Error).message}); opened with class names only`] };
      }
    }
    if (imp.origin !== 'comfyui-api' || !imp.prompt) return imp;
    try {
      const { workflow } = await api.fromComfy(imp.prompt);
      for (const [id, n] of Object.entries(workflow.nodes)) {
        const pos = imp.workflow.nodes[id]?.ui?.pos;
        if (pos) n.ui = { ...(n.ui ?? {}), pos };
      }
      return { ...imp, workflow: { ...workflow, ui: { ...(imp.workflow.ui ?? {}), ...(workflow.ui ?? {}) } }, warnings: [] };
    } catch (e) {
      return { ...imp, warnings: [...imp.warnings, `the server could not translate this ComfyUI prompt (${(e as Error).message}); opened with class names only`] };
    }
  }

  /** Open a dropped or chosen file: our JSON, ComfyUI JSON (API or editor), or a PNG with a workflow. */
  async openFile(file: File): Promise<void> {
    try {
      const bytes = new Uint8Array(await file.arrayBuffer());
      const imp = await this.serverTranslation(isPng(bytes)
        ? importPngText(await readPngText(bytes), this.s.catalog)
        : importJson(JSON.parse(new TextDecoder().decode(bytes)), this.s.catalog));
      const name = file.name.replace(/\.(png|json)$/i, '') + '.json';
      if (this.loadWorkflow(imp.workflow, { path: imp.origin === 'latentloom' && !isPng(bytes) ? name : null, source: null }, { dirty: true, warnings: imp.warnings })) {
        this.toast('success', `Opened ${file.name}${imp.origin !== 'latentloom' ? ' (imported from ComfyUI)' : ''}`);
      }
    } catch (e) {
      const msg = e instanceof ImportError || e instanceof SyntaxError ? e.message : (e as Error).message;
      this.toast('error', `Cannot open ${file.name}: ${msg}`);
    }
  }

  /** Text pasted from the system clipboard: a fragment, or a whole workflow (ours or ComfyUI's). */
  pasteText(text: string): boolean {
    if (this.paste(text)) return true;
    try {
      const data = JSON.parse(text);
      const imp = importJson(data, this.s.catalog);
      if (imp.origin !== 'latentloom') {
        void this.serverTranslation(imp).then((t) => this.loadWorkflow(t.workflow, { path: null, source: null }, { dirty: true, warnings: t.warnings }));
        return true;
      }
      return this.loadWorkflow(imp.workflow, { path: null, source: null }, { dirty: true, warnings: imp.warnings });
    } catch {
      return false;
    }
  }

  // ---- running ------------------------------------------------------------------------------------

  async run(): Promise<void> {
    const runId = uid();
    this.myRuns.add(runId);
    const wf = this.workflow();
    this.store.set({ run: { ...this.s.run, current: runId, phase: 'queued', errors: [], message: null }, validation: [] });
    try {
      await api.run(wf, this.clientId, runId);
      this.afterQueued();
      this.refreshQueue();
    } catch (e) {
      const errors = e instanceof ApiError ? e.errors : [];
      const message = (e as Error).message;
      // a refused workflow: its problems are validation problems, marked until they are fixed
      this.store.set({
        run: { ...this.s.run, phase: 'error', errors: errors.length ? [] : [{ node_id: null, input: null, code: 'error', message }], message },
        validation: errors,
      });
      this.toast('error', errors.length ? `The workflow is not valid: ${errors.length} problem${errors.length > 1 ? 's' : ''}, marked on the nodes` : `Cannot run: ${message}`);
    }
  }

  /** Seeds set to increment or randomize change after each queued run (as in ComfyUI). */
  private afterQueued(): void {
    const rec = (g: Graph): Graph => {
      let out = g;
      for (const n of Object.values(g.nodes)) {
        const ctl = n.ui.seed_control as Record<string, string> | undefined;
        if (ctl) {
          for (const [input, mode] of Object.entries(ctl)) {
            const schema = this.s.catalog.resolve(n.type)?.inputs.find((i) => i.name === input);
            const max = Math.min(schema?.max ?? Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
            const min = schema?.min ?? 0;
            const v = Number(n.values[input] ?? 0);
            if (mode === 'increment') out = setValue(out, n.id, input, v + 1 > max ? min : v + 1);
            else if (mode === 'decrement') out = setValue(out, n.id, input, v - 1 < min ? max : v - 1);
            else if (mode === 'randomize') out = setValue(out, n.id, input, Math.floor(min + Math.random() * Math.min(max - min, 2 ** 50)));
          }
        }
        if (n.body) {
          const b = rec(n.body);
          if (b !== n.body) out = patchNode(out, n.id, { body: b });
        }
      }
      return out;
    };
    const root = rec(this.s.doc.root);
    if (root !== this.s.doc.root) this.commit({ ...this.s.doc, root });
  }

  async interrupt(): Promise<void> {
    try {
      await api.interrupt(this.s.run.current ?? undefined);
    } catch (e) {
      this.toast('error', `Cannot interrupt: ${(e as Error).message}`);
    }
  }

  private onMessage(m: ServerMessage): void {
    if (m.type === 'status') {
      this.refreshQueue();
      return;
    }
    const before = this.s.run;
    const run = applyRunEvent(before, m, (id) => this.myRuns.has(id));
    if (run === before) return;
    this.store.set({ run });
    if (m.type === 'run_finished' || m.type === 'run_failed' || m.type === 'run_interrupted') {
      this.store.set({ historyVersion: this.s.historyVersion + 1 });
      this.refreshQueue();
      if (m.type === 'run_failed') this.toast('error', `Run failed: ${run.message}`);
    }
  }

  /** After a lost connection: events of the current run may have been missed; ask for its record. */
  async settleRun(): Promise<void> {
    const { current, phase } = this.s.run;
    if (!current || (phase !== 'running' && phase !== 'queued')) return;
    try {
      const rec = await api.getRun(current);
      if (rec.status === 'queued' || rec.status === 'running') return;
      const nodes = { ...this.s.run.nodes };
      for (const [id, n] of Object.entries(rec.nodes ?? {})) {
        const images = rec.outputs?.[id]?.images ?? nodes[id]?.images;
        nodes[id] = { ...(nodes[id] ?? {}), status: n.cached ? 'cached' : n.status === 'error' ? 'error' : 'executed', runId: current, images, progress: undefined };
      }
      const phaseNow = rec.status === 'success' ? 'success' : rec.status === 'error' ? 'error' : rec.status === 'cancelled' ? 'cancelled' : 'interrupted';
      const errors = rec.error ? [{ node_id: rec.error.node_id, input: null, code: rec.error.error_type, message: rec.error.message }] : [];
      this.store.set({ run: { ...this.s.run, phase: phaseNow, nodes, errors, message: rec.error?.message ?? null }, historyVersion: this.s.historyVersion + 1 });
    } catch {
      /* the run is unknown to the server (restarted): leave the state as it is */
    }
  }

  refreshQueue(): void {
    if (this.queueTimer) return;
    this.queueTimer = setTimeout(async () => {
      this.queueTimer = null;
      try {
        this.store.set({ queue: await api.queue() });
      } catch {
        /* the banner shows a lost connection */
      }
    }, 150);
  }

  async loadRunWorkflow(rec: RunRecord): Promise<void> {
    try {
      const full = rec.workflow ? rec : await api.getRun(rec.run_id);
      if (!full.workflow) throw new Error('the run has no workflow');
      if (this.loadWorkflow(full.workflow, { path: null, source: null }, { dirty: true })) this.toast('info', `Loaded the workflow of run #${full.number}`);
    } catch (e) {
      this.toast('error', `Cannot load that run's workflow: ${(e as Error).message}`);
    }
  }

  // ---- view state ---------------------------------------------------------------------------------

  toast(kind: Toast['kind'], text: string): void {
    const id = ++this.toastSeq;
    this.store.set({ toasts: [...this.s.toasts.filter((t) => t.text !== text).slice(-4), { id, kind, text }] });
    setTimeout(() => this.store.set({ toasts: this.s.toasts.filter((t) => t.id !== id) }), kind === 'error' ? 8000 : 3500);
  }

  dismissToast(id: number): void {
    this.store.set({ toasts: this.s.toasts.filter((t) => t.id !== id) });
  }

  showHint(text: string | null, ms = 5000): void {
    if (this.hintTimer) clearTimeout(this.hintTimer);
    this.store.set({ hint: text });
    if (text) this.hintTimer = setTimeout(() => this.store.set({ hint: null }), ms);
  }

  openDialog(d: Dialog | null): void {
    this.store.set({ dialog: d });
  }

  togglePanel(p: Panel): void {
    this.store.set({ panel: this.s.panel === p ? null : p });
  }

  inspectNode(id: string | null): void {
    this.store.set({ inspect: id, panel: id ? 'inspect' : this.s.panel === 'inspect' ? null : this.s.panel });
  }

  fitView(): void {
    this.store.set({ fitRequest: this.s.fitRequest + 1 });
  }

  private schedulePersist(): void {
    if (this.persistTimer) clearTimeout(this.persistTimer);
    this.persistTimer = setTimeout(() => this.persistNow(), 250);
  }

  persistNow(): void {
    if (this.persistTimer) clearTimeout(this.persistTimer);
    this.persistTimer = null;
    storeSaved({ workflow: this.workflow(), path: this.s.path, file: this.s.file, dirty: this.s.dirty });
  }
}

function same(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export const editor = new Editor();
