// The editor's command layer: every edit is one undo step (typing and dragging fold into one).
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { NodeCatalog } from '../src/model/catalog';
import { importJson } from '../src/model/importer';
import { Editor } from '../src/state/editor';
import { catalog } from './fixtures';

let ed: Editor;
beforeEach(() => {
  ed = new Editor();
  ed.store.set({ catalog: new NodeCatalog(catalog), catalogStatus: 'ready' });
  ed.toast = () => undefined;
});

describe('editor commands and undo', () => {
  it('adds, connects, edits and undoes each step', () => {
    const a = ed.addNode('LoadImage', [0, 0])!;
    const b = ed.addNode('ImageBlur', [300, 0])!;
    ed.connect(a, 'image', b, 'image');
    expect(ed.graph.edges).toHaveLength(1);
    ed.doUndo();
    expect(ed.graph.edges).toHaveLength(0);
    ed.doUndo();
    expect(ed.graph.nodes[b]).toBeUndefined();
    ed.doRedo();
    ed.doRedo();
    expect(ed.graph.edges).toHaveLength(1);
    expect(ed.s.canRedo).toBe(false);
  });

  it('folds typing in one widget into one undo step', () => {
    const b = ed.addNode('ImageBlur', [0, 0])!;
    for (const v of [3, 4, 5, 6]) ed.setValue(b, 'radius', v);
    expect(ed.graph.nodes[b].values.radius).toBe(6);
    ed.doUndo();
    expect(ed.graph.nodes[b].values.radius).toBe(2);
  });

  it('a drag gesture is one undo step', () => {
    const b = ed.addNode('ImageBlur', [0, 0])!;
    ed.beginGesture();
    for (let x = 1; x <= 10; x++) ed.moveLive({ [b]: [x * 10, 0] });
    ed.endGesture('Move');
    expect(ed.graph.nodes[b].pos).toEqual([100, 0]);
    ed.doUndo();
    expect(ed.graph.nodes[b].pos).toEqual([0, 0]);
  });

  it('duplicates, deletes, bypasses and groups the selection', () => {
    const a = ed.addNode('LoadImage', [0, 0])!;
    const b = ed.addNode('ImageBlur', [300, 0])!;
    ed.connect(a, 'image', b, 'image');
    ed.select([a, b]);
    ed.duplicate();
    expect(Object.keys(ed.graph.nodes)).toHaveLength(4);
    expect(ed.graph.edges).toHaveLength(2);
    expect(ed.s.selNodes).toHaveLength(2);
    ed.toggleBypass();
    expect(ed.s.selNodes.every((id) => ed.graph.nodes[id].bypass)).toBe(true);
    ed.groupSelection({});
    expect(ed.graph.groups).toHaveLength(1);
    ed.select(ed.s.selNodes);
    ed.deleteSelection();
    expect(Object.keys(ed.graph.nodes).sort()).toEqual([a, b].sort());
    ed.doUndo();
    expect(Object.keys(ed.graph.nodes)).toHaveLength(4);
  });

  it('edits a loop body as a sub-graph and returns', () => {
    const d = ed.addNode('Denoise', [0, 0])!;
    ed.openBody(d);
    expect(ed.s.path).toEqual([d]);
    expect(Object.keys(ed.graph.nodes).sort()).toEqual(['in', 'out']);
    expect(ed.loopOwner).toBe('Denoise');
    const inner = ed.addNode('ImageBlur', [100, 100])!;
    ed.leaveBody();
    expect(ed.s.path).toEqual([]);
    const wf = ed.workflow();
    expect(Object.keys(wf.nodes[d].body!.nodes).sort()).toEqual(['in', inner, 'out'].sort());
    ed.doUndo(); // removes the inner node again, from the root view
    expect(Object.keys(ed.workflow().nodes[d].body!.nodes).sort()).toEqual(['in', 'out']);
  });
});

describe('ComfyUI files through the server', () => {
  const lg = {
    nodes: [
      { id: 1, type: 'LoadImage', pos: [0, 0], widgets_values: ['a.png', 'image'], outputs: [{ name: 'IMAGE', links: [1] }] },
      { id: 2, type: 'ImageBlur', pos: [200, 0], inputs: [{ name: 'image', link: 1 }], widgets_values: [3] },
    ],
    links: [[1, 1, 0, 2, 0, 'IMAGE']],
  };
  let sent: { url: string; body: unknown }[] = [];
  const answer = (status: number, body: unknown) => {
    sent = [];
    vi.stubGlobal('window', { location: { pathname: '/' } });
    vi.stubGlobal('fetch', async (url: string, init: RequestInit) => {
      sent.push({ url, body: JSON.parse(String(init.body)) });
      return new Response(JSON.stringify(body), { status });
    });
  };
  afterEach(() => vi.unstubAllGlobals());

  it('sends a LiteGraph workflow to the server and opens its translation with its warnings', async () => {
    const translated = { format: 'latentloom.workflow', version: 1, nodes: { '2': { type: 'ImageBlur', inputs: { radius: 3 }, ui: { pos: [200, 0] } } }, ui: { source: 'comfyui' } };
    answer(200, { workflow: translated, warnings: ['node 1 (LoadImage) is muted in ComfyUI: left out'] });
    const t = await ed.serverTranslation(importJson(lg, new NodeCatalog(catalog)));
    expect(sent).toEqual([{ url: '/api/v1/convert/comfy', body: { workflow: lg } }]);
    expect(t.workflow).toEqual(translated);
    expect(t.warnings).toEqual(['node 1 (LoadImage) is muted in ComfyUI: left out']);
  });

  it('keeps the class-name import when the server refuses, with its message', async () => {
    answer(400, { error: { type: 'invalid_prompt', message: "node 2: ComfyUI class_type 'ImageBlur' is not supported" } });
    const imp = importJson(lg, new NodeCatalog(catalog));
    const t = await ed.serverTranslation(imp);
    expect(t.workflow).toEqual(imp.workflow);
    expect(t.warnings.join(' ')).toMatch(/could not translate this ComfyUI workflow \(node 2: ComfyUI class_type 'ImageBlur' is not supported\)/);
  });
});
